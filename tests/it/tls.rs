//! HTTPS termination (`[server.tls]`): the gateway serves TLS from certificate and key files,
//! picks up a renewed certificate without a restart (and keeps the old one when the new files
//! are broken), and with `client_ca` authenticates LAN devices by client certificate: required
//! mode refuses handshakes without one, optional mode lets them in to authenticate otherwise,
//! and the certificate's common name becomes the caller's identity. Certificates come from the
//! `openssl` command (installed by `scripts/setup.sh --test`).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Gateway, MockUpstream};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): run `scripts/setup.sh --test`"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and, signed by it, a certificate `NAME.pem` + `NAME.key` for `cn`.
fn make_ca(dir: &Path) {
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=uag test CA", "-keyout", "ca.key", "-out", "ca.pem"],
        dir,
    );
}

fn issue(dir: &Path, name: &str, cn: &str, server: bool) {
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
        dir,
    );
    let ext = if server {
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
    } else {
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
        dir,
    );
}

fn tls_config(dir: &Path, client_ca: Option<&str>) -> String {
    let mut text = format!(
        "\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nreload_interval_ms = 200\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    if let Some(mode) = client_ca {
        text.push_str(&format!("client_ca = \"{}\"\nclient_auth = \"{mode}\"\n", dir.join("ca.pem").display()));
    }
    text
}

/// A rustls client trusting the test CA, with an optional client certificate.
fn client_config(dir: &Path, client: Option<&str>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap()).unwrap();
    let builder = common::rustls_client().with_root_certificates(roots);
    match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = vec![CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap()];
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    }
}

/// Connects over TLS; the server certificate's common name, or the handshake error.
async fn handshake(
    gw: &Gateway,
    config: rustls::ClientConfig,
) -> Result<(String, tokio_rustls::client::TlsStream<tokio::net::TcpStream>), String> {
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| e.to_string())?;
    // TLS 1.3 reports a refused client certificate after the handshake: make a round trip.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("closed".into());
    }
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().unwrap()[0].clone();
    let cn = uag_gateway::tls::common_name(leaf.as_ref()).unwrap();
    Ok((cn, tls))
}

fn https_client(dir: &Path, client: Option<&str>) -> reqwest::Client {
    let mut builder = uag_gateway::crypto::http_client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(name) = client {
        let mut pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{name}.key"))).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_with_certificate_reload() {
    let certs = tempfile::tempdir().unwrap();
    make_ca(certs.path());
    issue(certs.path(), "server", "uag-one", true);
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &tls_config(certs.path(), None)).await;

    let (cn, _) = handshake(&gw, client_config(certs.path(), None)).await.unwrap();
    assert_eq!(cn, "uag-one");
    let client = https_client(certs.path(), None);
    let base = format!("https://localhost:{}", gw.addr.port());
    let r = client.post(format!("{base}/v1/inference")).json(&json!({"model": "openai/gpt-4o-mini", "input": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["output"], "The capital of France is Paris.");
    // Plain HTTP on the TLS port gets no answer.
    assert!(common::client().get(gw.url("/healthz")).send().await.is_err());

    // A renewed certificate is picked up without a restart.
    issue(certs.path(), "server", "uag-two", true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (cn, _) = handshake(&gw, client_config(certs.path(), None)).await.unwrap();
        if cn == "uag-two" {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken key is refused and the working certificate stays.
    std::fs::write(certs.path().join("server.key"), "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (cn, _) = handshake(&gw, client_config(certs.path(), None)).await.unwrap();
    assert_eq!(cn, "uag-two");
}

#[tokio::test]
async fn client_certificates_authenticate_lan_devices() {
    let certs = tempfile::tempdir().unwrap();
    make_ca(certs.path());
    issue(certs.path(), "server", "uag", true);
    issue(certs.path(), "kiosk", "kiosk-lobby", false);
    let mock = MockUpstream::start().await;

    // Required: no certificate, no connection.
    let gw = Gateway::with_mock(&mock, &tls_config(certs.path(), Some("required"))).await;
    assert!(handshake(&gw, client_config(certs.path(), None)).await.is_err(), "a client without a certificate got in");
    assert!(handshake(&gw, client_config(certs.path(), Some("kiosk"))).await.is_ok());
    gw.stop().await.unwrap();

    // Optional, with authentication required: the certificate is the credential; without one
    // the caller needs a token.
    let auth =
        "\n[auth]\nrequired = true\n[[auth.api_keys]]\nname = \"ops\"\nsha256 = \"".to_owned() + &hex_sha256("ops-key-0123456789") + "\"\n";
    let gw = Gateway::with_mock(&mock, &(tls_config(certs.path(), Some("optional")) + &auth)).await;
    let base = format!("https://localhost:{}", gw.addr.port());
    let ask = json!({"model": "openai/gpt-4o-mini", "input": "hi"});
    let r = https_client(certs.path(), Some("kiosk")).post(format!("{base}/v1/inference")).json(&ask).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = https_client(certs.path(), None).post(format!("{base}/v1/inference")).json(&ask).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = https_client(certs.path(), None)
        .post(format!("{base}/v1/inference"))
        .bearer_auth("ops-key-0123456789")
        .json(&ask)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The certificate's common name is the subject forwarded upstream (OpenAI `user` field).
    let users: Vec<Value> = mock.requests().iter().map(|r| r.body["user"].clone()).collect();
    assert!(users.contains(&json!("kiosk-lobby")), "{users:?}");
}

fn hex_sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
