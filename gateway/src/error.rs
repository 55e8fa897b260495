//! Error categories and the one place where they become HTTP responses.
//!
//! Every route answers failures with an OpenAI-shaped body
//! `{"error":{"message","type","code","param"}}`. Internal detail (upstream bodies, I/O errors,
//! file paths) goes to the log, never to the client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pipeline::PipelineError;
use crate::types::Event;

pub use uag_core::error::ProviderError;

/// An error as the client sees it: status, type, code, message, and the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after: Option<Duration>,
    /// Extra response headers (`WWW-Authenticate`, `x-ratelimit-*`).
    /// (A boxed slice: `ApiError` travels in every handler's `Result`, so it stays small.)
    pub headers: Box<[(&'static str, String)]>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    param: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code, message: message.into(), param: None, retry_after: None, headers: Box::default() }
    }

    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }

    pub fn invalid_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::invalid_request("invalid_request", message);
        e.param = Some(param.into());
        e
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", code, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "this route does not accept that HTTP method",
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", "unsupported_media_type", message)
    }

    /// 403: the access policy refuses this caller; the message never explains the policy.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }

    /// 422: well-formed, but its content cannot be used (a document that parses to nothing).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", code, message)
    }

    /// 426: a WebSocket route asked without the upgrade.
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UPGRADE_REQUIRED, "invalid_request_error", "websocket_required", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", code, message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "the gateway failed to handle this request; see its log",
        )
    }

    /// The JSON body, also used for WebSocket and SSE error events.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorObject { message: &self.message, kind: self.kind, code: self.code, param: self.param.as_deref() },
        })
        .unwrap_or_default()
    }
}

impl From<&ProviderError> for ApiError {
    fn from(err: &ProviderError) -> Self {
        let code = err.code();
        match err {
            ProviderError::Connect(_)
            | ProviderError::Upstream { .. }
            | ProviderError::InvalidResponse(_)
            | ProviderError::StreamInterrupted(_) => Self::new(StatusCode::BAD_GATEWAY, "upstream_error", code, err.to_string_public()),
            ProviderError::Unauthorized { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                code,
                "the upstream provider rejected the gateway's credentials; the operator must check its api_key",
            ),
            ProviderError::Timeout => Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", code, err.to_string()),
            ProviderError::RateLimited { retry_after } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", code, err.to_string());
                e.retry_after = *retry_after;
                e
            }
            ProviderError::Rejected { status, message } => {
                let status = StatusCode::from_u16(*status).ok().filter(|s| s.is_client_error()).unwrap_or(StatusCode::BAD_REQUEST);
                Self::new(status, "invalid_request_error", code, format!("the upstream rejected the request: {message}"))
            }
            ProviderError::ModelNotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found_error", code, err.to_string()),
            ProviderError::NotInstalled { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", code, err.to_string()),
            ProviderError::CircuitOpen { .. } => {
                let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", code, err.to_string());
                e.retry_after = Some(Duration::from_secs(5));
                e
            }
            ProviderError::Busy { retry_after, .. } => {
                let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", code, err.to_string());
                e.retry_after = Some(*retry_after);
                e
            }
            ProviderError::Internal(detail) => {
                tracing::error!(%detail, "local provider failed");
                Self::internal()
            }
            // 499 is what proxies log for a client that went away; nobody reads this body.
            ProviderError::Cancelled => Self::new(
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "invalid_request_error",
                code,
                "the request was cancelled",
            ),
        }
    }
}

impl From<&crate::auth::AuthError> for ApiError {
    /// 401 with an RFC 6750 challenge; the detail of an invalid token stays in the log.
    fn from(err: &crate::auth::AuthError) -> Self {
        let code = err.code();
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "authentication_error", code, err.to_string());
        let challenge = match err {
            crate::auth::AuthError::MissingCredentials => "Bearer realm=\"uag\"".to_owned(),
            _ => format!("Bearer realm=\"uag\", error=\"invalid_token\", error_description=\"{code}\""),
        };
        e.headers = Box::new([("www-authenticate", challenge)]);
        e
    }
}

impl From<&crate::ratelimit::RateLimitError> for ApiError {
    fn from(err: &crate::ratelimit::RateLimitError) -> Self {
        use crate::ratelimit::RateLimitError as R;
        match err {
            R::Exceeded { scope, limit, retry_after } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", scope.code(), err.to_string());
                e.retry_after = Some(*retry_after);
                e.headers = limit.headers().into_boxed_slice();
                e
            }
            R::BackendUnavailable => Self::unavailable("rate_limit_backend_unavailable", err.to_string()),
        }
    }
}

