//! The OpenAI Responses API, `POST /v1/responses`, stateless: newer OpenAI SDK clients
//! (`client.responses.create`, Codex-style agents) work unchanged against any provider, the
//! knowledge base included, through the one inference path like every other front door.
//!
//! - Request: `model`, `input` (a string, or message items whose content is a string or
//!   `input_text`/`output_text` parts, and `function_call` / `function_call_output` items),
//!   `instructions` (the system prompt), `max_output_tokens`, `temperature`, `top_p`, `stream`,
//!   `metadata`, `user`/`safety_identifier`, function `tools` and `tool_choice`.
//! - Nothing is stored: `store` is accepted and ignored, and what needs a stored response
//!   (`previous_response_id`, `conversation`, `prompt`, `background`) is refused with a 400
//!   naming it. So are hosted tools (`web_search`, `file_search`, ...), input parts other than
//!   text and images (`input_image` with an `image_url`: a URL or a `data:` URI), and logprobs:
//!   never dropped silently.
//!   `text.format` `json_object`/`json_schema` goes to the provider as structured output
//!   (honoured by OpenAI-style and Ollama upstreams, refused by name by the others). Hints (`reasoning`, `service_tier`, `truncation`, `prompt_cache_*`,
//!   `parallel_tool_calls`) are accepted and ignored.
//! - Response: a `response` object with a `message` output item and a `function_call` item per
//!   tool call; with `stream`, the events the SDK reads (`response.created`,
//!   `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
//!   `response.output_text.delta`, `response.output_text.done`, `response.content_part.done`,
//!   `response.function_call_arguments.delta` / `.done`, `response.output_item.done`,
//!   `response.completed`; a failure mid-stream is `response.failed`), each with its
//!   `sequence_number`.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
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
    Event, FinishReason, Image, InferenceRequest, JsonSchemaFormat, Message, Params, ResponseFormat, Role, Source, Tool, ToolCall, Usage,
};
use crate::unix_now;

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub prompt: Option<Value>,
    #[serde(default)]
    pub background: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

/// A message item (`{"role": "user", "content": ...}`, with or without `"type": "message"`),
/// a `function_call` item (a call the model made: `call_id`, `name`, `arguments`) or a
/// `function_call_output` item (its result: `call_id`, `output`).
#[derive(Debug, Deserialize)]
pub struct InputItem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<ItemContent>,
    #[serde(default)]
    pub call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
    #[serde(default)]
    pub output: Option<ItemContent>,
}

/// `tools[]`: `{"type": "function", "name", "description", "parameters", "strict"}`; hosted
/// tools run by OpenAI (`web_search`, `file_search`, `computer_use`, ...) are refused.
fn tools_of(tools: Vec<Value>) -> Result<Vec<Tool>, ApiError> {
    tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("tools[{i}]");
            match t.get("type").and_then(Value::as_str) {
                Some("function") => super::tool_from(&t, field, "parameters"),
                other => Err(ApiError::invalid_field(
                    field,
                    format!("tool type `{}` is not supported; send function tools", other.unwrap_or("?")),
                )),
            }
        })
        .collect()
}

