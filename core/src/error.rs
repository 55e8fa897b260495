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
    /// The request asks for something this provider cannot do (a JSON schema of the local LLM);
    /// refused, never answered without it.
    #[error("`{param}` is not supported by provider `{provider}`: {hint}")]
    Unsupported { provider: String, param: &'static str, hint: String },
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
            ProviderError::Unsupported { .. } => "unsupported_parameter",
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

/// What kind of failure a client is told about. Each front door maps a class to its wire form
/// in one place (`uag-gateway`'s `error.rs`: HTTP status and OpenAI error type); the voice
/// pipeline and the WebSocket API report the code and message in-band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed or names something invalid (400).
    InvalidRequest,
    /// The upstream refused the request itself with this 4xx status: the client's to fix.
    UpstreamRejected(u16),
    /// No credentials, or credentials that do not verify (401).
    Unauthenticated,
    /// The access policy refuses this caller (403).
    Forbidden,
    /// An unknown model, provider or document (404).
    NotFound,
    /// The route does not take that method (405).
    MethodNotAllowed,
    /// The body is over the route's limit (413).
    TooLarge,
    /// The body's media type is not one the route reads (415).
    UnsupportedMediaType,
    /// Well formed, but its content cannot be used (422).
    Unprocessable,
    /// A WebSocket route asked without the upgrade (426).
    UpgradeRequired,
    /// A rate limit or token budget says not now (429).
    RateLimited,
    /// The gateway itself failed; the detail is in its log (500).
    Internal,
    /// An upstream failed or answered something unreadable (502).
    BadGateway,
    /// A component is missing, busy or disabled for now (503).
    Unavailable,
    /// The upstream did not answer in time (504).
    Timeout,
    /// The client went away (499, what proxies log for it).
    Cancelled,
}

/// A failure as any client may see it: a class, a stable code, a message without internal
/// detail, the field at fault, and when to retry. Built from every error category of the
/// inference path, so each front door reports the same code and text for the same failure.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicError {
    pub class: ErrorClass,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after: Option<Duration>,
    /// Extra response headers (`WWW-Authenticate`, `x-ratelimit-*`). A boxed slice keeps the
    /// error small: it travels in every handler's `Result`.
    pub headers: Box<[(&'static str, String)]>,
}

impl PublicError {
    pub fn new(class: ErrorClass, code: &'static str, message: impl Into<String>) -> Self {
        Self { class, code, message: message.into(), param: None, retry_after: None, headers: Box::default() }
    }

    /// A 400 naming the field at fault.
    pub fn invalid_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self { param: Some(param.into()), ..Self::new(ErrorClass::InvalidRequest, "invalid_request", message) }
    }

    /// A failure of the gateway itself; whoever builds it logs the detail.
    pub fn internal() -> Self {
        Self::new(ErrorClass::Internal, "internal_error", "the gateway failed to handle this request; see its log")
    }

    fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// As an in-band `error` event (streams, WebSocket and voice sessions).
    pub fn event(self) -> crate::types::Event {
        crate::types::Event::Error { code: self.code.to_owned(), message: self.message }
    }
}

impl From<&ProviderError> for PublicError {
    fn from(err: &ProviderError) -> Self {
        use ErrorClass as C;
        let code = err.code();
        match err {
            ProviderError::Connect(_)
            | ProviderError::Upstream { .. }
            | ProviderError::InvalidResponse(_)
            | ProviderError::StreamInterrupted(_) => Self::new(C::BadGateway, code, err.to_string_public()),
            ProviderError::Unauthorized { .. } => Self::new(
                C::BadGateway,
                code,
                "the upstream provider rejected the gateway's credentials; the operator must check its api_key",
            ),
            ProviderError::Timeout => Self::new(C::Timeout, code, err.to_string()),
            ProviderError::RateLimited { retry_after } => {
                Self { retry_after: *retry_after, ..Self::new(C::RateLimited, code, err.to_string()) }
            }
            ProviderError::Rejected { status, message } => {
                Self::new(C::UpstreamRejected(*status), code, format!("the upstream rejected the request: {message}"))
            }
            ProviderError::ModelNotFound { .. } => Self::new(C::NotFound, code, err.to_string()),
            ProviderError::NotInstalled { .. } => Self::new(C::Unavailable, code, err.to_string()),
            ProviderError::CircuitOpen { .. } => Self::new(C::Unavailable, code, err.to_string()).retry_after(Duration::from_secs(5)),
            ProviderError::Busy { retry_after, .. } => Self::new(C::Unavailable, code, err.to_string()).retry_after(*retry_after),
            ProviderError::Internal(detail) => {
                tracing::error!(%detail, "local provider failed");
                Self::internal()
            }
            ProviderError::Cancelled => Self::new(C::Cancelled, code, "the request was cancelled"),
            ProviderError::Unsupported { param, .. } => {
                Self { param: Some((*param).to_owned()), ..Self::new(C::InvalidRequest, code, err.to_string()) }
            }
        }
    }
}

impl From<ProviderError> for PublicError {
    fn from(err: ProviderError) -> Self {
        Self::from(&err)
    }
}

impl From<&crate::ratelimit::RateLimitError> for PublicError {
    fn from(err: &crate::ratelimit::RateLimitError) -> Self {
        use crate::ratelimit::RateLimitError as R;
        match err {
            R::Exceeded { scope, limit, retry_after } => Self {
                retry_after: Some(*retry_after),
                headers: limit.headers().into_boxed_slice(),
                ..Self::new(ErrorClass::RateLimited, scope.code(), err.to_string())
            },
            R::BackendUnavailable => Self::new(ErrorClass::Unavailable, "rate_limit_backend_unavailable", err.to_string()),
        }
    }
}

