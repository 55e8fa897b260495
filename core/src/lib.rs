//! uag-core: the inference path of uag, without HTTP.
//!
//! Every front door (the HTTP routes, the WebSocket API, the voice assistant, and what comes
//! next) lives in `uag-gateway`, translates its wire shape into an [`types::InferenceRequest`]
//! and a [`pipeline::Caller`], and calls [`pipeline::Pipeline::answer`]. That one function
//! validates, asks the [`cache`], plans the target chain ([`routing`]), lets the [`policy`]
//! decide per target, routes (retries, fallback, [`circuit`] breakers, provider limits from
//! [`ratelimit`]) to a [`provider::Provider`] from the [`registry`], and stores the answer.
//!
//! This crate depends on `uag-models` and `uag-graphrag` and on no web framework: Cargo keeps
//! axum, tower-http and the server half of hyper out (`scripts/check-layers.sh`), so the
//! direction `models, graphrag <- core <- gateway` cannot be broken by an import.
//!
//! - [`config`]: the provider, route, model and knowledge-base sections of `uag.toml`
//! - [`types`]: `InferenceRequest`, `InferenceResponse`, `Event`, typed request options
//! - [`error`]: `ProviderError`, the categories that drive fallback
//! - [`provider`]: the provider trait, `Identity`, `RequestContext`, and the providers
//!   (local GraphRAG + LLM, OpenAI, Anthropic, Ollama, OpenAI-compatible)
//! - [`codec`]: incremental SSE and NDJSON decoders for upstream streams
//! - [`registry`], [`routing`], [`circuit`]: providers built once, chains, breakers
//! - [`policy`]: authorization with Rego policies (regorus), reloaded on SIGHUP or file change
//! - [`ratelimit`]: per-caller, per-route and per-provider limits, token budgets (memory or Redis)
//! - [`cache`]: the response cache (exact and semantic), on typed requests
//! - [`pipeline`]: the one inference path, `Pipeline::answer`
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`
//! - [`memo`]: recent results by key with deadlines (policy decisions, verified JWTs)
//! - [`crypto`]: the process's one TLS crypto provider (ring) and the HTTP client builder

pub mod cache;
pub mod circuit;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod error;
pub mod memo;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod provider;
pub mod ratelimit;
pub mod registry;
pub mod routing;
pub mod types;
