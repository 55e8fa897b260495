//! TLS termination (`[server.tls]`): rustls from certificate and key files, reloaded without a
//! restart, with optional client-certificate authentication for LAN devices.
//!
//! [`TlsListener`] is an `axum::serve::Listener`: a background task accepts TCP connections and
//! runs each handshake on its own task with a deadline, so a slow or silent client never holds
//! up the others; finished handshakes queue up for `accept`. Each handshake uses the server
//! config current at that moment: [`TlsReloader`] rebuilds it when the files change (polled)
//! or on SIGHUP, and a certificate, key or CA that fails to load keeps the old config and logs
//! why. A verified client certificate becomes the caller's identity (subject = its common
//! name, method `client_certificate`) when the request carries no other credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// `[server.tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates; set: client certificates are checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` refuses handshakes without a valid client certificate;
    /// `optional` lets them in (they then authenticate as usual).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes; 0: reload on SIGHUP only.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// A client that has not finished its handshake by then is dropped.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    5_000
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the certificate and key do not form a usable TLS config: {0}")]
    Config(String),
}

impl TlsConfig {
    /// Loads everything once, as start-up does; the error names the file.
    pub fn validate(&self) -> Result<(), (String, String)> {
        build_server_config(self).map(|_| ()).map_err(|e| ("server.tls".to_owned(), e.to_string()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid { path: path.to_owned(), message: format!("not PEM certificates ({e})") })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

/// The server config from the files as they are now.
pub fn build_server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&config.cert)?;
    let key_pem = read(&config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Invalid { path: config.key.clone(), message: format!("no usable private key ({e})") })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Invalid { path: ca.clone(), message: format!("not a usable CA certificate ({e})") })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match config.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The current server config, swapped by reloads.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    config: TlsConfig,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsReloader {
    pub fn new(config: TlsConfig) -> Result<Self, TlsError> {
        let current = build_server_config(&config)?;
        Ok(Self { config, current: Arc::new(RwLock::new(current)) })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Rebuilds from the files; on failure the old config stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = build_server_config(&self.config)?;
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.config.cert.clone(), self.config.key.clone()];
        files.extend(self.config.client_ca.clone());
        files
    }

    /// Reloads on SIGHUP and whenever a file's modification time changes, until `stop`.
    pub fn watch(self, stop: CancellationToken) {
        tokio::spawn(async move {
            let interval = Duration::from_millis(self.config.reload_interval_ms);
            let mut seen = modified(&self.files());
            #[cfg(unix)]
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let poll = async {
                    if interval.is_zero() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(interval).await;
                };
                #[cfg(unix)]
                let signal = async {
                    match hangup.as_mut() {
                        Some(h) => {
                            if h.recv().await.is_none() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<()>();
                let forced = tokio::select! {
                    () = stop.cancelled() => return,
                    () = poll => false,
                    () = signal => true,
                };
                let now = modified(&self.files());
                if !forced && now == seen {
                    continue;
                }
                seen = now;
                match self.reload() {
                    Ok(()) => tracing::info!(cert = %self.config.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the current certificate"),
                }
            }
        });
    }
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

/// A TCP listener that hands out finished TLS connections.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run until `stop`.
    pub fn new(tcp: TcpListener, reloader: TlsReloader, handshake_timeout: Duration, stop: CancellationToken) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Some((stream, peer)) = crate::listener::accept_until_stopped(&tcp, &stop, "TLS").await else { return };
                let acceptor = TlsAcceptor::from(reloader.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The acceptor stopped (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What a TLS connection tells a request: the peer address and its verified client
/// certificate's common name.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub peer: SocketAddr,
    pub client_common_name: Option<String>,
}

/// The request extensions of a TLS connection (see [`expose_connect_info`]).
pub fn connection_extensions(stream: &TlsStream<TcpStream>, peer: &SocketAddr) -> axum::http::Extensions {
    let (_, session) = stream.get_ref();
    let client_common_name = session.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| common_name(leaf.as_ref()));
    let mut extensions = axum::http::Extensions::new();
    extensions.insert(axum::extract::ConnectInfo(TlsConnectInfo { peer: *peer, client_common_name }));
    extensions
}

/// Middleware: on HTTPS connections, puts `ConnectInfo<SocketAddr>` (what rate limits and the
/// cache scope read) and the [`ClientCertificate`] (what authentication reads) into the request.
pub async fn expose_connect_info(mut request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if let Some(axum::extract::ConnectInfo(info)) = request.extensions().get::<axum::extract::ConnectInfo<TlsConnectInfo>>().cloned() {
        request.extensions_mut().insert(axum::extract::ConnectInfo(info.peer));
        if let Some(common_name) = info.client_common_name {
            request.extensions_mut().insert(ClientCertificate { common_name });
        }
    }
    next.run(request).await
}

/// A verified client certificate's subject, for authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub common_name: String,
}

/// The subject common name (OID 2.5.4.3) of a DER certificate. rustls has verified the chain,
/// so the DER is well formed; this still never indexes out of bounds.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = tlv(der, 0x30)?;
    let (_, tbs) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    // [0] version, optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest, 0xa0)?.0;
    }
    rest = tlv(rest, 0x02)?.0; // serial number
    rest = tlv(rest, 0x30)?.0; // signature algorithm
    rest = tlv(rest, 0x30)?.0; // issuer
    rest = tlv(rest, 0x30)?.0; // validity
    let (_, mut subject) = tlv(rest, 0x30)?;
    while !subject.is_empty() {
        let (after, set) = tlv(subject, 0x31)?;
        subject = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (after, attribute) = tlv(attributes, 0x30)?;
            attributes = after;
            let (value, oid) = tlv(attribute, 0x06)?;
            if oid == [0x55, 0x04, 0x03] {
                let (_, text) = tlv_any(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// Splits a DER TLV with the expected tag: (what follows, contents).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    tlv_any(input)
}

/// Splits any DER TLV: (what follows, contents).
fn tlv_any(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let first_len = *input.get(1)?;
    let (len, header) = if first_len < 0x80 {
        (usize::from(first_len), 2)
    } else {
        let bytes = usize::from(first_len & 0x7f);
        if bytes == 0 || bytes > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..bytes {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + bytes)
    };
    let body = input.get(header..header.checked_add(len)?)?;
    Some((&input[header + len..], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walker_never_panics_on_garbage() {
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        for n in 0..2000u32 {
            let bytes: Vec<u8> = (0..(n % 97)).map(|i| (i.wrapping_mul(n).wrapping_add(0x30)) as u8).collect();
            let _ = common_name(&bytes);
        }
    }

    #[test]
    fn der_walker_reads_a_minimal_subject() {
        // tbs: serial, sigalg, issuer, validity, subject { SET { SEQ { OID cn, UTF8 "kiosk-7" } } }
        let cn = [&[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x07][..], b"kiosk-7"].concat();
        let attribute = [&[0x30, cn.len() as u8][..], &cn].concat();
        let set = [&[0x31, attribute.len() as u8][..], &attribute].concat();
        let subject = [&[0x30, set.len() as u8][..], &set].concat();
        let tbs_body = [&[0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00][..], &subject].concat();
        let tbs = [&[0x30, tbs_body.len() as u8][..], &tbs_body].concat();
        let cert = [&[0x30, tbs.len() as u8][..], &tbs].concat();
        assert_eq!(common_name(&cert).as_deref(), Some("kiosk-7"));
    }
}