/// The text and images of a message item's content, or a call's output (`images`: `None`
/// where images cannot be).
fn item_content(content: ItemContent, field: &str, mut images: Option<&mut Vec<Image>>) -> Result<String, ApiError> {
    match content {
        ItemContent::Text(t) => Ok(t),
        ItemContent::Parts(parts) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text, part.image_url, images.as_deref_mut()) {
                    ("input_text" | "output_text" | "text", Some(t), _, _) => text.push_str(&t),
                    ("input_image", _, Some(url), Some(images)) => images.push(Image { url, detail: part.detail }),
                    (kind, _, _, _) => {
                        return Err(ApiError::invalid_field(
                            format!("{field}[{j}]"),
                            format!(
                                "content part `{kind}` is not supported by this gateway here; send input_text, or input_image with an image_url"
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ItemContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    /// `input_image`: a URL or a `data:` URI (`file_id` needs stored files: refused).
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TextConfig {
    #[serde(default)]
    pub format: Option<Value>,
}

/// `text.format` as structured output: the Responses API's flat shape (`{"type":
/// "json_schema", "name", "schema", "strict"}`) in the typed form every provider reads.
fn text_format(format: Option<&Value>) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else { return Ok(None) };
    let field = |key: &str| format.get(key).filter(|v| !v.is_null());
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let Some(name) = field("name").and_then(Value::as_str) else {
                return Err(ApiError::invalid_field("text.format.name", "a json_schema format needs a `name`"));
            };
            Ok(Some(ResponseFormat::JsonSchema {
                json_schema: Box::new(JsonSchemaFormat {
                    name: name.to_owned(),
                    description: field("description").and_then(Value::as_str).map(str::to_owned),
                    schema: field("schema").cloned(),
                    strict: field("strict").and_then(Value::as_bool),
                }),
            }))
        }
        other => Err(ApiError::invalid_field(
            "text.format",
            format!("text.format `{}` is not supported; use text, json_object or json_schema", other.unwrap_or("?")),
        )),
    }
}

fn refuse(field: &str, message: &str) -> Result<(), ApiError> {
    Err(ApiError::invalid_field(field, message))
}

impl ResponsesRequest {
    fn refuse_what_needs_state_or_would_be_dropped(&self) -> Result<(), ApiError> {
        let stateless = "this gateway stores no responses (stateless Responses API): send the whole conversation in `input`";
        if self.previous_response_id.is_some() {
            refuse("previous_response_id", stateless)?;
        }
        if self.conversation.is_some() {
            refuse("conversation", stateless)?;
        }
        if self.prompt.is_some() {
            refuse("prompt", "stored prompt templates are not supported; send `instructions` and `input`")?;
        }
        if self.background == Some(true) {
            refuse("background", "background responses are not supported by this gateway")?;
        }
        if self.top_logprobs.is_some_and(|n| n > 0) {
            refuse("top_logprobs", "log probabilities are not supported by this gateway")?;
        }
        Ok(())
    }

    /// The native request, or a 400 naming the field uag cannot honour.
    pub fn into_inference(self) -> Result<InferenceRequest, ApiError> {
        self.refuse_what_needs_state_or_would_be_dropped()?;
        let tools = tools_of(self.tools.unwrap_or_default())?;
        let tool_choice = match &self.tool_choice {
            Some(choice) => super::openai::tool_choice_of(choice, false)?,
            None => None,
        };
        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions.filter(|i| !i.trim().is_empty()) {
            messages.push(Message::new(Role::System, instructions));
        }
        match self.input {
            None => return Err(ApiError::invalid_field("input", "`input` is required")),
            Some(Input::Text(text)) => messages.push(Message::new(Role::User, text)),
            Some(Input::Items(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    match item.kind.as_deref() {
                        None | Some("message") => {}
                        Some("function_call") => {
                            let (Some(call_id), Some(name)) = (item.call_id, item.name) else {
                                return Err(ApiError::invalid_field(
                                    format!("input[{i}]"),
                                    "a function_call item needs `call_id` and `name`",
                                ));
                            };
                            let call = ToolCall { id: call_id, name, arguments: item.arguments.unwrap_or_default() };
                            // Parallel calls are consecutive items: one assistant turn.
                            match messages.last_mut() {
                                Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                                _ => messages.push(Message { tool_calls: vec![call], ..Message::new(Role::Assistant, "") }),
                            }
                            continue;
                        }
                        Some("function_call_output") => {
                            let Some(call_id) = item.call_id else {
                                return Err(ApiError::invalid_field(format!("input[{i}]"), "a function_call_output item needs `call_id`"));
                            };
                            let output = match item.output {
                                Some(o) => item_content(o, &format!("input[{i}].output"), None)?,
                                None => String::new(),
                            };
                            messages.push(Message::tool_result(call_id, output));
                            continue;
                        }
                        Some(kind) => {
                            return Err(ApiError::invalid_field(
                                format!("input[{i}]"),
                                format!(
                                    "input item `{kind}` is not supported by this gateway; send message, function_call or function_call_output items"
                                ),
                            ));
                        }
                    }
                    let role = match item.role.as_deref() {
                        Some("user") => Role::User,
                        Some("assistant") => Role::Assistant,
                        Some("system" | "developer") => Role::System,
                        other => {
                            return Err(ApiError::invalid_field(
                                format!("input[{i}].role"),
                                format!("role `{}` is not supported (use user, assistant, system or developer)", other.unwrap_or("")),
                            ));
                        }
                    };
                    let mut images = Vec::new();
                    let content = match item.content {
                        Some(content) => item_content(content, &format!("input[{i}].content"), Some(&mut images))?,
                        None => return Err(ApiError::invalid_field(format!("input[{i}].content"), "content is required")),
                    };
                    messages.push(Message { images, ..Message::new(role, content) });
                }
            }
        }
        let mut metadata = self.metadata.unwrap_or_default();
        if let Some(user) = self.safety_identifier.or(self.user) {
            metadata.insert("user".into(), Value::String(user));
        }
        let response_format = text_format(self.text.as_ref().and_then(|t| t.format.as_ref()))?;
        Ok(InferenceRequest {
            id: None,
            provider: None,
            model: Some(self.model).filter(|m| !m.trim().is_empty()),
            messages,
            input: None,
            params: Params {
                max_tokens: self.max_output_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                stop: Vec::new(),
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

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total(),
    })
}

/// What every `response` object carries, whatever its status.
struct Envelope {
    id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    metadata: serde_json::Map<String, Value>,
    /// The request's `tools` and `tool_choice`, echoed as the API does.
    tools: Value,
    tool_choice: Value,
}

impl Envelope {
    fn response(&self, status: &str, output: Value, usage: Option<Usage>, extra: Value) -> Value {
        let mut r = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "parallel_tool_calls": false,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "text": {"format": {"type": "text"}},
            "store": false,
            "metadata": self.metadata,
            "usage": usage.map(usage_json),
        });
        if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
            r.extend(extra.clone());
        }
        r
    }
}

fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([{"type": "output_text", "text": t, "annotations": []}]),
        None => json!([]),
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

/// A finished answer's status: `incomplete` when the token budget cut it.
fn status_of(reason: FinishReason) -> (&'static str, Value) {
    match reason {
        FinishReason::Length => ("incomplete", json!({"incomplete_details": {"reason": "max_output_tokens"}})),
        FinishReason::ContentFilter => ("incomplete", json!({"incomplete_details": {"reason": "content_filter"}})),
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::Other => ("completed", json!({})),
    }
}

/// A `function_call` output item.
fn call_item(id: &str, status: &str, call: &ToolCall) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name, "arguments": call.arguments, "status": status})
}

