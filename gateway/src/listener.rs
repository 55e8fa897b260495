//! The accept loop step both raw-TCP front doors share (the TLS listener and the Wyoming
//! server): the next connection, or `None` once `stop` is cancelled.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Waits for the next connection on `listener`. An accept error (out of file descriptors and
/// the like) is logged and retried after a short pause instead of spinning.
pub(crate) async fn accept_until_stopped(listener: &TcpListener, stop: &CancellationToken, what: &str) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
