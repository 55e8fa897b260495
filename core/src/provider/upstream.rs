//! HTTP plumbing shared by the remote providers: sending with cancellation and timeouts,
//! mapping upstream statuses to [`ProviderError`], and streaming SSE/NDJSON bodies.

use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::codec::{NdjsonDecoder, SseDecoder, SseEvent};
use crate::error::ProviderError;

/// Largest non-streaming upstream body the gateway reads.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most of an upstream error body kept for the log.
const MAX_DETAIL_CHARS: usize = 500;

/// The HTTP client every remote provider shares: one connection pool, rustls, no proxy lookups.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::crypto::http_client_builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("uag/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends `request`, waiting at most `timeout` for the response head, and stops when `cancel`
/// fires. A non-2xx answer becomes the matching [`ProviderError`].
pub async fn send(request: RequestBuilder, timeout: Duration, cancel: &CancellationToken, model: &str) -> Result<Response, ProviderError> {
    let response = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(ProviderError::Cancelled),
        sent = tokio::time::timeout(timeout, request.send()) => match sent {
            Err(_elapsed) => return Err(ProviderError::Timeout),
            Ok(Err(e)) => return Err(map_transport_error(&e)),
            Ok(Ok(response)) => response,
        },
    };
    if response.status().is_success() { Ok(response) } else { Err(error_from_response(response, model).await) }
}

pub fn map_transport_error(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else if e.is_body() || e.is_decode() {
        ProviderError::StreamInterrupted(error_chain(e))
    } else {
        ProviderError::Connect(error_chain(e))
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Turns a non-2xx upstream answer into an error, keeping a bounded detail for the log.
pub async fn error_from_response(response: Response, model: &str) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes()).await.ok().and_then(Result::ok).unwrap_or_default();
    let message = upstream_message(&body);
    match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited { retry_after },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Unauthorized { status: status.as_u16(), detail: message },
        StatusCode::REQUEST_TIMEOUT => ProviderError::Timeout,
        StatusCode::NOT_FOUND if message.to_ascii_lowercase().contains("model") => ProviderError::ModelNotFound { model: model.to_owned() },
        s if s.is_server_error() => ProviderError::Upstream { status: s.as_u16(), detail: message },
        s => ProviderError::Rejected { status: s.as_u16(), message },
    }
}

/// The human-readable message of an upstream error body: `error.message` (OpenAI,
/// Anthropic), `error` (Ollama), `message`, else the raw text, truncated.
fn upstream_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v
            .pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str().map(str::to_owned))
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.chars().count() > MAX_DETAIL_CHARS { text.chars().take(MAX_DETAIL_CHARS).collect::<String>() + "..." } else { text.to_owned() }
}

/// Reads a whole JSON body, bounded in size and stopped by `cancel`.
pub async fn read_json<T: DeserializeOwned>(mut response: Response, cancel: &CancellationToken) -> Result<T, ProviderError> {
    let mut body = Vec::new();
    loop {
        let chunk = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(ProviderError::Cancelled),
            chunk = response.chunk() => chunk.map_err(|e| map_transport_error(&e))?,
        };
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ProviderError::InvalidResponse(format!("body larger than {MAX_BODY_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| ProviderError::InvalidResponse(format!("JSON: {e}")))
}

/// The body as Server-Sent Events. A transport error mid-way is `StreamInterrupted`.
pub fn sse_events(response: Response) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send {
    async_stream::stream! {
        let mut decoder = SseDecoder::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => match decoder.push(&bytes) {
                    Ok(events) => for e in events { yield Ok(e) },
                    Err(e) => { yield Err(ProviderError::InvalidResponse(e.to_string())); return; }
                },
                Err(e) => { yield Err(ProviderError::StreamInterrupted(error_chain(&e))); return; }
            }
        }
        for e in decoder.finish() { yield Ok(e) }
    }
}

/// The body as NDJSON lines. A transport error mid-way is `StreamInterrupted`.
pub fn ndjson_lines(response: Response) -> impl Stream<Item = Result<String, ProviderError>> + Send {
    async_stream::stream! {
        let mut decoder = NdjsonDecoder::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => match decoder.push(&bytes) {
                    Ok(lines) => for l in lines { yield Ok(l) },
                    Err(e) => { yield Err(ProviderError::InvalidResponse(e.to_string())); return; }
                },
                Err(e) => { yield Err(ProviderError::StreamInterrupted(error_chain(&e))); return; }
            }
        }
        if let Some(l) = decoder.finish() { yield Ok(l) }
    }
}

/// Parses one streamed JSON payload.
pub fn parse_chunk<T: DeserializeOwned>(data: &str) -> Result<T, ProviderError> {
    serde_json::from_str(data).map_err(|e| ProviderError::InvalidResponse(format!("stream chunk: {e}")))
}

/// How long a discovered model list or a health probe stays fresh.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
const HEALTH_TTL: Duration = Duration::from_secs(15);

/// A remote provider's model list and health: the configured models, else the upstream's own
/// list; health from the same cheap listing call. Both cached.
#[derive(Debug)]
pub struct Discovery {
    configured: Vec<String>,
    discovered: Cached<Result<Vec<String>, ProviderError>>,
    health: Cached<super::Health>,
}

impl Discovery {
    pub fn new(configured: Vec<String>) -> Self {
        Self { configured, discovered: Cached::new(), health: Cached::new() }
    }

    pub fn configured(&self) -> &[String] {
        &self.configured
    }

    pub async fn models<F, Fut>(&self, fetch: F) -> Result<Vec<String>, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, ProviderError>>,
    {
        if !self.configured.is_empty() {
            return Ok(self.configured.clone());
        }
        self.discovered.get_or_fetch(DISCOVERY_TTL, Result::is_ok, fetch).await
    }

    pub async fn health<F, Fut>(&self, probe: F) -> super::Health
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, ProviderError>>,
    {
        self.health
            .get_or_fetch(
                HEALTH_TTL,
                |_| true,
                || async {
                    match probe().await {
                        Ok(_) => super::Health::ok(),
                        Err(e) => super::Health::down(e.code()),
                    }
                },
            )
            .await
    }
}

/// Cached result of a model-list or health probe, so `/v1/models` and `/v1/providers` do not
/// hit the upstream on every call.
#[derive(Debug, Default)]
pub struct Cached<T> {
    slot: tokio::sync::Mutex<Option<(std::time::Instant, T)>>,
}

impl<T: Clone> Cached<T> {
    pub fn new() -> Self {
        Self { slot: tokio::sync::Mutex::new(None) }
    }

    /// The cached value when younger than `ttl`, else `fetch()`'s (cached only when `keep` says so).
    pub async fn get_or_fetch<F, Fut>(&self, ttl: Duration, keep: impl Fn(&T) -> bool, fetch: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, value)) = slot.as_ref()
            && at.elapsed() < ttl
        {
            return value.clone();
        }
        let value = fetch().await;
        if keep(&value) {
            *slot = Some((std::time::Instant::now(), value.clone()));
        }
        value
    }

    /// The cached value, if any, without fetching.
    pub fn peek(&self) -> Option<T> {
        self.slot.try_lock().ok().and_then(|s| s.as_ref().map(|(_, v)| v.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_messages_from_each_wire_shape() {
        assert_eq!(upstream_message(br#"{"error":{"message":"bad key","type":"x"}}"#), "bad key");
        assert_eq!(upstream_message(br#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(upstream_message(b"plain text"), "plain text");
        assert!(upstream_message(&vec![b'a'; 2000]).ends_with("..."));
    }
}