/// The output items of a streamed response as they are written: a message item while text
/// comes, a `function_call` item per tool call; each is closed (its `.done` events) when the
/// next one starts or the answer ends.
struct OutputItems {
    simple_id: String,
    next_index: u32,
    /// The message item being written: its output index and id, and its text so far.
    message: Option<(u32, String)>,
    text: String,
    /// The call being written: its output index, item id and the call so far.
    call: Option<(u32, String, u32, ToolCall)>,
    /// Finished items, in output order.
    done: Vec<Value>,
}

type Frame = (&'static str, Value);

impl OutputItems {
    fn new(simple_id: String) -> Self {
        Self { simple_id, next_index: 0, message: None, text: String::new(), call: None, done: Vec::new() }
    }

    fn message_id(&self, index: u32) -> String {
        if index == 0 { format!("msg_{}", self.simple_id) } else { format!("msg_{}_{index}", self.simple_id) }
    }

    /// Opens a message item (its `added` events) unless one is open; its index and id.
    fn open_message(&mut self, out: &mut Vec<Frame>) -> (u32, String) {
        if let Some((index, id)) = &self.message {
            return (*index, id.clone());
        }
        let index = self.next_index;
        self.next_index += 1;
        let id = self.message_id(index);
        out.push(("response.output_item.added", json!({"output_index": index, "item": message_item(&id, "in_progress", None)})));
        out.push((
            "response.content_part.added",
            json!({
                "item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            }),
        ));
        self.message = Some((index, id.clone()));
        (index, id)
    }

    fn text(&mut self, delta: String) -> Vec<Frame> {
        let mut out = self.close_call();
        let (index, id) = self.open_message(&mut out);
        self.text.push_str(&delta);
        out.push((
            "response.output_text.delta",
            json!({
                "item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": [],
            }),
        ));
        out
    }

    fn close_message(&mut self) -> Vec<Frame> {
        let Some((index, id)) = self.message.take() else { return Vec::new() };
        let text = std::mem::take(&mut self.text);
        let item = message_item(&id, "completed", Some(&text));
        self.done.push(item.clone());
        vec![
            ("response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})),
            (
                "response.content_part.done",
                json!({
                    "item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": []},
                }),
            ),
            ("response.output_item.done", json!({"output_index": index, "item": item})),
        ]
    }

    fn start_call(&mut self, call_index: u32, call_id: String, name: String) -> Vec<Frame> {
        let mut out = self.close_message();
        out.extend(self.close_call());
        let index = self.next_index;
        self.next_index += 1;
        let item_id = format!("fc_{}_{index}", self.simple_id);
        let call = ToolCall { id: call_id, name, arguments: String::new() };
        out.push(("response.output_item.added", json!({"output_index": index, "item": call_item(&item_id, "in_progress", &call)})));
        self.call = Some((index, item_id, call_index, call));
        out
    }

    fn arguments(&mut self, call_index: u32, delta: String) -> Vec<Frame> {
        let Some((index, item_id, _, call)) = self.call.as_mut().filter(|(_, _, c, _)| *c == call_index) else { return Vec::new() };
        call.arguments.push_str(&delta);
        vec![("response.function_call_arguments.delta", json!({"item_id": item_id, "output_index": index, "delta": delta}))]
    }

    fn close_call(&mut self) -> Vec<Frame> {
        let Some((index, item_id, _, call)) = self.call.take() else { return Vec::new() };
        let item = call_item(&item_id, "completed", &call);
        self.done.push(item.clone());
        vec![
            ("response.function_call_arguments.done", json!({"item_id": item_id, "output_index": index, "arguments": call.arguments})),
            ("response.output_item.done", json!({"output_index": index, "item": item})),
        ]
    }

    /// Closes what is open; an answer with neither text nor calls still has its (empty)
    /// message item.
    fn finish(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        if self.done.is_empty() && self.call.is_none() {
            self.open_message(&mut out);
        }
        out.extend(self.close_message());
        out.extend(self.close_call());
        out
    }

    /// What was written before a failure: the items done, and the text so far.
    fn partial(&self) -> Value {
        let mut items = self.done.clone();
        if let Some((_, id)) = &self.message
            && !self.text.is_empty()
        {
            items.push(message_item(id, "incomplete", Some(&self.text)));
        }
        Value::Array(items)
    }
}

/// Native errors say `max_tokens` and `response_format`; Responses clients know
/// `max_output_tokens` and `text.format`.
fn in_responses_words(e: &mut ApiError) {
    e.param = e.param.take().map(|p| p.replace("max_tokens", "max_output_tokens").replace("response_format", "text.format"));
    e.message = e.message.replace("`response_format`", "`text.format`");
}

const ROUTE: crate::policy::Route = crate::policy::Route { path: "/v1/responses", method: "POST" };

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    JsonBody(body): JsonBody<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let (instructions, max_output_tokens, temperature, top_p) =
        (body.instructions.clone(), body.max_output_tokens, body.temperature, body.top_p);
    let metadata = body.metadata.clone().unwrap_or_default();
    let tools = Value::Array(body.tools.clone().unwrap_or_default());
    let tool_choice = match &body.tool_choice {
        Some(c) if !c.is_null() => c.clone(),
        _ if tools.as_array().is_some_and(|t| !t.is_empty()) => json!("auto"),
        _ => json!("none"),
    };
    let req = body.into_inference()?;
    let model = req.model.clone().unwrap_or_else(|| "default".into());
    let created_at = unix_now();
    let answered = match super::answer_compat(&state, &headers, &extensions, ROUTE, req, in_responses_words).await {
        Ok(answered) => answered,
        Err(response) => return Ok(response),
    };
    let simple_id = answered.request_id.replace('-', "");
    let mut envelope = Envelope {
        id: format!("resp_{simple_id}"),
        created_at,
        model,
        instructions,
        max_output_tokens,
        temperature,
        top_p,
        metadata,
        tools,
        tool_choice,
    };
    let item_id = format!("msg_{simple_id}");
    let (answer, cache_status, cancel_on_drop) = (answered.answer, answered.cache, answered.cancel_on_drop);
    let events = match answer {
        Answer::Whole(answer) => {
            drop(cancel_on_drop.disarm());
            envelope.model = answer.model.clone();
            let (status, mut extra) = status_of(answer.finish_reason);
            extra["uag"] = super::uag_extension(&answer.provider, &answer.sources);
            let mut output = Vec::new();
            if !answer.output.is_empty() || answer.tool_calls.is_empty() {
                output.push(message_item(&item_id, "completed", Some(&answer.output)));
            }
            for (n, call) in answer.tool_calls.iter().enumerate() {
                output.push(call_item(&format!("fc_{simple_id}_{n}"), "completed", call));
            }
            let output = Value::Array(output);
            let response = Json(envelope.response(status, output, Some(answer.usage), extra)).into_response();
            return Ok(super::with_cache_header(response, cache_status));
        }
        Answer::Stream(events) => events,
    };
    let frames = async_stream::stream! {
        let _keep = cancel_on_drop;
        let mut events = events;
        let mut sources: Vec<Source> = Vec::new();
        let mut items = OutputItems::new(simple_id);
        let mut seq = 0u64;
        let mut next = |kind: &'static str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(seq);
            seq += 1;
            named(kind, &data)
        };
        yield next("response.created", json!({"response": envelope.response("in_progress", json!([]), None, json!({}))}));
        yield next("response.in_progress", json!({"response": envelope.response("in_progress", json!([]), None, json!({}))}));
        while let Some(item) = events.next().await {
            let frames = match into_event(item) {
                Event::Status { stage, message } => {
                    yield Ok(sse::Event::default().comment(format!("status {stage}: {message}")));
                    continue;
                }
                Event::Delta { text } => items.text(text),
                Event::ToolCallStart { index, id, name } => items.start_call(index, id, name),
                Event::ToolCallDelta { index, arguments } => items.arguments(index, arguments),
                Event::Sources { sources: s } => {
                    sources = s;
                    continue;
                }
                Event::Done { finish_reason: reason, usage, provider, model, .. } => {
                    if let Some(model) = model {
                        envelope.model = model;
                    }
                    for (kind, data) in items.finish() {
                        yield next(kind, data);
                    }
                    let (status, mut extra) = status_of(reason);
                    extra["uag"] = super::uag_extension(provider.as_deref().unwrap_or_default(), &sources);
                    let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
                    let output = Value::Array(items.done.clone());
                    yield next(kind, json!({"response": envelope.response(status, output, Some(usage), extra)}));
                    return;
                }
                Event::Error { code, message } => {
                    let extra = json!({"error": {"code": code, "message": message}});
                    yield next("response.failed", json!({"response": envelope.response("failed", items.partial(), None, extra)}));
                    return;
                }
            };
            for (kind, data) in frames {
                yield next(kind, data);
            }
        }
    };
    Ok(super::with_cache_header(sse_response(frames), cache_status))
}

fn named(kind: &'static str, data: &Value) -> Result<sse::Event, Infallible> {
    Ok(sse::Event::default().event(kind).data(data.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<InferenceRequest, ApiError> {
        serde_json::from_value::<ResponsesRequest>(body).unwrap().into_inference()
    }

    #[test]
    fn a_string_input_and_message_items_become_messages() {
        let req = request(json!({"model": "graphrag", "input": "How do I read logs?", "instructions": "Be brief."})).unwrap();
        assert_eq!(req.messages.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::System, Role::User]);
        let req = request(json!({"model": "m", "max_output_tokens": 50, "input": [
            {"role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
            {"role": "user", "content": "How do I read logs?"}
        ], "store": true, "reasoning": {"effort": "low"}}))
        .unwrap();
        assert_eq!(req.messages.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(req.messages[1].content, "Hi");
        assert_eq!(req.params.max_tokens, Some(50));
    }

    #[test]
    fn what_needs_stored_state_or_would_be_dropped_is_refused_by_name() {
        let with = |key: &str, value: Value| {
            let mut b = json!({"model": "m", "input": "x"});
            b[key] = value;
            request(b).err().map(|e| (e.status.as_u16(), e.param.unwrap_or_default()))
        };
        assert_eq!(with("previous_response_id", json!("resp_1")), Some((400, "previous_response_id".into())));
        assert_eq!(with("conversation", json!("conv_1")), Some((400, "conversation".into())));
        assert_eq!(with("background", json!(true)), Some((400, "background".into())));
        assert!(with("tools", json!([{"type": "function", "name": "f"}])).is_none(), "function tools pass");
        assert_eq!(with("tools", json!([{"type": "web_search"}])), Some((400, "tools[0]".into())));
        assert_eq!(with("text", json!({"format": {"type": "xml"}})), Some((400, "text.format".into())));
        assert_eq!(with("text", json!({"format": {"type": "json_schema", "schema": {}}})), Some((400, "text.format.name".into())));
        assert!(with("text", json!({"format": {"type": "json_schema", "name": "x", "schema": {}}})).is_none(), "carried, not refused");
        assert_eq!(with("top_logprobs", json!(3)), Some((400, "top_logprobs".into())));
        assert_eq!(with("input", json!([{"type": "reasoning", "summary": []}])), Some((400, "input[0]".into())));
        assert_eq!(with("input", json!([{"type": "function_call_output", "output": "{}"}])), Some((400, "input[0]".into())));
        assert_eq!(
            with("input", json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}])),
            Some((400, "input[0].content[0]".into()))
        );
        assert_eq!(
            with("input", json!([{"role": "user", "content": [{"type": "input_file", "file_data": "..."}]}])),
            Some((400, "input[0].content[0]".into()))
        );
        assert!(with("text", json!({"format": {"type": "text"}})).is_none());
        assert!(with("tool_choice", json!("auto")).is_none(), "auto without tools asks for nothing");
        assert!(with("store", json!(true)).is_none(), "nothing is stored, said in the docs");
    }
}
