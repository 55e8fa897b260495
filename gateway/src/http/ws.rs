//! `GET /v1/inference/stream`: the WebSocket API (protocol in docs/PROTOCOL.md).
//!
//! The client sends JSON text messages: `{"type":"request","request":{..InferenceRequest..}}`,
//! `{"type":"cancel","id":"..."}` and `{"type":"ping"}`. The server answers with the request's
//! [`Event`]s, each tagged with the request id (`{"id":"r1","type":"delta","text":"..."}`).
//! Several requests run concurrently on one connection. A bad message gets an `error` event
//! and the connection lives on. The server pings idle peers and drops silent ones; on
//! shutdown it lets in-flight requests finish, then closes with 1001.

use std::collections::HashMap;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::socket::{Flow, OnShutdown, Outgoing, SocketSession, accept_upgrade, drive};
use crate::error::{error_event, into_event};
use crate::pipeline::{CacheUse, Caller};
use crate::policy::Route;
use crate::provider::RequestContext;
use crate::types::{Event, InferenceRequest};

const ROUTE: Route = Route { path: "/v1/inference/stream", method: "GET" };

/// Messages a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Request { request: Box<InferenceRequest> },
    Cancel { id: String },
    Ping {},
}

/// Parses one client text message as a session does (and validates a `request`'s payload);
/// true when the session would accept it. For the fuzz targets in `fuzz/`, not an API.
#[doc(hidden)]
pub fn fuzz_parse_client_message(bytes: &[u8]) -> bool {
    match super::extract::parse_json::<ClientMessage>(bytes) {
        Ok(ClientMessage::Request { request }) => request.validate().is_ok(),
        Ok(ClientMessage::Cancel { .. } | ClientMessage::Ping {}) => true,
        Err(e) => {
            // The error event a session would send back must encode.
            let _ = error_message(None, "invalid_message", e.message);
            false
        }
    }
}

/// One server message: an event tagged with the request it belongs to.
#[derive(Serialize)]
struct Tagged<'a> {
    id: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event,
}

fn encode(id: Option<&str>, event: &Event) -> String {
    serde_json::to_string(&Tagged { id, event }).unwrap_or_default()
}

fn error_message(id: Option<&str>, code: &str, message: impl Into<String>) -> String {
    encode(id, &Event::Error { code: code.to_owned(), message: message.into() })
}

pub async fn upgrade(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match accept_upgrade(&state, ws) {
        Ok(ws) => ws,
        Err(refused) => return refused.into_response(),
    };
    let tasks = state.tasks.clone();
    let caller = super::caller(&extensions, ROUTE);
    ws.max_message_size(state.config.server.ws_max_message_bytes).on_upgrade(move |socket| {
        tasks.track_future(async move {
            state.metrics.websocket_connections.inc();
            let mut session = Session::new(state.clone(), caller);
            drive(socket, &state.config.server, state.shutdown.clone(), &mut session).await;
            state.metrics.websocket_connections.dec();
        })
    })
}

struct Session {
    state: AppState,
    /// The upgrade request's caller: the identity and limits every request on it runs with.
    caller: Caller,
    in_flight: HashMap<String, CancellationToken>,
    requests: JoinSet<String>,
    out_tx: mpsc::Sender<String>,
    out_rx: mpsc::Receiver<String>,
    /// Shutdown began: requests in flight finish, new ones are refused.
    draining: bool,
}

impl SocketSession for Session {
    async fn next_out(&mut self) -> Option<Outgoing> {
        tokio::select! {
            // The session holds a sender, so the queue never closes.
            Some(text) = self.out_rx.recv() => Some(Outgoing::Text(text)),
            Some(done) = self.requests.join_next(), if !self.requests.is_empty() => {
                if let Ok(id) = done {
                    self.in_flight.remove(&id);
                }
                None
            }
        }
    }

    fn try_next_out(&mut self) -> Option<Outgoing> {
        self.out_rx.try_recv().ok().map(Outgoing::Text)
    }

