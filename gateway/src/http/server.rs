//! The connection loop under [`super::serve`]: hyper-util's HTTP/1.1 + HTTP/2 server, run
//! directly rather than through `axum::serve`, so slow clients can be cut off: a client must
//! send a request's headers within `server.header_read_timeout_ms` (slowloris clients that
//! trickle a header line every few seconds are dropped), and an idle keep-alive connection is
//! closed after the same time. A connection that has not sent a first request within that time
//! is closed whatever its protocol (HTTP/1's deadline starts only once bytes arrive, and HTTP/2
//! has none: a peer that opens sockets and sends nothing, or only the preface, held them open).
//! At most `server.max_connections` are open at once; one more is closed at accept, so a flood
//! of idle sockets cannot exhaust file descriptors or memory. Request heads are capped at
//! 128 KiB and 100 fields. WebSocket upgrades work as with `axum::serve`; on shutdown the
//! listener stops, open connections finish their current request, then close.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Extensions, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

/// Largest request head (request line and headers), in bytes.
const MAX_HEADER_BYTES: usize = 128 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 100;

/// The per-connection limits of [`run`] (`[server]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// A request's headers, and a connection's first request, must arrive within this.
    pub(crate) header_timeout: Duration,
    /// Connections open at once.
    pub(crate) max_connections: usize,
}

/// Serves `app` on every connection `listener` hands out until `stop` resolves, then waits for
/// the open connections to finish (the caller bounds that wait with the grace period).
/// `info` gives the request extensions of a connection (peer address, client certificate).
pub(crate) async fn run<L, F>(mut listener: L, app: Router, limits: ConnectionLimits, info: F, stop: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&L::Io, &L::Addr) -> Extensions,
{
    let ConnectionLimits { header_timeout, max_connections } = limits;
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header limits: 128 KiB of request head and 100 header fields (HTTP/1: over -> 431);
    // within them, oversized credentials still get the JSON 401 of authentication.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    // HTTP/2: pings find dead peers; the connect protocol carries WebSockets over HTTP/2.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .enable_connect_protocol();
    tokio::pin!(stop);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let Ok(slot) = Arc::clone(&open).try_acquire_owned() else {
            // Closing at once tells the client; leaving it in the backlog would not.
            tracing::warn!(max_connections, "connection limit reached; closing a new connection");
            drop(io);
            continue;
        };
        let extensions = info(&io, &addr);
        let app = app.clone();
        let asked = Arc::new(AtomicBool::new(false));
        let service = {
            let asked = Arc::clone(&asked);
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                asked.store(true, Ordering::Relaxed);
                request.extensions_mut().extend(extensions.clone());
                app.clone().oneshot(request.map(Body::new))
            })
        };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let first_request = tokio::time::sleep(header_timeout);
            tokio::pin!(first_request);
            loop {
                tokio::select! {
                    result = &mut connection => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = &mut first_request, if !asked.load(Ordering::Relaxed) => {
                        if !asked.load(Ordering::Relaxed) {
                            tracing::debug!("no request within the header deadline; closing the connection");
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
