//! The Anthropic Messages API, `POST /v1/messages`, so Anthropic-SDK clients work unchanged
//! against any provider (the local knowledge base included): a translation onto the one
//! inference path ([`crate::pipeline::Pipeline::answer`]), like the OpenAI routes.
//!
//! - Request: `model`, `max_tokens` (required, as upstream), `system` (a string or text
//!   blocks), `messages` (a string or text blocks each), `stop_sequences`, `temperature`,
//!   `top_p` (older clients), `stream`, `metadata.user_id`, client `tools` (`name`,
//!   `description`, `input_schema`) with `tool_choice` (`auto`, `any`, `tool`, `none`), and
//!   `tool_use` / `tool_result` blocks, which become the native tool calls and results, so an
//!   Anthropic client can use tools on an OpenAI or Ollama upstream; `image` blocks (base64 or
//!   URL sources) in user turns; `output_config.format` (a JSON schema) as structured output,
//!   carried to every provider that can honour it and refused by name by the local models.
//!   Other blocks (documents, files), server tools (`web_search_...`), `top_k`, `thinking`
//!   (unless disabled) and `container` are refused with a 400 naming them: never dropped
//!   silently. Hints that change no answer here (`cache_control`,
//!   `output_config.effort`, `service_tier`, `speed`, `inference_geo`, `diagnostics`,
//!   `workspace_id`, `user_profile_id`) are accepted and ignored.
//! - Response: a `message` object (text, then `tool_use` blocks; `stop_reason: "tool_use"`), or
//!   with `stream` the documented event sequence (`message_start`, `content_block_start`,
//!   `ping`, `content_block_delta` with `text_delta` or `input_json_delta`,
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
use crate::types::{
    Event, FinishReason, Image, InferenceRequest, JsonSchemaFormat, Message, Params, ResponseFormat, Role, Source, Tool, ToolCall,
    ToolChoice, Usage,
};

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

/// A content block: `text`, `tool_use` or `tool_result` are read (the type decides, extra keys
/// like `cache_control` are hints).
#[derive(Debug, Deserialize)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    /// `tool_use`: the call's id, tool and arguments.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
    /// `tool_result`: the call it answers, its content (a string or text blocks), and whether
    /// the tool failed.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub is_error: Option<bool>,
    /// `image`: `{"type": "base64", "media_type", "data"}` or `{"type": "url", "url"}`.
    #[serde(default)]
    pub source: Option<Value>,
}

/// An image block's source as an image, or `None` when it is neither base64 nor a URL (files).
fn image_of(source: Option<&Value>) -> Option<Image> {
    let source = source?;
    match source.get("type").and_then(Value::as_str)? {
        "base64" => Some(Image::from_base64(source.get("media_type")?.as_str()?, source.get("data")?.as_str()?)),
        "url" => Some(Image::new(source.get("url")?.as_str()?)),
        _ => None,
    }
}

/// `tools[]`: client tools (`name`, `description`, `input_schema`); server tools, which carry a
/// versioned `type` (`web_search_20250305`), are Anthropic's to run and refused here.
fn tools_of(tools: Vec<Value>) -> Result<Vec<Tool>, ApiError> {
    tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("tools[{i}]");
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => super::tool_from(&t, field, "input_schema"),
                Some(kind) => Err(ApiError::invalid_field(field, format!("server tool `{kind}` is not supported; send client tools"))),
            }
        })
        .collect()
}

/// `output_config.format` (`{"type": "json_schema", "schema"}`) as structured output, which
/// every provider that can honours in its own form (OpenAI as a `json_schema` response format,
/// Ollama as `format`, Anthropic as sent).
fn output_format(format: &Value) -> Result<ResponseFormat, ApiError> {
    let field = "output_config.format";
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(ApiError::invalid_field(field, "output_config.format.type must be `json_schema`"));
    }
    let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
        return Err(ApiError::invalid_field(field, "a json_schema format needs its `schema` (an object)"));
    };
    Ok(ResponseFormat::JsonSchema {
        json_schema: Box::new(JsonSchemaFormat {
            name: "output".into(),
            description: None,
            schema: Some(schema.clone()),
            strict: Some(true),
        }),
    })
}

/// `tool_choice`: `{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name"}`.
fn tool_choice_of(choice: &Value) -> Result<ToolChoice, ApiError> {
    let bad = || ApiError::invalid_field("tool_choice", "tool_choice.type must be auto, any, tool (with `name`) or none");
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(ToolChoice::Auto),
        Some("any") => Ok(ToolChoice::Required),
        Some("none") => Ok(ToolChoice::None),
        Some("tool") => {
            let name = choice.get("name").and_then(Value::as_str).ok_or_else(bad)?;
            Ok(ToolChoice::Tool { name: name.to_owned() })
        }
        _ => Err(bad()),
    }
}

