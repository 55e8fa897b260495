//! The access layers of the HTTP edge (after authentication, see the stack in `http/mod.rs`):
//! the caller's rate limits, admitted once per request (or socket upgrade), and the policy's
//! decision for the routes that are not inference (documents, audio, embeddings). Inference
//! routes are decided per target by `uag_core::pipeline`, which these layers leave alone.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::http::AppState;
use crate::policy::{self, InputIdentity, PolicyDenied, PolicyInput};
use crate::provider::{Identity, caller_key};

/// 403 for a request the policy refuses; the body does not explain the policy.
pub fn denied(message: impl Into<String>) -> ApiError {
    ApiError::from(PolicyDenied(message.into()))
}

/// The middleware (after authentication): admits or refuses the request, hands the router
/// its [`crate::ratelimit::RequestLimits`], and adds the caller limit's `x-ratelimit-*` headers to the answer.
pub async fn rate_limit_layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(limiter) = state.limiter.as_ref().map(Arc::clone) else {
        return next.run(request).await;
    };
    if limiter.is_exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let caller = caller_key(request.extensions().get::<Identity>(), peer);
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    match limiter.admit_request(caller, &route).await {
        Ok((limits, user_state)) => {
            request.extensions_mut().insert(limits);
            let mut response = next.run(request).await;
            if let Some(user_state) = user_state {
                for (name, value) in user_state.headers() {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
            }
            response
        }
        Err(err) => ApiError::from(&err).into_response(),
    }
}

/// The kind of a non-inference route the middleware decides, by route template.
fn route_kind(route: &str) -> Option<&'static str> {
    if route.starts_with("/v1/documents") || route.starts_with("/v1/graph") {
        Some("documents")
    } else if route.starts_with("/v1/audio") || route == "/v1/voice" {
        // The voice socket transcribes and speaks: decided as audio at the upgrade, before
        // whisper hears anything; each of its turns is then decided as inference.
        Some("audio")
    } else if route == "/v1/embeddings" {
        Some("embeddings")
    } else {
        None
    }
}

/// The middleware for documents, audio and embeddings routes (inference routes decide per
/// target in their handlers). Runs after authentication.
pub async fn policy_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(policy) = state.policy.as_ref() else { return next.run(request).await };
    let Some(route) = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()) else { return next.run(request).await };
    let Some(kind) = route_kind(&route) else { return next.run(request).await };
    let identity = request.extensions().get::<Identity>();
    let collections = request
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("collection="))
        .map(str::to_owned)
        .collect();
    let input = PolicyInput {
        identity: InputIdentity::from_identity(identity),
        route: route.clone(),
        method: request.method().to_string(),
        kind,
        provider: None,
        provider_type: None,
        model: None,
        collections,
    };
    let decision = policy::decide(policy, &state.metrics, &input).filter(|d| d.allow);
    let allow = decision.is_some();
    tracing::info!(
        target: "uag::policy",
        decision = if allow { "allow" } else { "deny" },
        subject = identity.map_or("-", |i| i.subject.as_str()),
        route = %route,
        kind,
        "policy decision"
    );
    let Some(decision) = decision else {
        return denied("the access policy does not allow this request for this caller").into_response();
    };
    let mut request = request;
    if let Some(collections) = decision.collections {
        // The documents API lists, deletes and uploads only within these.
        request.extensions_mut().insert(AllowedCollections(collections));
    }
    next.run(request).await
}

/// The collections a documents-API caller may see and change, when the policy restricts them
/// (put in the request extensions by [`policy_layer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCollections(pub Vec<String>);

impl AllowedCollections {
    /// Whether `collection` is visible under an optional restriction.
    pub fn permits(restriction: Option<&Self>, collection: &str) -> bool {
        restriction.is_none_or(|r| r.0.iter().any(|c| c == collection))
    }
}
