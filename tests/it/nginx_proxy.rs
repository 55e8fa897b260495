//! The production NGINX configuration (deploy/nginx/templates/uag.conf.template), tested for
//! real: Debian's nginx started with it, TLS with a fresh self-signed certificate, in front of a
//! running uag; HTTP redirect, JSON, SSE without buffering, WebSocket upgrade and the body limit
//! all go through it. Needs `scripts/setup.sh --deploy` (nginx, openssl).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Gateway, MockUpstream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Nginx {
    child: std::process::Child,
    https: u16,
    http: u16,
    cert: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// `N` distinct ports nothing listens on right now. The listeners are held until all are
/// picked: two separate bind-and-release calls can return the same port, and then NGINX merges
/// the plain and the TLS server into one (`no "ssl_certificate" is defined`), a failure seen on
/// a fresh machine.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

fn render(template: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(template.to_owned(), |text, (k, v)| text.replace(&format!("${{{k}}}"), v))
}

fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is missing: run `scripts/setup.sh --deploy`");
}

async fn start_nginx(upstream: std::net::SocketAddr) -> Nginx {
    let nginx = require("nginx");
    let openssl = require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("uag.crt"), dir.path().join("uag.key"));
    let ok = std::process::Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA: rustls refuses a CA certificate as the end entity.
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let [http, https] = free_ports();
    let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/templates/uag.conf.template")).unwrap();
    let site = render(
        &template,
        &[
            ("UAG_UPSTREAM", upstream.to_string()),
            ("HTTP_PORT", http.to_string()),
            ("HTTPS_PORT", https.to_string()),
            ("TLS_CERT", cert.display().to_string()),
            ("TLS_KEY", key.display().to_string()),
            ("ACCESS_LOG", dir.path().join("site-access.log").display().to_string()),
        ],
    );
    assert!(!site.contains("${"), "every placeholder is filled");
    std::fs::write(dir.path().join("uag.conf"), site).unwrap();
    let d = dir.path().display();
    // The main context a distribution's nginx.conf provides, with paths in the temp dir.
    let main = format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/uag.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    let test = std::process::Command::new(&nginx).arg("-t").arg("-c").arg(dir.path().join("nginx.conf")).output().unwrap();
    assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
    let child = std::process::Command::new(&nginx)
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", https)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Nginx { child, https, http, cert, dir }
}

fn tls_client(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    uag_gateway::crypto::http_client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn prod_nginx_config_proxies_http_sse_and_websocket() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let nginx = start_nginx(gw.addr).await;
    let base = format!("https://localhost:{}", nginx.https);
    let client = tls_client(&nginx.cert);

    // Plain HTTP is redirected to TLS.
    let r = client.get(format!("http://127.0.0.1:{}/healthz", nginx.http)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("https://"));

    // JSON through TLS, with NGINX's request id reaching uag.
    let r = client.post(format!("{base}/v1/inference")).json(&json!({"model": "ollama/llama3.2", "input": "hi"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["output"], "The capital of France is Paris.");
    assert_eq!(body["id"], request_id, "uag kept NGINX's request id");

    // SSE is not buffered: events arrive while the upstream is still writing (150 ms apart).
    let r = client
        .post(format!("{base}/v1/inference"))
        .json(&json!({"model": "openai/slowstream", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = r.bytes_stream();
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("\"type\":\"delta\"") && arrivals.is_empty() {
            arrivals.push(started.elapsed());
        }
    }
    let total = started.elapsed();
    let events = common::sse_events(&text);
    assert_eq!(common::delta_text(&events), "The capital of France is Paris.");
    assert_eq!(events.last().unwrap()["type"], "done");
    assert!(arrivals[0] + Duration::from_millis(300) < total, "first delta at {:?}, stream done at {total:?}: buffered?", arrivals[0]);

    // WebSocket upgrade over TLS.
    let pem = std::fs::read(&nginx.cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = common::rustls_client().with_root_certificates(roots).with_no_client_auth();
    let tls = Arc::new(tls);
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://localhost:{}/v1/inference/stream", nginx.https),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(Arc::clone(&tls))),
    )
    .await
    .unwrap();
    ws.send(Message::Text(json!({"type": "request", "request": {"id": "w1", "model": "anthropic", "input": "hi"}}).to_string().into()))
        .await
        .unwrap();
    let mut answer = String::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(t) = msg else { continue };
        let event: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(event["id"], "w1");
        match event["type"].as_str().unwrap() {
            "delta" => answer.push_str(event["text"].as_str().unwrap()),
            "done" => break,
            "error" => panic!("{event}"),
            _ => {}
        }
    }
    assert_eq!(answer, "The capital of France is Paris.");

    // The voice WebSocket and the kiosk page go through too.
    let (mut voice, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://localhost:{}/v1/voice", nginx.https),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await
    .unwrap();
    let ready = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), voice.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = msg {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    voice.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
    let pong = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), voice.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = msg {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(pong["type"], "pong");
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<title>uag kiosk</title>"));

    // The body limit answers at NGINX, before uag buffers anything.
    let r = client
        .post(format!("{base}/v1/documents?name=big.md"))
        .header("content-type", "text/markdown")
        .body(vec![b'a'; 22 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // A document within the limit goes through to uag.
    let r = client
        .post(format!("{base}/v1/documents?name=notes.md"))
        .header("content-type", "text/markdown")
        .body("# Notes\n\nThe Vega Board boots from USB.")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // The kiosk key in a query string never reaches NGINX's access log; the path does.
    let secret = "uag_kiosk-key-in-a-url-0123456789";
    assert_eq!(client.get(format!("{base}/?access_token={secret}")).send().await.unwrap().status(), 200);
    let upgrade = client.get(format!("{base}/v1/voice?access_token={secret}")).send().await.unwrap();
    assert_eq!(upgrade.status().as_u16(), 426, "a plain GET is told to upgrade");
    let log_path = nginx.dir.path().join("site-access.log");
    let log = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("GET /v1/voice ") || Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(log.contains("GET /v1/voice "), "the request is logged: {log}");
    assert!(!log.contains(secret) && !log.contains("access_token"), "no query string in the log: {log}");
}
