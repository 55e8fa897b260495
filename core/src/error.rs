//! How a provider call fails, in categories that drive fallback (see
//! [`ProviderError::is_retryable`]). No HTTP here: `uag-gateway`'s `error.rs` is the one place
//! these become statuses and JSON bodies.

use std::time::Duration;

/// How a provider call failed. The variants drive fallback: see [`ProviderError::is_retryable`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The upstream could not be reached (DNS, refused, TLS, reset before a response).
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    /// The provider's timeout or the request deadline passed.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The upstream said 429.
    #[error("the upstream is rate limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    /// The upstream failed on its side (5xx).
    #[error("the upstream failed with status {status}")]
    Upstream { status: u16, detail: String },
    /// The upstream refused our credentials (401/403): a gateway configuration problem.
    #[error("the upstream rejected the gateway's credentials (status {status})")]
    Unauthorized { status: u16, detail: String },
    /// The upstream rejected the request itself (other 4xx): the client's to fix.
    #[error("the upstream rejected the request: {message}")]
    Rejected { status: u16, message: String },
    /// The upstream does not know the model.
    #[error("model `{model}` is not available at the upstream")]
    ModelNotFound { model: String },
    /// The upstream answered something we could not parse.
    #[error("the upstream sent an invalid response: {0}")]
    InvalidResponse(String),
    /// A stream ended before its final event.
    #[error("the upstream stream ended early: {0}")]
    StreamInterrupted(String),
    /// The provider's component is not part of this installation.
    #[error("{what} is not installed: {hint}")]
    NotInstalled { what: String, hint: String },
    /// A local runtime's queue is full; try again shortly (or the next provider now).
    #[error("the local {runtime} runtime is busy")]
    Busy { runtime: &'static str, retry_after: Duration },
    /// The provider's circuit breaker is open.
    #[error("provider `{provider}` is temporarily disabled after repeated failures")]
    CircuitOpen { provider: String },
    /// The client went away or cancelled.
    #[error("the request was cancelled")]
    Cancelled,
    /// A local component failed (the detail goes to the log only).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProviderError {
    /// Whether the router may retry or move to the next target: connect errors, timeouts,
    /// 429 and 5xx, never other 4xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Connect(_)
                | ProviderError::Timeout
                | ProviderError::RateLimited { .. }
                | ProviderError::Upstream { .. }
                | ProviderError::StreamInterrupted(_)
                | ProviderError::CircuitOpen { .. }
                | ProviderError::NotInstalled { .. }
                | ProviderError::Busy { .. }
        )
    }

    /// Whether this failure says something about the provider's health (feeds the breaker).
    pub fn counts_against_provider(&self) -> bool {
        matches!(
            self,
            ProviderError::Connect(_)
                | ProviderError::Timeout
                | ProviderError::Upstream { .. }
                | ProviderError::StreamInterrupted(_)
                | ProviderError::InvalidResponse(_)
        )
    }

    /// A short, stable code for events and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "upstream_unreachable",
            ProviderError::Timeout => "upstream_timeout",
            ProviderError::RateLimited { .. } => "upstream_rate_limited",
            ProviderError::Upstream { .. } => "upstream_error",
            ProviderError::Unauthorized { .. } => "upstream_unauthorized",
            ProviderError::Rejected { .. } => "upstream_rejected_request",
            ProviderError::ModelNotFound { .. } => "model_not_found",
            ProviderError::InvalidResponse(_) => "upstream_invalid_response",
            ProviderError::StreamInterrupted(_) => "upstream_stream_interrupted",
            ProviderError::NotInstalled { .. } => "not_installed",
            ProviderError::CircuitOpen { .. } => "provider_unavailable",
            ProviderError::Busy { .. } => "model_busy",
            ProviderError::Cancelled => "cancelled",
            ProviderError::Internal(_) => "internal_error",
        }
    }
}

impl From<uag_models::ModelError> for ProviderError {
    /// How a local model failure looks to the router: a missing model or a full queue lets the
    /// next provider in the chain answer; the caller's own mistakes do not.
    fn from(err: uag_models::ModelError) -> Self {
        use uag_models::ModelError as M;
        match err {
            M::NotInstalled { model, install_hint } => {
                ProviderError::NotInstalled { what: format!("local model `{model}`"), hint: format!("install it with `{install_hint}`") }
            }
            M::Busy { runtime, retry_after_s } => ProviderError::Busy { runtime, retry_after: Duration::from_secs(retry_after_s) },
            M::InvalidInput(message) | M::UnsupportedAudio(message) => ProviderError::Rejected { status: 400, message },
            other => ProviderError::Internal(other.to_string()),
        }
    }
}

impl ProviderError {
    /// The message shown to clients: the category without upstream internals.
    pub fn to_string_public(&self) -> String {
        match self {
            ProviderError::Connect(_) => "could not reach the upstream provider".into(),
            ProviderError::Upstream { status, .. } => format!("the upstream provider failed (status {status})"),
            ProviderError::InvalidResponse(_) => "the upstream provider sent a response the gateway could not read".into(),
            ProviderError::StreamInterrupted(_) => "the upstream provider's stream ended early".into(),
            other => other.to_string(),
        }
    }
}
