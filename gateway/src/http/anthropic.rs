//! The Anthropic Messages API, `POST /v1/messages`, so Anthropic-SDK clients work unchanged
//! against any provider (the local knowledge base included): a translation onto the one
//! inference path ([`crate::pipeline::Pipeline::answer`]), like the OpenAI routes.
//!
//! - Request: `model`, `max_tokens` (required, as upstream), `system` (a string or text
//!   blocks), `messages` (a string or text blocks each), `stop_sequences`, `temperature`,
//!   `top_p` (older clients), `stream`, `metadata.user_id`. Blocks other than text (images,
//!   tool use and results, documents), `tools`, `tool_choice`, `top_k`, `thinking` (unless
//!   disabled), `output_config.format` and `container` are refused with a 400 naming them:
//!   never dropped silently. Hints that change no answer here (`cache_control`,
//!   `output_config.effort`, `service_tier`, `speed`, `inference_geo`, `diagnostics`,
//!   `workspace_id`, `user_profile_id`) are accepted and ignored.
//! - Response: a `message` object, or with `stream` the documented event sequence
//!   (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//!   `content_block_stop`, `message_delta`, `message_stop`; `error` mid-stream). Status events
//!   travel as SSE comments, which the SDKs skip.
//! - Errors, the gateway's own included (authentication, rate limits, policy, bad JSON), in
//!   Anthropic's shape `{"type": "error", "error": {"type": "invalid_request_error", ...}}`,
//!   by [`anthropic_errors`] on this route alone.

use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::JsonBody;
use super::inference::sse_response;
use crate::error::ApiError;
use crate::error::into_event;
use crate::pipeline::Answer;
use crate::types::{Event, FinishReason, InferenceRequest, Message, Params, Role, Source, Usage};

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub system: Option<SystemField>,
    #[serde(default)]
    pub messages: Vec<InputMessage>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub metadata: Option<RequestMetadata>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub thinking: Option<Value>,
    #[serde(default)]
    pub output_config: Option<OutputConfig>,
    #[serde(default)]
    pub container: Option<Value>,
}

/// `output_config`: `effort` is a hint (ignored); `format` asks for structured output.
#[derive(Debug, Deserialize)]
pub struct OutputConfig {
    #[serde(default)]
    pub format: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SystemField {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
pub struct InputMessage {
    pub role: String,
    pub content: MessageContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block; only `text` is read (the type decides, extra keys like `cache_control`
/// are hints).
#[derive(Debug, Deserialize)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RequestMetadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The text of `blocks`, or a 400 naming the first block that is not text.
fn text_of(blocks: Vec<Block>, field: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, block) in blocks.into_iter().enumerate() {
        match (block.kind.as_str(), block.text) {
            ("text", Some(t)) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&t);
            }
            ("text", None) => return Err(ApiError::invalid_field(format!("{field}[{j}].text"), "a text block needs `text`")),
            (kind, _) => {
                return Err(ApiError::invalid_field(
                    format!("{field}[{j}]"),
                    format!("content block `{kind}` is not supported by this gateway; send text blocks"),
                ));
            }
        }
    }
    Ok(text)
}

impl MessagesRequest {
    /// The native request, or a 400 naming the field uag cannot honour.
    pub fn into_inference(self) -> Result<InferenceRequest, ApiError> {
        if self.model.trim().is_empty() {
            return Err(ApiError::invalid_field("model", "`model` is required"));
        }
        let Some(max_tokens) = self.max_tokens else {
            return Err(ApiError::invalid_field("max_tokens", "`max_tokens` is required"));
        };
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) || self.tool_choice.is_some() {
            let field = if self.tools.as_ref().is_some_and(|t| !t.is_empty()) { "tools" } else { "tool_choice" };
            return Err(ApiError::invalid_field(field, "tool use is not supported by this gateway"));
        }
        if self.top_k.is_some() {
            return Err(ApiError::invalid_field("top_k", "top_k is not supported; use temperature or top_p"));
        }
        if self.thinking.as_ref().is_some_and(|t| t.get("type").and_then(Value::as_str) != Some("disabled")) {
            return Err(ApiError::invalid_field("thinking", "extended thinking is not supported by this gateway"));
        }
        if self.output_config.as_ref().is_some_and(|c| c.format.as_ref().is_some_and(|f| !f.is_null())) {
            return Err(ApiError::invalid_field("output_config.format", "structured output is not supported by this gateway yet"));
        }
        if self.container.is_some() {
            return Err(ApiError::invalid_field("container", "code execution containers are not supported by this gateway"));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid_field("messages", "`messages` needs at least one message"));
        }
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        match self.system {
            Some(SystemField::Text(t)) if !t.trim().is_empty() => messages.push(Message { role: Role::System, content: t }),
            Some(SystemField::Blocks(blocks)) => {
                let t = text_of(blocks, "system")?;
                if !t.trim().is_empty() {
                    messages.push(Message { role: Role::System, content: t });
                }
            }
            _ => {}
        }
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::invalid_field(
                        format!("messages[{i}].role"),
                        format!("role `{other}` is not supported (use user or assistant; the system prompt is `system`)"),
                    ));
                }
            };
            let content = match m.content {
                MessageContent::Text(t) => t,
                MessageContent::Blocks(blocks) => text_of(blocks, &format!("messages[{i}].content"))?,
            };
            messages.push(Message { role, content });
        }
        let mut metadata = serde_json::Map::new();
        if let Some(user) = self.metadata.and_then(|m| m.user_id) {
            metadata.insert("user".into(), Value::String(user));
        }
        Ok(InferenceRequest {
            id: None,
            provider: None,
            model: Some(self.model),
            messages,
            input: None,
            params: Params {
                max_tokens: Some(max_tokens),
                temperature: self.temperature,
                top_p: self.top_p,
                stop: self.stop_sequences.unwrap_or_default(),
                seed: None,
                // Structured output is refused by name above; nothing to carry.
                response_format: None,
            },
            stream: self.stream,
            metadata,
        })
    }
}

fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ContentFilter => "refusal",
    }
}

fn usage_json(u: Usage) -> Value {
    json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens})
}

const ROUTE: crate::policy::Route = crate::policy::Route { path: "/v1/messages", method: "POST" };

pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    JsonBody(body): JsonBody<MessagesRequest>,
) -> Result<Response, ApiError> {
    let req = body.into_inference()?;
    let requested_model = req.model.clone().unwrap_or_default();
    let answered = match super::answer_compat(&state, &headers, &extensions, ROUTE, req, super::input_is_messages).await {
        Ok(answered) => answered,
        Err(response) => return Ok(response),
    };
    let id = format!("msg_{}", answered.request_id.replace('-', ""));
    let (answer, cache_status, cancel_on_drop) = (answered.answer, answered.cache, answered.cancel_on_drop);
    let events = match answer {
        Answer::Whole(answer) => {
            drop(cancel_on_drop.disarm());
            let response = Json(json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [{"type": "text", "text": answer.output}],
                "stop_reason": stop_reason(answer.finish_reason),
                "stop_sequence": null,
                "usage": usage_json(answer.usage),
                "uag": super::uag_extension(&answer.provider, &answer.sources),
            }))
            .into_response();
            return Ok(super::with_cache_header(response, cache_status));
        }
        Answer::Stream(events) => events,
    };
    let frames = async_stream::stream! {
        let _keep = cancel_on_drop;
        let mut events = events;
        let mut sources: Vec<Source> = Vec::new();
        yield event("message_start", &json!({
            "type": "message_start",
            "message": {
                "id": id, "type": "message", "role": "assistant", "model": requested_model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }));
        yield event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
        yield event("ping", &json!({"type": "ping"}));
        while let Some(item) = events.next().await {
            match into_event(item) {
                Event::Status { stage, message } => yield Ok(sse::Event::default().comment(format!("status {stage}: {message}"))),
                Event::Delta { text } => yield event("content_block_delta", &json!({
                    "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text},
                })),
                Event::Sources { sources: s } => sources = s,
                Event::Done { finish_reason: reason, usage, provider, .. } => {
                    yield event("content_block_stop", &json!({"type": "content_block_stop", "index": 0}));
                    yield event("message_delta", &json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason(reason), "stop_sequence": null},
                        "usage": usage_json(usage),
                        "uag": super::uag_extension(provider.as_deref().unwrap_or_default(), &sources),
                    }));
                    yield event("message_stop", &json!({"type": "message_stop"}));
                    return;
                }
                Event::Error { code, message } => {
                    // The SDKs raise on an `error` event in the stream.
                    yield event("error", &json!({"type": "error", "error": {"type": "api_error", "message": message, "code": code}}));
                    return;
                }
            }
        }
    };
    Ok(super::with_cache_header(sse_response(frames), cache_status))
}

