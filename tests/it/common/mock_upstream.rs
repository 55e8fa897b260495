//! A mock upstream that speaks the OpenAI, Anthropic and Ollama wire formats by replaying the
//! fixtures in `tests/data/fixtures/` byte for byte. Shared by the integration tests and the
//! gateway-overhead benchmark (`examples/mock_upstream.rs`).
//!
//! The requested model picks the behaviour:
//! - `error-400`, `error-401`, `error-404`, `error-429`, `error-500`: that status with the
//!   provider's error body (429 carries `Retry-After: 20`)
//! - `slow`: answers after 30 s (far longer than the tests' provider timeouts, so a call cut
//!   off by its timeout cannot pass for an answer that was just slow, however busy the machine)
//! - `cut`: a stream (or body) that stops half-way with a broken connection
//! - `split`: the body in 3-byte network chunks, so lines and UTF-8 span chunks
//! - `slowstream`: the stream paced at one event per 150 ms (cancellation tests)
//! - anything else: the normal answer, "The capital of France is Paris.", or, when the request
//!   offers `tools`, a call of `get_weather` with `{"city": "Paris", "unit": "celsius"}` (after
//!   the text "I'll check the weather in Paris." from Anthropic)
//!
//! Routes: `POST /v1/chat/completions`, `GET /v1/models` (OpenAI; Anthropic when the
//! `anthropic-version` header is present), `POST /v1/messages`, `POST /api/chat`, `GET /api/tags`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};

pub mod fixtures {
    pub const OPENAI_CHAT: &str = include_str!("../../data/fixtures/openai/chat.json");
    pub const OPENAI_STREAM: &str = include_str!("../../data/fixtures/openai/chat_stream.sse");
    pub const OPENAI_TOOLS: &str = include_str!("../../data/fixtures/openai/chat_tools.json");
    pub const OPENAI_TOOLS_STREAM: &str = include_str!("../../data/fixtures/openai/chat_tools_stream.sse");
    pub const OPENAI_MODELS: &str = include_str!("../../data/fixtures/openai/models.json");
    pub const OPENAI_ERRORS: [(u16, &str); 5] = [
        (400, include_str!("../../data/fixtures/openai/error_400.json")),
        (401, include_str!("../../data/fixtures/openai/error_401.json")),
        (404, include_str!("../../data/fixtures/openai/error_404.json")),
        (429, include_str!("../../data/fixtures/openai/error_429.json")),
        (500, include_str!("../../data/fixtures/openai/error_500.json")),
    ];
    pub const ANTHROPIC_MESSAGE: &str = include_str!("../../data/fixtures/anthropic/messages.json");
    pub const ANTHROPIC_STREAM: &str = include_str!("../../data/fixtures/anthropic/messages_stream.sse");
    pub const ANTHROPIC_TOOLS: &str = include_str!("../../data/fixtures/anthropic/messages_tools.json");
    pub const ANTHROPIC_TOOLS_STREAM: &str = include_str!("../../data/fixtures/anthropic/messages_tools_stream.sse");
    pub const ANTHROPIC_MODELS: &str = include_str!("../../data/fixtures/anthropic/models.json");
    pub const ANTHROPIC_ERRORS: [(u16, &str); 5] = [
        (400, include_str!("../../data/fixtures/anthropic/error_400.json")),
        (401, include_str!("../../data/fixtures/anthropic/error_401.json")),
        (404, include_str!("../../data/fixtures/anthropic/error_404.json")),
        (429, include_str!("../../data/fixtures/anthropic/error_429.json")),
        (500, include_str!("../../data/fixtures/anthropic/error_500.json")),
    ];
    pub const OLLAMA_CHAT: &str = include_str!("../../data/fixtures/ollama/chat.json");
    pub const OLLAMA_STREAM: &str = include_str!("../../data/fixtures/ollama/chat_stream.ndjson");
    pub const OLLAMA_TOOLS: &str = include_str!("../../data/fixtures/ollama/chat_tools.json");
    pub const OLLAMA_TOOLS_STREAM: &str = include_str!("../../data/fixtures/ollama/chat_tools_stream.ndjson");
    pub const OLLAMA_TAGS: &str = include_str!("../../data/fixtures/ollama/tags.json");
    pub const OLLAMA_ERRORS: [(u16, &str); 5] = [
        (400, include_str!("../../data/fixtures/ollama/error_400.json")),
        (401, include_str!("../../data/fixtures/ollama/error_401.json")),
        (404, include_str!("../../data/fixtures/ollama/error_404.json")),
        (429, include_str!("../../data/fixtures/ollama/error_429.json")),
        (500, include_str!("../../data/fixtures/ollama/error_500.json")),
    ];
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct MockState {
    /// Off for benchmarks, so memory stays flat.
    pub record: bool,
    pub requests: Mutex<Vec<Recorded>>,
    /// Calls per requested model.
    pub calls: Mutex<HashMap<String, usize>>,
    /// Streams whose body was dropped before its end: the client went away.
    pub abandoned_streams: AtomicUsize,
    pub finished_streams: AtomicUsize,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0", true).await
    }