/// One input message as native messages: a user turn's `tool_result` blocks become `tool`
/// messages (first, as they answer the previous turn's calls), its text a user message; an
/// assistant turn's `tool_use` blocks become its tool calls.
fn messages_of(role: Role, blocks: Vec<Block>, field: &str, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let mut text_blocks = Vec::new();
    let mut calls = Vec::new();
    let mut images = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        match (role, block.kind.as_str()) {
            (Role::User, "image") => match image_of(block.source.as_ref()) {
                Some(image) => images.push(image),
                None => {
                    return Err(ApiError::invalid_field(
                        format!("{field}[{j}].source"),
                        "an image source must be base64 data or a URL (uag keeps no uploaded files)",
                    ));
                }
            },
            (Role::Assistant, "tool_use") => {
                let (Some(id), Some(name)) = (block.id, block.name) else {
                    return Err(ApiError::invalid_field(format!("{field}[{j}]"), "a tool_use block needs `id` and `name`"));
                };
                let arguments = block.input.unwrap_or_else(|| json!({})).to_string();
                calls.push(ToolCall { id, name, arguments });
            }
            (Role::User, "tool_result") => {
                let Some(id) = block.tool_use_id else {
                    return Err(ApiError::invalid_field(format!("{field}[{j}]"), "a tool_result block needs `tool_use_id`"));
                };
                let mut content = match block.content {
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t,
                    Some(MessageContent::Blocks(inner)) => {
                        text_of(inner.into_iter().enumerate(), &format!("{field}[{j}].content"), "send text blocks")?
                    }
                };
                if block.is_error == Some(true) {
                    content = format!("Error: {content}");
                }
                out.push(Message::tool_result(id, content));
            }
            _ => text_blocks.push((j, block)),
        }
    }
    let text = text_of(text_blocks, field, "send text, image and tool_result blocks (user) or text and tool_use blocks (assistant)")?;
    if !calls.is_empty() || !text.is_empty() || !images.is_empty() || out.last().is_none_or(|m| m.role != Role::Tool) {
        out.push(Message { role, content: text, tool_calls: calls, tool_call_id: None, images });
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct RequestMetadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The text of `blocks` (each with its index in the message, for errors), or a 400 naming the
/// first block that is not text; `accepted` says what the field takes instead.
fn text_of(blocks: impl IntoIterator<Item = (usize, Block)>, field: &str, accepted: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, block) in blocks {
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
                    format!("content block `{kind}` is not supported by this gateway here; {accepted}"),
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
        let tools = tools_of(self.tools.unwrap_or_default())?;
        let tool_choice = self.tool_choice.as_ref().filter(|c| !c.is_null()).map(tool_choice_of).transpose()?;
        if self.top_k.is_some() {
            return Err(ApiError::invalid_field("top_k", "top_k is not supported; use temperature or top_p"));
        }
        if self.thinking.as_ref().is_some_and(|t| t.get("type").and_then(Value::as_str) != Some("disabled")) {
            return Err(ApiError::invalid_field("thinking", "extended thinking is not supported by this gateway"));
        }
        let response_format = match self.output_config.as_ref().and_then(|c| c.format.as_ref()).filter(|f| !f.is_null()) {
            None => None,
            Some(format) => Some(output_format(format)?),
        };
        if self.container.is_some() {
            return Err(ApiError::invalid_field("container", "code execution containers are not supported by this gateway"));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid_field("messages", "`messages` needs at least one message"));
        }
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        match self.system {
            Some(SystemField::Text(t)) if !t.trim().is_empty() => messages.push(Message::new(Role::System, t)),
            Some(SystemField::Blocks(blocks)) => {
                let t = text_of(blocks.into_iter().enumerate(), "system", "send text blocks")?;
                if !t.trim().is_empty() {
                    messages.push(Message::new(Role::System, t));
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
            match m.content {
                MessageContent::Text(t) => messages.push(Message::new(role, t)),
                MessageContent::Blocks(blocks) => messages_of(role, blocks, &format!("messages[{i}].content"), &mut messages)?,
            }
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
                response_format,
            },
            stream: self.stream,
            metadata,
            tools,
            tool_choice,
        })
    }
}

fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ContentFilter => "refusal",
        FinishReason::ToolCalls => "tool_use",
    }
}

/// A `tool_use` content block (its `input` is the arguments object).
fn tool_use_block(call: &ToolCall) -> Value {
    let input = call.arguments_object().unwrap_or_else(|| json!({}));
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

fn usage_json(u: Usage) -> Value {
    json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens})
}

const ROUTE: crate::policy::Route = crate::policy::Route { path: "/v1/messages", method: "POST" };

