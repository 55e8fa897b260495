//! OpenAI-compatible routes, so existing SDKs and tools work unchanged:
//! `POST /v1/chat/completions` (JSON, or SSE chunks ending in `data: [DONE]`, with
//! `stream_options.include_usage`) and `GET /v1/models`.
//!
//! Requests are translated to [`InferenceRequest`] and answers back; fields the SDKs send that
//! uag does not use are ignored, fields it cannot honour (`n > 1`, legacy `functions`, audio
//! and file parts, logprobs, audio output, penalties) are refused with a 400 naming them, never
//! dropped silently. `image_url` parts (URLs and `data:` URIs) go to vision upstreams: OpenAI as
//! sent, Anthropic as image blocks, Ollama as `images` (data only).
//! Tools (`tools`, `tool_choice`, assistant `tool_calls`, `tool` results) go to the provider in
//! its own form; calls come back as `message.tool_calls`, or streamed as `tool_calls` deltas
//! (`index`, then `id` and name, then argument fragments) with `finish_reason: "tool_calls"`.
//! `response_format` JSON and JSON schemas go to the provider, which honours them (OpenAI and
//! compatible servers as sent, Ollama as `format`, Anthropic a schema as `output_config.format`,
//! the local chat models `json_object` by constrained decoding) or refuses the request by name
//! (schemas on the local models, JSON from the knowledge base; Anthropic for schema-less JSON). Status events travel as SSE comments, which SDKs skip.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::extract::JsonBody;
use super::inference::sse_response;
use crate::error::ApiError;
use crate::error::into_event;
use crate::pipeline::Answer;
use crate::types::{
    Event, FinishReason, Image, InferenceRequest, Message, Params, ResponseFormat, Role, Source, Tool, ToolCall, ToolChoice, Usage,
};
use crate::unix_now;

/// Models discovery waits this long for any one upstream.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub functions: Option<Vec<Value>>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant turn's calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// A `tool` message: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Deserialize)]
pub struct WireToolCall {
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub function: WireFunction,
}

#[derive(Debug, Deserialize)]
pub struct WireFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// The wire form of a call: `message.tool_calls[]`.
pub(crate) fn tool_call_json(call: &ToolCall) -> Value {
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}})
}

/// `tools[]`: `{"type": "function", "function": {"name", "description", "parameters", "strict"}}`.
fn tools_of(tools: Vec<Value>) -> Result<Vec<Tool>, ApiError> {
    tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("tools[{i}]");
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid_field(field, "only tools of type `function` are supported"));
            }
            let f = t.get("function").ok_or_else(|| ApiError::invalid_field(field.clone(), "a function tool needs `function`"))?;
            super::tool_from(f, field, "parameters")
        })
        .collect()
}

