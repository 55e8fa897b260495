//! The one WebSocket session driver, for both sockets (`/v1/inference/stream`, `/v1/voice`).
//!
//! [`drive`] owns the socket: it sends what the session has queued, hands text and binary
//! messages to it, pings idle peers and drops silent ones (three ping intervals), closes with
//! 1008 when a peer floods it and with 1009 when a message is over the size limit, and on
//! shutdown either drains (the inference API lets requests in flight finish) or closes at once
//! (a voice answer is not worth holding shutdown for), then closes with 1001 after flushing
//! what is queued. A session only says what its messages mean.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::error::ApiError;

/// One message for the peer.
pub(crate) enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

/// What the driver does after a message.
pub(crate) enum Flow {
    Continue,
    /// Close the connection, with this frame (or none when the peer already closed).
    Close(Option<CloseFrame>),
}

/// What a session wants when the server starts shutting down.
pub(crate) enum OnShutdown {
    /// Keep the connection until [`SocketSession::drained`], then close with 1001.
    Drain,
    /// Close with 1001 now.
    CloseNow,
}

/// What a WebSocket route puts behind [`drive`].
pub(crate) trait SocketSession: Send {
    /// Sent before anything else.
    fn greeting(&self) -> Option<Outgoing> {
        None
    }
    /// The next message for the peer; `None` when the session only changed its own state (a
    /// request finished). Must be cancel-safe: the driver polls it in `select!`.
    fn next_out(&mut self) -> impl Future<Output = Option<Outgoing>> + Send;
    /// A queued message, without waiting (flushed before the close frame).
    fn try_next_out(&mut self) -> Option<Outgoing>;
    fn on_text(&mut self, text: &str) -> Flow;
    fn on_binary(&mut self, bytes: &[u8]) -> Flow;
    fn on_shutdown(&mut self) -> OnShutdown;
    /// Whether a draining session has nothing left to send.
    fn drained(&self) -> bool {
        true
    }
    /// The connection is ending: stop the work in flight (the session is awaited or dropped
    /// after this).
    fn stop(&mut self);
}

/// Runs `session` on `socket` until the peer leaves, the session closes, or shutdown.
pub(crate) async fn drive<S: SocketSession>(socket: WebSocket, server: &ServerConfig, shutdown: CancellationToken, session: &mut S) {
    let (mut sink, mut incoming) = socket.split();
    let ping_every = Duration::from_millis(server.ws_ping_interval_ms.max(100));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let mut rate = MessageRate::new(server.ws_max_messages_per_second);
    let away = || Some(CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() });
    if let Some(greeting) = session.greeting()
        && send(&mut sink, greeting).await.is_err()
    {
        session.stop();
        return;
    }
    let mut draining = false;
    let close = loop {
        if draining && session.drained() {
            break away();
        }
        tokio::select! {
            () = shutdown.cancelled(), if !draining => match session.on_shutdown() {
                OnShutdown::Drain => draining = true,
                OnShutdown::CloseNow => break away(),
            },
            out = session.next_out() => {
                if let Some(out) = out
                    && send(&mut sink, out).await.is_err()
                {
                    break None;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 3 {
                    tracing::info!("websocket peer silent for three ping intervals; dropping it");
                    break None;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            message = incoming.next() => {
                last_heard = Instant::now();
                let flow = match message {
                    None => break None,
                    Some(Err(e)) => break read_error_close(&e),
                    Some(Ok(message)) if !rate.allow() => {
                        drop(message);
                        tracing::info!("websocket peer over its message rate; closing");
                        break Some(CloseFrame { code: close_code::POLICY, reason: "message rate exceeded".into() });
                    }
                    Some(Ok(Message::Text(text))) => session.on_text(text.as_str()),
                    Some(Ok(Message::Binary(bytes))) => session.on_binary(&bytes),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
                    Some(Ok(Message::Close(_))) => Flow::Close(None),
                };
                if let Flow::Close(frame) = flow {
                    break frame;
                }
            }
        }
    };
    session.stop();
    if let Some(frame) = close {
        // Flush what is already queued (finished requests' last events) before saying goodbye.
        while let Some(out) = session.try_next_out() {
            if send(&mut sink, out).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

async fn send(sink: &mut SplitSink<WebSocket, Message>, out: Outgoing) -> Result<(), axum::Error> {
    match out {
        Outgoing::Text(text) => sink.send(Message::Text(text.into())).await,
        Outgoing::Binary(bytes) => sink.send(Message::Binary(bytes.into())).await,
    }
}

/// The checks both WebSocket routes make before upgrading: a real upgrade request (else 426)
/// and a server that is not shutting down (else 503).
pub(crate) fn accept_upgrade(
    state: &super::AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, Box<ApiError>> {
    let Ok(ws) = ws else {
        return Err(Box::new(ApiError::upgrade_required("this endpoint needs a WebSocket upgrade (GET with `Upgrade: websocket`)")));
    };
    if state.shutdown.is_cancelled() {
        return Err(Box::new(ApiError::unavailable("shutting_down", "the server is shutting down")));
    }
    Ok(ws)
}

/// How a WebSocket session ends after a read error: 1009 when the peer's message was over the
/// size limit (tungstenite reports it as an error), else without a close frame (the peer left).
fn read_error_close(e: &axum::Error) -> Option<CloseFrame> {
    tracing::debug!(error = %e, "websocket read failed");
    let text = e.to_string().to_ascii_lowercase();
    (text.contains("too long") || text.contains("size")).then(|| CloseFrame { code: close_code::SIZE, reason: "message too big".into() })
}

/// A per-connection budget of WebSocket messages per second (a token bucket of one second's
/// worth), against clients that flood a socket.
#[derive(Debug)]
struct MessageRate {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl MessageRate {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self { per_second, tokens: per_second, last: Instant::now() }
    }

    /// Takes one message; false when the client is over its rate.
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