/// Native field names in errors as an Anthropic client sent them: `messages` for `input`,
/// `output_config.format` for `response_format`.
fn in_anthropics_words(e: &mut ApiError) {
    super::input_is_messages(e);
    if e.param.as_deref() == Some("response_format") {
        e.param = Some("output_config.format".into());
        e.message = e.message.replace("`response_format`", "`output_config.format`");
    }
}

pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    JsonBody(body): JsonBody<MessagesRequest>,
) -> Result<Response, ApiError> {
    let req = body.into_inference()?;
    let requested_model = req.model.clone().unwrap_or_default();
    let answered = match super::answer_compat(&state, &headers, &extensions, ROUTE, req, in_anthropics_words).await {
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
                "content": content_blocks(&answer.output, &answer.tool_calls),
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
        // The open content block (index, and whether it is text); blocks are sent one after
        // another, so a tool call closes the text before it, and text after a call opens a
        // new block. `blocks_of_calls[n]`: the block of tool call `n`.
        let mut open: Option<(u32, bool)> = Some((0, true));
        let mut next_block = 1u32;
        let mut blocks_of_calls: Vec<(u32, u32)> = Vec::new();
        while let Some(item) = events.next().await {
            match into_event(item) {
                Event::Status { stage, message } => yield Ok(sse::Event::default().comment(format!("status {stage}: {message}"))),
                Event::Delta { text } => {
                    let index = match open {
                        Some((index, true)) => index,
                        other => {
                            if let Some((index, _)) = other {
                                yield event("content_block_stop", &json!({"type": "content_block_stop", "index": index}));
                            }
                            let index = next_block;
                            next_block += 1;
                            open = Some((index, true));
                            yield event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}));
                            index
                        }
                    };
                    yield event("content_block_delta", &json!({
                        "type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text},
                    }));
                }
                Event::ToolCallStart { index: call, id, name } => {
                    if let Some((index, _)) = open.take() {
                        yield event("content_block_stop", &json!({"type": "content_block_stop", "index": index}));
                    }
                    let index = next_block;
                    next_block += 1;
                    open = Some((index, false));
                    blocks_of_calls.push((call, index));
                    yield event("content_block_start", &json!({
                        "type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
                    }));
                }
                Event::ToolCallDelta { index: call, arguments } => {
                    if let Some((_, index)) = blocks_of_calls.iter().find(|(c, _)| *c == call) {
                        yield event("content_block_delta", &json!({
                            "type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments},
                        }));
                    }
                }
                Event::Sources { sources: s } => sources = s,
                Event::Done { finish_reason: reason, usage, provider, .. } => {
                    if let Some((index, _)) = open.take() {
                        yield event("content_block_stop", &json!({"type": "content_block_stop", "index": index}));
                    }
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

/// A whole answer's content: its text (left out when the answer is only tool calls), then a
/// `tool_use` block per call.
fn content_blocks(output: &str, calls: &[ToolCall]) -> Value {
    let mut blocks = Vec::new();
    if !output.is_empty() || calls.is_empty() {
        blocks.push(json!({"type": "text", "text": output}));
    }
    blocks.extend(calls.iter().map(tool_use_block));
    Value::Array(blocks)
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
        assert!(with("tools", json!([{"name": "t", "input_schema": {"type": "object"}}])).is_none(), "client tools pass");
        assert_eq!(with("tools", json!([{"type": "web_search_20250305", "name": "web_search"}])), Some((400, "tools[0]".into())));
        assert_eq!(with("tool_choice", json!({"type": "sometimes"})), Some((400, "tool_choice".into())));
        assert_eq!(with("top_k", json!(5)), Some((400, "top_k".into())));
        assert_eq!(with("thinking", json!({"type": "enabled", "budget_tokens": 1024})), Some((400, "thinking".into())));
        assert!(with("thinking", json!({"type": "disabled"})).is_none());
        assert!(with("output_config", json!({"format": {"type": "json_schema", "schema": {"type": "object"}}})).is_none(), "carried");
        assert_eq!(with("output_config", json!({"format": {"type": "json_object"}})), Some((400, "output_config.format".into())));
        assert_eq!(with("output_config", json!({"format": {"type": "json_schema"}})), Some((400, "output_config.format".into())));
        assert!(with("output_config", json!({"effort": "low"})).is_none(), "effort is a hint");
        assert_eq!(with("container", json!("c-1")), Some((400, "container".into())));
        let image = json!([{"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]);
        assert_eq!(with("messages", image), Some((400, "messages[0].content[1].source".into())));
        let document = json!([{"role": "user", "content": [{"type": "document", "source": {}}]}]);
        assert_eq!(with("messages", document), Some((400, "messages[0].content[0]".into())));
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
