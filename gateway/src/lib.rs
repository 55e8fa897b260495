//! uag-gateway: the HTTP and WebSocket edge of uag, and the only crate that knows wire formats
//! (HTTP, WebSocket, SSE, JSON shapes of the APIs it speaks).
//!
//! A request flows: [`http`] (the numbered layer stack, extractors, handlers that translate the
//! wire shape) -> `uag_core::pipeline::Pipeline::answer` (validate, cache, plan, policy, route)
//! -> a provider -> an upstream, or the in-process engine. Every provider streams the same
//! `uag_core::types::Event`s; only [`http`] frames them as SSE or WebSocket messages, and only
//! [`error`] turns failures into HTTP statuses.
//!
//! - [`config`]: `uag.toml` composed from uag-core's sections and the server's own, environment
//!   overrides, validation
//! - [`error`]: the one table from error categories to HTTP statuses and OpenAI-shaped bodies
//! - [`auth`]: API keys, JWTs (HS256/RS256/ES256, JWKS) and client certificates; [`jwt_ring`]:
//!   the JWT signatures on ring, the one crypto library of the binary
//! - [`http`]: the state built once, the layer stack, the routes
//! - [`telemetry`]: logging set-up (text or JSON)
//! - [`tls`]: HTTPS termination with certificate reload and client certificates
//! - [`wyoming`]: the Wyoming protocol server (Home Assistant's speech and conversation services)
//! - [`embedder`]: the knowledge base's embedding model, attached at start-up
//!
//! The inference path itself (types, providers, routing, policy, rate limits, cache, the
//! pipeline) is uag-core's; its modules are re-exported here under their own names, so
//! `uag_gateway::types` is `uag_core::types`. The voice pipeline is uag-voice's, re-exported
//! as [`voice`]; [`http::voice`] is its WebSocket.

pub mod auth;
pub mod config;
pub mod device;
pub mod embedder;
pub mod error;
pub mod http;
pub mod jwt_ring;
mod listener;
pub mod telemetry;
pub mod tls;
pub mod wyoming;

pub use uag_core::{cache, circuit, codec, crypto, memo, metrics, pipeline, policy, provider, ratelimit, registry, routing, types};

pub use uag_voice as voice;

pub use config::Config;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
pub use http::{AppState, app, serve};
