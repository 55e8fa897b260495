//! The provider interface and its implementations.
//!
//! A provider answers an [`InferenceRequest`] for one model, either whole ([`Provider::infer`])
//! or as an [`EventStream`] ([`Provider::stream_infer`]). Every provider returns the same event
//! type; SSE/WebSocket framing happens only in `uag-gateway`'s `http`.
//!
//! - [`openai`]: OpenAI Chat Completions, also used by `openai_compatible` (vLLM, llama.cpp, LocalAI)
//! - [`anthropic`]: Anthropic Messages API
//! - [`ollama`]: Ollama `/api/chat` (NDJSON)
//! - [`local`]: the in-process GraphRAG engine
//! - [`upstream`]: the HTTP plumbing the remote providers share (status mapping, SSE/NDJSON bodies)

pub mod anthropic;
pub mod local;
pub mod ollama;
pub mod openai;
pub mod upstream;

use std::pin::Pin;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::Stream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::ProviderKind;
use crate::error::ProviderError;
use crate::types::{Event, InferenceRequest, InferenceResponse};

/// The one stream type every provider returns.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ProviderError>> + Send>>;

/// The verified caller, filled in by the authentication layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub subject: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub method: AuthMethod,
}

/// The caller as rate limits and cache scopes count it: an identity by its subject within its
/// method, so an API key named `alice`, a JWT whose `sub` is `alice` and a certificate for CN
/// `alice` are three callers (an operator naming a key cannot borrow an IdP user's budget or
/// answers); an anonymous caller by its address (`ip:unknown` when there is none).
pub fn caller_key(identity: Option<&Identity>, peer: Option<std::net::IpAddr>) -> String {
    match (identity, peer) {
        (Some(i), _) => {
            let method = match i.method {
                AuthMethod::Jwt => "jwt",
                AuthMethod::ApiKey => "key",
                AuthMethod::ClientCertificate => "cert",
            };
            format!("{method}:{}", i.subject)
        }
        (None, Some(ip)) => format!("ip:{ip}"),
        (None, None) => "ip:unknown".to_owned(),
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    Jwt,
    ApiKey,
    /// A client certificate verified by TLS (`[server.tls] client_ca`); subject = its common name.
    ClientCertificate,
}

/// What travels with every request through routing and into providers.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub identity: Option<Identity>,
    /// Provider limits and the caller's token budget, when `[rate_limits]` is configured.
    pub limits: Option<crate::ratelimit::RequestLimits>,
    /// Knowledge-base collections this request may retrieve from (the requested ones within what
    /// `[policy]` allows); `None`: all.
    pub allowed_collections: Option<Vec<String>>,
    /// No work for this request is useful after this instant.
    pub deadline: Instant,
    /// Cancelled when the client disconnects or cancels; providers stop upstream work.
    pub cancel: CancellationToken,
}

impl RequestContext {
    pub fn new(request_id: impl Into<String>, timeout: Duration) -> Self {
        Self {
            request_id: request_id.into(),
            identity: None,
            limits: None,
            allowed_collections: None,
            deadline: Instant::now() + timeout,
            cancel: CancellationToken::new(),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// One call of a provider: the resolved model plus the request.
#[derive(Debug, Clone)]
pub struct ProviderCall {
    pub model: String,
    pub request: InferenceRequest,
    pub ctx: RequestContext,
    /// Time this attempt may take (connect to last byte; to the first event when streaming).
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub streaming: bool,
    /// Answers carry [`crate::types::Source`] citations.
    pub citations: bool,
    /// The model list comes from the upstream.
    pub model_discovery: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Down,
    NotInstalled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub status: HealthStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Health {
    pub fn ok() -> Self {
        Self { status: HealthStatus::Ok, detail: None }
    }
    pub fn down(detail: impl Into<String>) -> Self {
        Self { status: HealthStatus::Down, detail: Some(detail.into()) }
    }
}

/// A source of answers. Implementations must be cheap to call concurrently and must stop
/// upstream work when `ctx.cancel` fires.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug + 'static {
    fn name(&self) -> &str;
    fn kind(&self) -> ProviderKind;
    fn capabilities(&self) -> Capabilities;
    /// The model used when a route names only the provider.
    fn default_model(&self) -> Option<String>;
    /// Answers in one piece.
    async fn infer(&self, call: ProviderCall) -> Result<InferenceResponse, ProviderError>;
    /// Answers as events: status updates, deltas, sources, then `done`. The returned future
    /// resolves once the upstream has accepted the request.
    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError>;
    /// Models this provider offers right now (configured, or fetched from the upstream).
    async fn list_models(&self) -> Result<Vec<String>, ProviderError>;
    /// A cheap liveness check of the upstream.
    async fn health(&self) -> Health;
}