    fn on_text(&mut self, text: &str) -> Flow {
        let parsed: ClientMessage = match super::extract::parse_json(text.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                self.reply(error_message(None, "invalid_message", e.message));
                return Flow::Continue;
            }
        };
        match parsed {
            ClientMessage::Ping {} => self.reply(r#"{"id":null,"type":"pong"}"#.to_owned()),
            ClientMessage::Cancel { id } => match self.in_flight.get(&id) {
                Some(token) => token.cancel(),
                None => self.reply(error_message(Some(&id), "unknown_request", "no request with this id is in flight")),
            },
            ClientMessage::Request { request } => self.start(*request),
        }
        Flow::Continue
    }

    fn on_binary(&mut self, _bytes: &[u8]) -> Flow {
        self.reply(error_message(None, "unsupported_message", "binary frames are not accepted here; send JSON text messages"));
        Flow::Continue
    }

    fn on_shutdown(&mut self) -> OnShutdown {
        self.draining = true;
        OnShutdown::Drain
    }

    fn drained(&self) -> bool {
        self.in_flight.is_empty() && self.out_rx.is_empty()
    }

    fn stop(&mut self) {
        for token in self.in_flight.values() {
            token.cancel();
        }
        self.requests.abort_all();
    }
}

impl Session {
    fn new(state: AppState, caller: Caller) -> Self {
        let (out_tx, out_rx) = mpsc::channel(256);
        Self { state, caller, in_flight: HashMap::new(), requests: JoinSet::new(), out_tx, out_rx, draining: false }
    }

    fn reply(&self, text: String) {
        // A full queue means the client is not reading; dropping a reply to a bad message is
        // better than blocking the session.
        let _ = self.out_tx.try_send(text);
    }

    fn start(&mut self, mut request: InferenceRequest) {
        let id = request.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        request.id = Some(id.clone());
        let config = &self.state.config.server;
        if self.draining {
            return self.reply(error_message(Some(&id), "shutting_down", "the server is shutting down"));
        }
        if self.in_flight.contains_key(&id) {
            return self.reply(error_message(Some(&id), "duplicate_request_id", "a request with this id is already in flight"));
        }
        if self.in_flight.len() >= config.ws_max_in_flight {
            let msg = format!("at most {} requests may be in flight on one connection", config.ws_max_in_flight);
            return self.reply(error_message(Some(&id), "too_many_requests", msg));
        }
        if let Err(e) = request.validate() {
            return self.reply(error_message(Some(&id), "invalid_request", format!("{}: {}", e.field, e.message)));
        }
        // Events are what this socket speaks, whatever the request says.
        request.stream = true;
        let ctx = self.state.pipeline.context(id.clone(), &self.caller);
        self.in_flight.insert(id.clone(), ctx.cancel.clone());
        let state = self.state.clone();
        let caller = self.caller.clone();
        let tx = self.out_tx.clone();
        self.requests.spawn(async move {
            run_request(state, request, caller, ctx, tx).await;
            id
        });
    }
}

async fn run_request(state: AppState, request: InferenceRequest, caller: Caller, ctx: RequestContext, tx: mpsc::Sender<String>) {
    let id = ctx.request_id.clone();
    let send = |event: Event| {
        let tx = tx.clone();
        let text = encode(Some(&id), &event);
        async move { tx.send(text).await.is_ok() }
    };
    // Each request on the connection is one request for the caller's limits.
    if let Err(e) = state.pipeline.admit(&caller).await {
        send(error_event(e)).await;
        return;
    }
    if !send(Event::status("accepted", "request accepted")).await {
        return;
    }
    // Each request on the connection is planned, authorized and cached on its own.
    let mut events = match state.pipeline.answer(request, &caller, ctx, CacheUse::Allowed).await.answer {
        Ok(answer) => answer.into_events(),
        Err(e) => {
            send(error_event(e)).await;
            return;
        }
    };
    while let Some(item) = events.next().await {
        if !send(into_event(item)).await {
            return;
        }
    }
}
