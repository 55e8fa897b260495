//! `POST /v1/inference`: the native API. JSON in, [`InferenceResponse`] out, or with
//! `"stream": true` a Server-Sent Events stream of [`Event`]s (`event:` is the event type).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::AppState;
use super::extract::JsonBody;
use crate::cache::CacheSlot;
use crate::error::{ApiError, ProviderError};
use crate::provider::{Identity, RequestContext};
use crate::ratelimit::RequestLimits;
use crate::routing::RouteError;
use crate::types::{Event, InferenceRequest};

impl From<RouteError> for ApiError {
    fn from(err: RouteError) -> Self {
        match err {
            RouteError::UnknownProvider(_) => ApiError::not_found("provider_not_found", err.to_string()),
            RouteError::UnknownModel(_) => ApiError::not_found("model_not_found", err.to_string()),
            RouteError::NoModel(_) => ApiError::invalid_field("model", err.to_string()),
        }
    }
}

/// Validates `req` and opens its context: the request id (the client's, else the one the
/// request-id layer assigned), the deadline, and what the auth and rate-limit layers put in
/// the request's extensions.
pub(crate) fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
    req: &InferenceRequest,
) -> Result<RequestContext, ApiError> {
    req.validate().map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let id = req.id.clone().unwrap_or_else(|| super::request_id(headers));
    Ok(with_caller(RequestContext::new(id, state.config.server.request_timeout()), extensions))
}

/// Copies the verified identity and the caller's limits into a request context.
pub(crate) fn with_caller(mut ctx: RequestContext, extensions: &Extensions) -> RequestContext {
    ctx.identity = extensions.get::<Identity>().cloned();
    ctx.limits = extensions.get::<RequestLimits>().cloned();
    ctx
}

const ROUTE: crate::policy::Route = crate::policy::Route { path: "/v1/inference", method: "POST" };

pub async fn infer(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    JsonBody(req): JsonBody<InferenceRequest>,
) -> Result<Response, ApiError> {
    let mut ctx = prepare(&state, &headers, &extensions, &req)?;
    let identity = extensions.get::<Identity>();
    // The cache layer found a stored answer: replay it in the same framing, if the policy lets
    // this caller have it.
    let cache = extensions.get::<CacheSlot>();
    if let Some(answer) = cache
        .and_then(CacheSlot::answer)
        .filter(|a| crate::policy::may_replay(&state, identity, ROUTE, &req, &a.provider, &a.model, !a.sources.is_empty()))
    {
        record_target(&answer.provider, &answer.model);
        if req.stream
            && let Some(events) = cache.and_then(CacheSlot::replay_events)
        {
            return Ok(sse_response(events.map(|item| Ok::<_, Infallible>(sse_frame(&into_event(item))))));
        }
        if let Some(response) = cache.and_then(|c| c.replay_response(&ctx.request_id)) {
            return Ok(Json(response).into_response());
        }
    }
    let targets = state.router.plan(&req).await?;
    let (targets, collections) = crate::policy::authorize_targets(&state, identity, ROUTE, &req, targets)?;
    ctx.allowed_collections = collections;
    // Dropping the guard (client gone, handler future dropped) cancels upstream work.
    let cancel_on_drop = ctx.cancel.clone().drop_guard();
    if req.stream {
        if let Some(first) = targets.first() {
            record_target(&first.provider, &first.model);
        }
        let mut events = state.router.stream(targets, req, ctx).await?;
        if let Some(cache) = cache {
            events = cache.tap(events);
        }
        let frames = events.map(move |item| {
            let _keep = &cancel_on_drop;
            Ok::<_, Infallible>(sse_frame(&into_event(item)))
        });
        return Ok(sse_response(frames));
    }
    let response = state.router.infer(&targets, &req, &ctx).await?;
    record_target(&response.provider, &response.model);
    drop(cancel_on_drop.disarm());
    if let Some(cache) = cache {
        cache.fill(&response);
    }
    Ok(Json(response).into_response())
}

/// Adds the answering provider and model to the request's log span.
pub(crate) fn record_target(provider: &str, model: &str) {
    let span = tracing::Span::current();
    span.record("provider", provider);
    span.record("model", model);
}

/// A stream item as the client sees it: failures become an `error` event with the public
/// message of [`ApiError`].
pub(crate) fn into_event(item: Result<Event, ProviderError>) -> Event {
    item.unwrap_or_else(|err| {
        let api = ApiError::from(&err);
        Event::Error { code: api.code.to_owned(), message: api.message }
    })
}

fn sse_frame(event: &Event) -> sse::Event {
    sse::Event::default().event(event.kind()).data(serde_json::to_string(event).unwrap_or_default())
}

/// SSE with keep-alive comments, and a header that stops NGINX from buffering the stream.
pub(crate) fn sse_response<S>(frames: S) -> Response
where
    S: Stream<Item = Result<sse::Event, Infallible>> + Send + 'static,
{
    let mut response = Sse::new(frames).keep_alive(KeepAlive::default()).into_response();
    response.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    response
}