fn event(name: &'static str, data: &Value) -> Result<sse::Event, Infallible> {
    Ok(sse::Event::default().event(name).data(data.to_string()))
}

/// Anthropic's error type for an HTTP status (what its SDKs and clients branch on).
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Error bodies above this size are not the gateway's own and pass unchanged.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Rewrites the gateway's OpenAI-shaped error bodies on this route into Anthropic's shape,
/// whichever layer produced them (authentication, rate limits, policy, the body extractor or
/// the handler); status and headers (`retry-after`, `www-authenticate`) stay.
pub async fn anthropic_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Unreadable: an empty error body with the same status beats a half-read one.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let openai: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let Some(error) = openai.get("error").filter(|e| e.get("message").is_some()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut object = json!({"type": error_type(status), "message": error["message"]});
    for key in ["code", "param"] {
        if let Some(v) = error.get(key).filter(|v| !v.is_null()) {
            object[key] = v.clone();
        }
    }
    let body = json!({"type": "error", "error": object}).to_string();
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<InferenceRequest, ApiError> {
        serde_json::from_value::<MessagesRequest>(body).unwrap().into_inference()
    }

    #[test]
    fn system_blocks_and_text_blocks_become_messages() {
        let req = request(json!({
            "model": "graphrag", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
                {"role": "user", "content": [{"type": "text", "text": "How do I"}, {"type": "text", "text": "read logs?"}]}
            ],
            "stop_sequences": ["\n\n"], "metadata": {"user_id": "kiosk-7"}
        }))
        .unwrap();
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(req.messages[0].content, "Be brief.");
        assert_eq!(req.messages[3].content, "How do I\nread logs?");
        assert_eq!(req.params.max_tokens, Some(100));
        assert_eq!(req.params.stop, ["\n\n"]);
        assert_eq!(req.metadata["user"], "kiosk-7");
    }

    #[test]
    fn fields_uag_cannot_honour_are_refused_by_name() {
        let base = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
        let with = |key: &str, value: Value| {
            let mut b = base.clone();
            b[key] = value;
            request(b).err().map(|e| (e.status.as_u16(), e.param.unwrap_or_default()))
        };
        assert_eq!(with("tools", json!([{"name": "t", "input_schema": {}}])), Some((400, "tools".into())));
        assert_eq!(with("tool_choice", json!({"type": "auto"})), Some((400, "tool_choice".into())));
        assert_eq!(with("top_k", json!(5)), Some((400, "top_k".into())));
        assert_eq!(with("thinking", json!({"type": "enabled", "budget_tokens": 1024})), Some((400, "thinking".into())));
        assert!(with("thinking", json!({"type": "disabled"})).is_none());
        assert_eq!(
            with("output_config", json!({"format": {"type": "json_schema", "schema": {}}})),
            Some((400, "output_config.format".into()))
        );
        assert!(with("output_config", json!({"effort": "low"})).is_none(), "effort is a hint");
        assert_eq!(with("container", json!("c-1")), Some((400, "container".into())));
        let image = json!([{"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image", "source": {}}]}]);
        assert_eq!(with("messages", image), Some((400, "messages[0].content[1]".into())));
        let mut no_max = base.clone();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(request(no_max).err().and_then(|e| e.param), Some("max_tokens".into()));
        assert!(with("tools", json!([])).is_none(), "an empty tool list asks for nothing");
    }

    #[tokio::test]
    async fn the_gateways_errors_are_rewritten_into_anthropics_shape() {
        let openai = ApiError::invalid_field("temperature", "temperature must be between 0 and 2").into_response();
        let response = anthropic_errors(openai).await;
        assert_eq!(response.status(), 400);
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap()).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "temperature must be between 0 and 2");
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(error_type(StatusCode::TOO_MANY_REQUESTS), "rate_limit_error");
        assert_eq!(error_type(StatusCode::UNAUTHORIZED), "authentication_error");
        assert_eq!(error_type(StatusCode::BAD_GATEWAY), "api_error");
    }
}