/// OpenAI's `tool_choice`: `"none" | "auto" | "required"`, or one function by name, nested on
/// Chat Completions (`{"type": "function", "function": {"name"}}`) and flat on Responses
/// (`{"type": "function", "name"}`).
pub(crate) fn tool_choice_of(choice: &Value, nested: bool) -> Result<Option<ToolChoice>, ApiError> {
    let shape = if nested { r#"{"type": "function", "function": {"name": ...}}"# } else { r#"{"type": "function", "name": ...}"# };
    let bad = || ApiError::invalid_field("tool_choice", format!("tool_choice must be none, auto, required or {shape}"));
    Ok(Some(match choice {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => return Err(bad()),
        },
        Value::Object(o) if nested => {
            let name = o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(bad)?;
            ToolChoice::Tool { name: name.to_owned() }
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            ToolChoice::Tool { name: o.get("name").and_then(Value::as_str).ok_or_else(bad)?.to_owned() }
        }
        _ => return Err(bad()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
}

/// `image_url`: `{"url", "detail"}` (older clients send the URL alone).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Url(String),
    Object {
        url: String,
        #[serde(default)]
        detail: Option<String>,
    },
}

impl From<ImageUrl> for Image {
    fn from(i: ImageUrl) -> Self {
        match i {
            ImageUrl::Url(url) => Image::new(url),
            ImageUrl::Object { url, detail } => Image { url, detail },
        }
    }
}

impl ChatCompletionRequest {
    /// Fields that change what the client gets back and that uag cannot carry to a provider
    /// yet: a 400 naming them, instead of free text where the client asked for JSON, or no
    /// logprobs where it asked for them. Hints (`store`, `service_tier`, `parallel_tool_calls`,
    /// `reasoning_effort`, `prompt_cache_key`) and their neutral values (`"text"`, `0`,
    /// `tool_choice: "none"`) pass.
    fn refuse_what_would_be_dropped(&self) -> Result<(), ApiError> {
        if self.functions.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(ApiError::invalid_field("functions", "the legacy `functions` field is not supported; send `tools`"));
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some_and(|n| n > 0) {
            let field = if self.logprobs == Some(true) { "logprobs" } else { "top_logprobs" };
            return Err(ApiError::invalid_field(field, "log probabilities are not supported by this gateway"));
        }
        if self.modalities.as_ref().is_some_and(|m| m.iter().any(|m| m != "text")) || self.audio.as_ref().is_some_and(|a| !a.is_null()) {
            let field = if self.audio.as_ref().is_some_and(|a| !a.is_null()) { "audio" } else { "modalities" };
            return Err(ApiError::invalid_field(field, "audio output in chat is not supported; use POST /v1/audio/speech"));
        }
        for (field, value) in [("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid_field(field, format!("{field} is not supported by this gateway; leave it at 0")));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::invalid_field("logit_bias", "logit_bias is not supported by this gateway"));
        }
        Ok(())
    }

    /// The native request, or a 400 naming the OpenAI field that uag cannot honour.
    pub fn into_inference(self) -> Result<(InferenceRequest, bool), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid_field("n", "only n = 1 is supported"));
        }
        self.refuse_what_would_be_dropped()?;
        let tools = tools_of(self.tools.unwrap_or_default())?;
        let tool_choice = match self.tool_choice {
            Some(choice) => tool_choice_of(&choice, true)?,
            None => None,
        };
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(ApiError::invalid_field(
                        format!("messages[{i}].role"),
                        format!("role `{other}` is not supported (use system, developer, user, assistant or tool)"),
                    ));
                }
            };
            let tool_calls: Vec<ToolCall> = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments })
                .collect();
            let mut images = Vec::new();
            let content = match m.content {
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text, part.image_url) {
                            ("text", Some(t), _) => text.push_str(&t),
                            ("image_url", _, Some(image)) => images.push(Image::from(image)),
                            (kind, _, _) => {
                                return Err(ApiError::invalid_field(
                                    format!("messages[{i}].content[{j}]"),
                                    format!("content part `{kind}` is not supported; send text or image_url"),
                                ));
                            }
                        }
                    }
                    text
                }
                // An assistant turn that only calls tools has no content.
                None if !tool_calls.is_empty() => String::new(),
                None => return Err(ApiError::invalid_field(format!("messages[{i}].content"), "content is required")),
            };
            messages.push(Message { role, content, tool_calls, tool_call_id: m.tool_call_id, images });
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(v)) => v,
        };
        let mut metadata = self.metadata.unwrap_or_default();
        if let Some(user) = self.user {
            metadata.insert("user".into(), Value::String(user));
        }
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        // `text` asks for nothing; JSON and JSON schemas go to the provider, which honours or
        // refuses them (never dropped).
        let response_format = match self.response_format {
            None | Some(Value::Null) => None,
            Some(f) if f.get("type").and_then(Value::as_str) == Some("text") => None,
            Some(f) => Some(serde_json::from_value::<ResponseFormat>(f).map_err(|e| {
                ApiError::invalid_field("response_format", format!("response_format must be text, json_object or json_schema: {e}"))
            })?),
        };
        let request = InferenceRequest {
            id: None,
            provider: None,
            model: Some(self.model).filter(|m| !m.trim().is_empty()),
            messages,
            input: None,
            params: Params {
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                temperature: self.temperature,
                top_p: self.top_p,
                stop,
                seed: self.seed,
                response_format,
            },
            stream: self.stream,
            metadata,
            tools,
            tool_choice,
        };
        Ok((request, include_usage))
    }
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Other => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total()})
}