impl From<crate::routing::RouteError> for PublicError {
    fn from(err: crate::routing::RouteError) -> Self {
        use crate::routing::RouteError as R;
        match err {
            R::UnknownProvider(_) => Self::new(ErrorClass::NotFound, "provider_not_found", err.to_string()),
            R::UnknownModel(_) => Self::new(ErrorClass::NotFound, "model_not_found", err.to_string()),
            R::NoModel(_) => Self::invalid_field("model", err.to_string()),
        }
    }
}

impl From<crate::policy::PolicyDenied> for PublicError {
    /// The message never explains the policy.
    fn from(err: crate::policy::PolicyDenied) -> Self {
        Self::new(ErrorClass::Forbidden, "policy_denied", err.0)
    }
}

impl From<crate::pipeline::PipelineError> for PublicError {
    /// The inference path's failures, as every front door reports them.
    fn from(err: crate::pipeline::PipelineError) -> Self {
        use crate::pipeline::PipelineError as P;
        match err {
            P::Invalid { field, message } => Self::invalid_field(field, message),
            P::Route(e) => e.into(),
            P::Denied(e) => e.into(),
            P::Limited(e) => Self::from(&e),
            P::Provider(e) => Self::from(&e),
        }
    }
}

impl From<&uag_models::ModelError> for PublicError {
    /// Local model failures on the model endpoints and in voice turns.
    fn from(err: &uag_models::ModelError) -> Self {
        use ErrorClass as C;
        use uag_models::ModelError as M;
        match err {
            M::NotInstalled { .. } => Self::new(C::Unavailable, "model_not_installed", err.to_string()),
            M::Busy { retry_after_s, .. } => {
                Self::new(C::Unavailable, "model_busy", err.to_string()).retry_after(Duration::from_secs(*retry_after_s))
            }
            M::InvalidInput(message) => Self::new(C::InvalidRequest, "invalid_input", message.clone()),
            M::UnsupportedAudio(_) => Self::new(C::InvalidRequest, "unsupported_audio_format", err.to_string()),
            M::Unavailable(_) => Self::new(C::Unavailable, "model_unavailable", err.to_string()),
            M::Load { .. } => {
                tracing::error!(error = %err, "model failed to load");
                Self::new(
                    C::Unavailable,
                    "model_unavailable",
                    "the model is installed but failed to load; see the gateway log (`uag models verify` checks its files)",
                )
            }
            other => {
                tracing::error!(error = %other, "local model failed");
                Self::internal()
            }
        }
    }
}

impl From<uag_models::ModelError> for PublicError {
    fn from(err: uag_models::ModelError) -> Self {
        Self::from(&err)
    }
}

/// A stream item as a client sees it: a failure becomes an `error` event with the public code
/// and message (the same text an HTTP error body carries; detail stays in the log).
pub fn into_event(item: Result<crate::types::Event, ProviderError>) -> crate::types::Event {
    item.unwrap_or_else(|err| PublicError::from(&err).event())
}

/// A pipeline error as an `error` event (WebSocket and voice sessions, which answer in-band).
pub fn error_event(err: crate::pipeline::PipelineError) -> crate::types::Event {
    PublicError::from(err).event()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_detail_stays_out_of_the_message() {
        let e = PublicError::from(ProviderError::Upstream { status: 500, detail: "secret stack trace".into() });
        assert_eq!(e.class, ErrorClass::BadGateway);
        assert!(!e.message.contains("secret"));
        let e = PublicError::from(ProviderError::Internal("/var/lib/uag/secret.gguf: bad magic".into()));
        assert_eq!((e.class, e.code), (ErrorClass::Internal, "internal_error"));
        assert!(!e.message.contains("secret"));
    }

    #[test]
    fn transient_failures_say_when_to_retry() {
        let e = PublicError::from(ProviderError::Busy { runtime: "llm", retry_after: Duration::from_secs(2) });
        assert_eq!((e.class, e.code, e.retry_after), (ErrorClass::Unavailable, "model_busy", Some(Duration::from_secs(2))));
        let e = PublicError::from(ProviderError::CircuitOpen { provider: "openai".into() });
        assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
    }

    #[test]
    fn pipeline_errors_keep_their_field_and_code() {
        let e =
            PublicError::from(crate::pipeline::PipelineError::Invalid { field: "params.temperature".into(), message: "too hot".into() });
        assert_eq!((e.class, e.code, e.param.as_deref()), (ErrorClass::InvalidRequest, "invalid_request", Some("params.temperature")));
        let e = PublicError::from(crate::routing::RouteError::UnknownModel("gpt-9".into()));
        assert_eq!((e.class, e.code), (ErrorClass::NotFound, "model_not_found"));
        let e = PublicError::from(uag_models::ModelError::Unavailable("asr"));
        assert_eq!((e.class, e.code), (ErrorClass::Unavailable, "model_unavailable"));
    }

    #[test]
    fn in_band_events_carry_the_public_code() {
        match into_event(Err(ProviderError::Timeout)) {
            crate::types::Event::Error { code, .. } => assert_eq!(code, "upstream_timeout"),
            other => panic!("expected an error event, got {other:?}"),
        }
    }
}