    pub async fn start_on(addr: &str, record: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock address");
        let state = Arc::new(MockState { record, ..MockState::default() });
        let app = router(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self, model: &str) -> usize {
        self.state.calls.lock().unwrap().get(model).copied().unwrap_or(0)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn abandoned_streams(&self) -> usize {
        self.state.abandoned_streams.load(Ordering::SeqCst)
    }
}

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/models", get(models))
        .route("/v1/messages", post(anthropic_messages))
        .route("/api/chat", post(ollama_chat))
        .route("/api/tags", get(|| async { json_response(200, fixtures::OLLAMA_TAGS) }))
        .with_state(state)
}

#[derive(Clone, Copy)]
enum Wire {
    OpenAi,
    Anthropic,
    Ollama,
}

impl Wire {
    /// The answer; with `tools` in the request, a call of `get_weather` for Paris.
    fn whole(self, tools: bool) -> &'static str {
        match (self, tools) {
            (Wire::OpenAi, false) => fixtures::OPENAI_CHAT,
            (Wire::OpenAi, true) => fixtures::OPENAI_TOOLS,
            (Wire::Anthropic, false) => fixtures::ANTHROPIC_MESSAGE,
            (Wire::Anthropic, true) => fixtures::ANTHROPIC_TOOLS,
            (Wire::Ollama, false) => fixtures::OLLAMA_CHAT,
            (Wire::Ollama, true) => fixtures::OLLAMA_TOOLS,
        }
    }
    fn stream(self, tools: bool) -> &'static str {
        match (self, tools) {
            (Wire::OpenAi, false) => fixtures::OPENAI_STREAM,
            (Wire::OpenAi, true) => fixtures::OPENAI_TOOLS_STREAM,
            (Wire::Anthropic, false) => fixtures::ANTHROPIC_STREAM,
            (Wire::Anthropic, true) => fixtures::ANTHROPIC_TOOLS_STREAM,
            (Wire::Ollama, false) => fixtures::OLLAMA_STREAM,
            (Wire::Ollama, true) => fixtures::OLLAMA_TOOLS_STREAM,
        }
    }
    fn stream_type(self) -> &'static str {
        match self {
            Wire::Ollama => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }
    fn error(self, status: u16) -> Option<&'static str> {
        let table = match self {
            Wire::OpenAi => &fixtures::OPENAI_ERRORS,
            Wire::Anthropic => &fixtures::ANTHROPIC_ERRORS,
            Wire::Ollama => &fixtures::OLLAMA_ERRORS,
        };
        table.iter().find(|(s, _)| *s == status).map(|(_, body)| *body)
    }
    /// Where one streamed event ends, so `slowstream` can pace whole events.
    fn event_separator(self) -> &'static str {
        match self {
            Wire::Ollama => "\n",
            _ => "\n\n",
        }
    }
}

async fn openai_chat(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(Wire::OpenAi, &state, "/v1/chat/completions", headers, body).await
}

async fn anthropic_messages(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(Wire::Anthropic, &state, "/v1/messages", headers, body).await
}

async fn ollama_chat(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(Wire::Ollama, &state, "/api/chat", headers, body).await
}

async fn models(headers: HeaderMap) -> Response {
    if headers.contains_key("anthropic-version") {
        json_response(200, fixtures::ANTHROPIC_MODELS)
    } else {
        json_response(200, fixtures::OPENAI_MODELS)
    }
}

fn json_response(status: u16, body: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn answer(wire: Wire, state: &Arc<MockState>, path: &str, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = parsed.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
    let stream = parsed.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    let tools = parsed.get("tools").and_then(|t| t.as_array()).is_some_and(|t| !t.is_empty());
    if state.record {
        *state.calls.lock().unwrap().entry(model.clone()).or_default() += 1;
        state.requests.lock().unwrap().push(Recorded { path: path.to_owned(), headers, body: parsed });
    }
    if let Some(status) = model.strip_prefix("error-").and_then(|s| s.parse::<u16>().ok()) {
        let body = wire.error(status).unwrap_or(r#"{"error":"unexpected"}"#);
        let mut response = json_response(status, body);
        if status == 429 {
            response.headers_mut().insert(header::RETRY_AFTER, "20".parse().unwrap());
        }
        return response;
    }
    if model == "slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let (content_type, text) = if stream { (wire.stream_type(), wire.stream(tools)) } else { ("application/json", wire.whole(tools)) };
    let chunks: Vec<Result<Bytes, std::io::Error>> = match model.as_str() {
        "cut" => vec![
            Ok(Bytes::from_static(&text.as_bytes()[..text.len() / 2])),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock cut the connection")),
        ],
        "split" => text.as_bytes().chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect(),
        "slowstream" if stream => text.split_inclusive(wire.event_separator()).map(|e| Ok(Bytes::copy_from_slice(e.as_bytes()))).collect(),
        _ => vec![Ok(Bytes::from_static(text.as_bytes()))],
    };
    let pace = match model.as_str() {
        "split" => Some(Duration::from_millis(1)),
        // Let the head and the first half reach the client before the connection breaks.
        "cut" => Some(Duration::from_millis(50)),
        "slowstream" => Some(Duration::from_millis(150)),
        _ => None,
    };
    let guard = StreamGuard { state: Arc::clone(state), finished: false, counted: stream };
    // `split` pauses every few chunks: enough to put them in separate reads, while a
    // whole body stays far inside the tests' 600 ms provider timeout even on a loaded machine.
    let pause_every = if model == "split" { 8 } else { 1 };
    let body = async_stream::stream! {
        let mut guard = guard;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let failed = chunk.is_err();
            yield chunk;
            if failed {
                guard.finished = true;
                return;
            }
            if let Some(p) = pace {
                if i % pause_every == 0 {
                    tokio::time::sleep(p).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
        guard.finished = true;
    };
    Response::builder().status(200).header(header::CONTENT_TYPE, content_type).body(Body::from_stream(body)).unwrap()
}

/// Counts bodies dropped before their end: the gateway hung up on the mock.
struct StreamGuard {
    state: Arc<MockState>,
    finished: bool,
    counted: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let counter = if self.finished { &self.state.finished_streams } else { &self.state.abandoned_streams };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}