const ROUTE: crate::policy::Route = crate::policy::Route { path: "/v1/chat/completions", method: "POST" };

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    JsonBody(body): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let (req, include_usage) = body.into_inference()?;
    let requested_model = req.model.clone().unwrap_or_else(|| "default".into());
    let created = unix_now();
    let answered = match super::answer_compat(&state, &headers, &extensions, ROUTE, req, super::input_is_messages).await {
        Ok(answered) => answered,
        Err(response) => return Ok(response),
    };
    let id = format!("chatcmpl-{}", answered.request_id);
    let (answer, cache_status, cancel_on_drop) = (answered.answer, answered.cache, answered.cancel_on_drop);
    let events = match answer {
        Answer::Whole(answer) => {
            drop(cancel_on_drop.disarm());
            let response = Json(json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": answer.model,
                "choices": [{
                    "index": 0,
                    "message": message_json(&answer.output, &answer.tool_calls),
                    "logprobs": null,
                    "finish_reason": finish_reason(answer.finish_reason),
                }],
                "usage": usage_json(answer.usage),
                "system_fingerprint": null,
                "uag": super::uag_extension(&answer.provider, &answer.sources),
            }))
            .into_response();
            return Ok(super::with_cache_header(response, cache_status));
        }
        Answer::Stream(events) => events,
    };
    let chunk = move |model: &str, delta: Value, finish: Option<&str>, extra: Option<Value>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        if let Some(extra) = extra {
            c["uag"] = extra;
        }
        c
    };
    let frames = async_stream::stream! {
        let _keep = cancel_on_drop;
        let mut events = events;
        let mut sources: Vec<Source> = Vec::new();
        yield data(&chunk(&requested_model, json!({"role": "assistant", "content": ""}), None, None));
        while let Some(item) = events.next().await {
            match into_event(item) {
                Event::Status { stage, message } => yield Ok(sse::Event::default().comment(format!("status {stage}: {message}"))),
                Event::Delta { text } => yield data(&chunk(&requested_model, json!({"content": text}), None, None)),
                Event::ToolCallStart { index, id, name } => {
                    let call = json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
                    yield data(&chunk(&requested_model, json!({"tool_calls": [call]}), None, None));
                }
                Event::ToolCallDelta { index, arguments } => {
                    let call = json!({"index": index, "function": {"arguments": arguments}});
                    yield data(&chunk(&requested_model, json!({"tool_calls": [call]}), None, None));
                }
                Event::Sources { sources: s } => sources = s,
                Event::Done { finish_reason: reason, usage, provider, model, .. } => {
                    let model = model.unwrap_or_else(|| requested_model.clone());
                    let ext = super::uag_extension(provider.as_deref().unwrap_or_default(), &sources);
                    yield data(&chunk(&model, json!({}), Some(finish_reason(reason)), Some(ext)));
                    if include_usage {
                        let mut last = chunk(&model, json!({}), None, None);
                        last["choices"] = json!([]);
                        last["usage"] = usage_json(usage);
                        yield data(&last);
                    }
                    yield Ok(sse::Event::default().data("[DONE]"));
                    return;
                }
                Event::Error { code, message } => {
                    // The SDKs raise on an `error` object in the stream.
                    yield data(&json!({"error": {"message": message, "type": "upstream_error", "code": code, "param": null}}));
                    return;
                }
            }
        }
    };
    Ok(super::with_cache_header(sse_response(frames), cache_status))
}

/// `choices[0].message`: the text (`null` when the answer is only tool calls) and the calls.
fn message_json(output: &str, calls: &[ToolCall]) -> Value {
    let mut message = json!({"role": "assistant", "content": output, "refusal": null});
    if !calls.is_empty() {
        if output.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = calls.iter().map(tool_call_json).collect();
    }
    message
}

fn data(value: &Value) -> Result<sse::Event, Infallible> {
    Ok(sse::Event::default().data(value.to_string()))
}

#[derive(Serialize)]
struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: String,
    /// For the local speech and embedding models: their kind, and which model an alias selects.
    #[serde(skip_serializing_if = "Option::is_none")]
    uag: Option<Value>,
}

/// The OpenAI endpoint family a local model kind serves.
fn kind_name(kind: uag_models::manifest::ModelKind) -> &'static str {
    use uag_models::manifest::ModelKind;
    match kind {
        ModelKind::Asr => "transcription",
        ModelKind::Tts => "speech",
        ModelKind::Embed => "embedding",
        ModelKind::Llm => "chat",
        ModelKind::Runtime => "runtime",
    }
}

/// `GET /v1/models`: every provider's models as `provider/model`, the route aliases, then the
/// installed local transcription, speech and embedding models with the OpenAI names
/// (`whisper-1`, `tts-1`, `text-embedding-3-small`) that select them.
/// Upstream lists are fetched concurrently, cached by each provider, and skipped (with a
/// log line) when an upstream does not answer in time.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let registry = state.router.registry();
    let lists = futures::future::join_all(registry.entries().iter().map(|entry| async move {
        let name = entry.provider.name().to_owned();
        match tokio::time::timeout(DISCOVERY_TIMEOUT, entry.provider.list_models()).await {
            Ok(Ok(models)) => (name, models),
            Ok(Err(e)) => {
                tracing::warn!(provider = %name, error = %e, "model discovery failed");
                (name, Vec::new())
            }
            Err(_) => {
                tracing::warn!(provider = %name, "model discovery timed out");
                (name, Vec::new())
            }
        }
    }))
    .await;
    let mut data: Vec<ModelObject> = lists
        .into_iter()
        .flat_map(|(provider, models)| {
            models.into_iter().map(move |m| ModelObject {
                id: format!("{provider}/{m}"),
                object: "model",
                created: 0,
                owned_by: provider.clone(),
                uag: None,
            })
        })
        .collect();
    data.extend(state.router.aliases().map(|a| ModelObject {
        id: a.to_owned(),
        object: "model",
        created: 0,
        owned_by: "uag-route".into(),
        uag: None,
    }));
    // The local transcription, speech and embedding models, and the OpenAI names that select them.
    for m in state.models.as_ref().map(|r| r.installed_models()).unwrap_or_default() {
        let kind = kind_name(m.kind);
        for alias in &m.aliases {
            data.push(ModelObject {
                id: (*alias).to_owned(),
                object: "model",
                created: 0,
                owned_by: "uag-local".into(),
                uag: Some(json!({"kind": kind, "alias_of": m.id})),
            });
        }
        data.push(ModelObject { id: m.id, object: "model", created: 0, owned_by: "uag-local".into(), uag: Some(json!({"kind": kind})) });
    }
    Json(json!({"object": "list", "data": data}))
}
