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
use crate::error::ApiError;
use crate::error::into_event;
use crate::pipeline::Answer;
use crate::policy::Route;
use crate::types::{Event, InferenceRequest};

const ROUTE: Route = Route { path: "/v1/inference", method: "POST" };

pub async fn infer(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    JsonBody(req): JsonBody<InferenceRequest>,
) -> Result<Response, ApiError> {
    let caller = super::caller(&extensions, ROUTE);
    // The client's id, else the one the request-id layer assigned.
    let id = req.id.clone().unwrap_or_else(|| super::request_id(&headers));
    let ctx = state.pipeline.context(id, &caller);
    // Dropping the guard (client gone, handler future dropped) cancels upstream work.
    let cancel_on_drop = ctx.cancel.clone().drop_guard();
    let answered = state.pipeline.answer(req, &caller, ctx, super::cache_use(&headers)).await;
    let response = match answered.answer {
        Ok(Answer::Stream(events)) => sse_response(events.map(move |item| {
            let _keep = &cancel_on_drop;
            Ok::<_, Infallible>(sse_frame(&into_event(item)))
        })),
        Ok(Answer::Whole(response)) => {
            drop(cancel_on_drop.disarm());
            Json(response).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    Ok(super::with_cache_header(response, answered.cache))
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
