//! uag-gateway: the HTTP and WebSocket front door of uag, and the only crate that knows wire
//! formats (HTTP, WebSocket, SSE, NDJSON, JSON shapes of the APIs it speaks and calls).
//!
//! A request flows: [`http`] (layers, extractors, handlers that translate the wire shape) ->
//! [`pipeline`] (the one inference path: validate, [`cache`], plan, [`policy`], route) ->
//! [`routing`] (target chain, retries, fallback, [`circuit`] breakers) -> a
//! [`provider::Provider`] from the [`registry`] -> an upstream, or the in-process engine. Every provider streams the same
//! [`types::Event`]s; only [`http`] frames them as SSE or WebSocket messages.
//!
//! - [`config`]: `uag.toml`, environment overrides, validation, typed credentials
//! - [`types`]: `InferenceRequest`, `InferenceResponse`, `Event`
//! - [`error`]: error categories and their single mapping to HTTP
//! - [`codec`]: incremental SSE and NDJSON decoders for upstream streams
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`
//! - [`memo`]: recent results by key with deadlines (policy decisions, verified JWTs)
//! - [`policy`]: authorization with Rego policies (regorus), reloaded on SIGHUP or file change
//! - [`pipeline`]: `Pipeline::answer`, the inference path every front door calls
//! - [`cache`]: the response cache (exact and semantic) of every inference front door
//! - [`telemetry`]: logging set-up (text or JSON)
//! - [`tls`]: HTTPS termination with certificate reload and client certificates
//! - [`voice`]: the voice pipeline (ASR -> answer -> sentence-by-sentence speech)

pub mod auth;
pub mod cache;
pub mod circuit;
pub mod codec;
pub mod config;
pub mod embedder;
pub mod error;
pub mod http;
pub mod memo;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod provider;
pub mod ratelimit;
pub mod registry;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod types;
pub mod voice;

pub use config::Config;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
pub use http::{AppState, app, serve};