impl From<&uag_models::ModelError> for ApiError {
    /// Local model failures on the model endpoints (`/v1/audio/*`, `/v1/embeddings`).
    fn from(err: &uag_models::ModelError) -> Self {
        use uag_models::ModelError as M;
        match err {
            M::NotInstalled { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "model_not_installed", err.to_string())
            }
            M::Busy { retry_after_s, .. } => {
                let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "model_busy", err.to_string());
                e.retry_after = Some(Duration::from_secs(*retry_after_s));
                e
            }
            M::InvalidInput(message) => Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_input", message.clone()),
            M::UnsupportedAudio(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "unsupported_audio_format", err.to_string())
            }
            M::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "model_unavailable", err.to_string()),
            M::Load { .. } => {
                tracing::error!(error = %err, "model failed to load");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
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

impl From<uag_models::ModelError> for ApiError {
    fn from(err: uag_models::ModelError) -> Self {
        ApiError::from(&err)
    }
}

impl From<ProviderError> for ApiError {
    fn from(err: ProviderError) -> Self {
        ApiError::from(&err)
    }
}

impl From<crate::routing::RouteError> for ApiError {
    fn from(err: crate::routing::RouteError) -> Self {
        use crate::routing::RouteError as R;
        match err {
            R::UnknownProvider(_) => ApiError::not_found("provider_not_found", err.to_string()),
            R::UnknownModel(_) => ApiError::not_found("model_not_found", err.to_string()),
            R::NoModel(_) => ApiError::invalid_field("model", err.to_string()),
        }
    }
}

impl From<crate::policy::PolicyDenied> for ApiError {
    fn from(err: crate::policy::PolicyDenied) -> Self {
        ApiError::forbidden("policy_denied", err.0)
    }
}

impl From<uag_graphrag::EngineError> for ApiError {
    /// Knowledge-base failures on the documents API; store and index detail stays in the log.
    fn from(e: uag_graphrag::EngineError) -> Self {
        use uag_graphrag::EngineError as E;
        match e {
            E::UnsupportedType { .. } => ApiError::unsupported_media_type(e.to_string()),
            E::InvalidDocument { .. } => ApiError::unprocessable("invalid_document", e.to_string()),
            E::NotFound(_) => ApiError::not_found("document_not_found", e.to_string()),
            E::Locked { .. } => ApiError::unavailable("knowledge_base_locked", "the knowledge base is locked by another process"),
            other => {
                tracing::error!(error = %other, "knowledge base failure");
                ApiError::internal()
            }
        }
    }
}

impl From<PipelineError> for ApiError {
    /// The inference path's failures, as every front door reports them.
    fn from(err: PipelineError) -> Self {
        use PipelineError as P;
        match err {
            P::Invalid { field, message } => ApiError::invalid_field(field, message),
            P::Route(e) => e.into(),
            P::Denied(e) => e.into(),
            P::Limited(e) => ApiError::from(&e),
            P::Provider(e) => ApiError::from(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        for (name, value) in self.headers.iter() {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(*name, value);
            }
        }
        response
    }
}

/// A stream item as a client sees it: a failure becomes an `error` event with the public code
/// and message (the same text an HTTP error body carries; detail stays in the log).
pub fn into_event(item: Result<Event, ProviderError>) -> Event {
    item.unwrap_or_else(|err| {
        let api = ApiError::from(&err);
        Event::Error { code: api.code.to_owned(), message: api.message }
    })
}

/// A pipeline error as an `error` event (WebSocket and voice sessions, which answer in-band).
pub fn error_event(err: PipelineError) -> Event {
    let api = ApiError::from(err);
    Event::Error { code: api.code.to_owned(), message: api.message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_only_on_transient_failures() {
        assert!(ProviderError::Timeout.is_retryable());
        assert!(ProviderError::Upstream { status: 503, detail: String::new() }.is_retryable());
        assert!(ProviderError::RateLimited { retry_after: None }.is_retryable());
        assert!(!ProviderError::Rejected { status: 400, message: String::new() }.is_retryable());
        assert!(!ProviderError::Unauthorized { status: 401, detail: String::new() }.is_retryable());
    }

    #[test]
    fn upstream_detail_stays_out_of_the_body() {
        let e = ApiError::from(ProviderError::Upstream { status: 500, detail: "secret stack trace".into() });
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(!e.body().to_string().contains("secret"));
    }
}
