//! The one place where errors become HTTP responses: [`status_and_type`] maps each
//! [`ErrorClass`] to a status and an OpenAI error `type`. Error categories are turned into a
//! [`PublicError`] (class, code, public message) in `uag-core`, so the WebSocket and voice
//! sessions report the same code and text in-band.
//!
//! Every route answers failures with an OpenAI-shaped body
//! `{"error":{"message","type","code","param"}}`. Internal detail (upstream bodies, I/O errors,
//! file paths) goes to the log, never to the client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pipeline::PipelineError;

pub use uag_core::error::{ErrorClass, ProviderError, PublicError, error_event, into_event};

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
    fn new(class: ErrorClass, code: &'static str, message: impl Into<String>) -> Self {
        PublicError::new(class, code, message).into()
    }

    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::InvalidRequest, code, message)
    }

    pub fn invalid_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        PublicError::invalid_field(param, message).into()
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::NotFound, code, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(ErrorClass::TooLarge, "request_too_large", format!("the request body is larger than the limit of {limit} bytes"))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(ErrorClass::MethodNotAllowed, "method_not_allowed", "this route does not accept that HTTP method")
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::UnsupportedMediaType, "unsupported_media_type", message)
    }

    /// 403: the access policy refuses this caller; the message never explains the policy.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Forbidden, code, message)
    }

    /// 422: well-formed, but its content cannot be used (a document that parses to nothing).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Unprocessable, code, message)
    }

    /// 426: a WebSocket route asked without the upgrade.
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::UpgradeRequired, "websocket_required", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Unavailable, code, message)
    }

    pub fn internal() -> Self {
        PublicError::internal().into()
    }

    /// The JSON body, also used for WebSocket and SSE error events.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorObject { message: &self.message, kind: self.kind, code: self.code, param: self.param.as_deref() },
        })
        .unwrap_or_default()
    }
}

/// The one table from error class to HTTP status and OpenAI error `type`.
fn status_and_type(class: ErrorClass) -> (StatusCode, &'static str) {
    use ErrorClass as C;
    match class {
        C::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        // An upstream's own 4xx passes through; anything else it calls a rejection is a 400.
        C::UpstreamRejected(status) => {
            (StatusCode::from_u16(status).ok().filter(|s| s.is_client_error()).unwrap_or(StatusCode::BAD_REQUEST), "invalid_request_error")
        }
        C::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_error"),
        C::Forbidden => (StatusCode::FORBIDDEN, "permission_error"),
        C::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
        C::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error"),
        C::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
        C::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error"),
        C::Unprocessable => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error"),
        C::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "invalid_request_error"),
        C::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        C::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        C::BadGateway => (StatusCode::BAD_GATEWAY, "upstream_error"),
        C::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        C::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_error"),
        // 499 is what proxies log for a client that went away; nobody reads this body.
        C::Cancelled => (StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST), "invalid_request_error"),
    }
}

impl From<PublicError> for ApiError {
    fn from(e: PublicError) -> Self {
        let (status, kind) = status_and_type(e.class);
        Self { status, kind, code: e.code, message: e.message, param: e.param, retry_after: e.retry_after, headers: e.headers }
    }
}

impl From<&ProviderError> for ApiError {
    fn from(err: &ProviderError) -> Self {
        PublicError::from(err).into()
    }
}

impl From<ProviderError> for ApiError {
    fn from(err: ProviderError) -> Self {
        PublicError::from(&err).into()
    }
}

impl From<&crate::auth::AuthError> for ApiError {
    /// 401 with an RFC 6750 challenge; the detail of an invalid token stays in the log.
    fn from(err: &crate::auth::AuthError) -> Self {
        let code = err.code();
        let challenge = match err {
            crate::auth::AuthError::MissingCredentials => "Bearer realm=\"uag\"".to_owned(),
            _ => format!("Bearer realm=\"uag\", error=\"invalid_token\", error_description=\"{code}\""),
        };
        PublicError {
            headers: Box::new([("www-authenticate", challenge)]),
            ..PublicError::new(ErrorClass::Unauthenticated, code, err.to_string())
        }
        .into()
    }
}

impl From<&crate::ratelimit::RateLimitError> for ApiError {
    fn from(err: &crate::ratelimit::RateLimitError) -> Self {
        PublicError::from(err).into()
    }
}

impl From<&uag_models::ModelError> for ApiError {
    /// Local model failures on the model endpoints (`/v1/audio/*`, `/v1/embeddings`).
    fn from(err: &uag_models::ModelError) -> Self {
        PublicError::from(err).into()
    }
}

impl From<uag_models::ModelError> for ApiError {
    fn from(err: uag_models::ModelError) -> Self {
        PublicError::from(&err).into()
    }
}

impl From<crate::policy::PolicyDenied> for ApiError {
    fn from(err: crate::policy::PolicyDenied) -> Self {
        PublicError::from(err).into()
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
        PublicError::from(err).into()
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

    #[test]
    fn every_class_has_its_status() {
        use ErrorClass as C;
        let expected = [
            (C::InvalidRequest, 400),
            (C::UpstreamRejected(422), 422),
            (C::UpstreamRejected(302), 400),
            (C::Unauthenticated, 401),
            (C::Forbidden, 403),
            (C::NotFound, 404),
            (C::MethodNotAllowed, 405),
            (C::TooLarge, 413),
            (C::UnsupportedMediaType, 415),
            (C::Unprocessable, 422),
            (C::UpgradeRequired, 426),
            (C::RateLimited, 429),
            (C::Cancelled, 499),
            (C::Internal, 500),
            (C::BadGateway, 502),
            (C::Unavailable, 503),
            (C::Timeout, 504),
        ];
        for (class, status) in expected {
            assert_eq!(status_and_type(class).0.as_u16(), status, "{class:?}");
        }
    }
}
