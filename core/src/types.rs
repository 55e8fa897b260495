//! The standard request, response and event types every provider and client shares.
//!
//! These are the native `/v1/inference` wire shapes; the OpenAI-compatible shapes live in
//! `uag-gateway`'s `http::openai` and are translated to and from these.

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, sent back by the client (`tool_call_id` names the call).
    Tool,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// An assistant turn's calls of the client's tools (its `content` may then be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the id of the call whose result `content` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Images a user message shows the model, after its text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None, images: Vec::new() }
    }

    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(call_id.into()), ..Self::new(Role::Tool, content) }
    }
}

/// An image for a vision model: a `data:` URI with base64 PNG, JPEG, GIF or WebP (up to
/// [`Image::MAX_BYTES`]), or an `http(s)` URL that the upstream fetches (uag itself never does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub url: String,
    /// OpenAI's `low`/`high`/`auto` hint; other providers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Image {
    /// The largest image accepted, decoded (Anthropic's limit per image).
    pub const MAX_BYTES: usize = 5 * 1024 * 1024;
    const MEDIA_TYPES: [&'static str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), detail: None }
    }

    /// A `data:` URI's media type and base64 payload; `None` for a URL.
    pub fn inline(&self) -> Option<(&str, &str)> {
        let rest = self.url.strip_prefix("data:")?;
        let (media_type, data) = rest.split_once(";base64,")?;
        Some((media_type, data))
    }

    /// A base64 image as a `data:` URI.
    pub fn from_base64(media_type: &str, data: &str) -> Self {
        Self::new(format!("data:{media_type};base64,{data}"))
    }

    fn check(&self) -> Result<(), String> {
        if self.url.starts_with("https://") || self.url.starts_with("http://") {
            return Ok(());
        }
        let Some((media_type, data)) = self.inline() else {
            return Err("an image must be a `data:image/...;base64,` URI or an http(s) URL".into());
        };
        if !Self::MEDIA_TYPES.contains(&media_type) {
            return Err(format!("image type `{media_type}` is not supported; send PNG, JPEG, GIF or WebP"));
        }
        if data.len() / 4 * 3 > Self::MAX_BYTES {
            return Err(format!("an image may be at most {} MiB", Self::MAX_BYTES / (1024 * 1024)));
        }
        let base64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
        if data.is_empty() || !data.bytes().all(base64) {
            return Err("the image's data is not base64".into());
        }
        Ok(())
    }
}

/// A tool the client offers the model: a function with a JSON-schema for its arguments.
/// The model may answer with [`ToolCall`]s instead of (or after) text; the client runs them and
/// sends the results back as `tool` messages. uag never runs a tool itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments object; `None`: no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl Tool {
    /// The arguments' schema, or the schema of an empty object (what Anthropic requires).
    pub fn parameters_or_empty(&self) -> serde_json::Value {
        self.parameters.clone().unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

/// Whether and which tool the model must call (OpenAI's `tool_choice`, Anthropic's
/// `auto`/`any`/`tool`/`none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No tool call.
    None,
    /// At least one tool call.
    Required,
    /// A call of this tool.
    Tool { name: String },
}

/// A call of one of the client's tools, as the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (an object), as OpenAI carries them.
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON object (Anthropic's `input`, Ollama's `arguments`); empty text is
    /// an empty object. `None` when the text is not a JSON object.
    pub fn arguments_object(&self) -> Option<serde_json::Value> {
        if self.arguments.trim().is_empty() {
            return Some(serde_json::json!({}));
        }
        serde_json::from_str::<serde_json::Value>(&self.arguments).ok().filter(serde_json::Value::is_object)
    }
}

/// Sampling and length parameters. Every field is optional; a provider uses its own default
/// for a field left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Structured output: JSON, or JSON valid for a schema. Providers that can honour it get it
    /// (OpenAI as is, Ollama as `format`, Anthropic a schema as `output_config.format`, the
    /// local chat models `json_object` by constrained decoding); the others refuse the request
    /// rather than answer in free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

/// What shape the answer must have, in OpenAI's wire form (`{"type": "json_schema",
/// "json_schema": {"name", "schema", "strict"}}`), so OpenAI upstreams get it unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON valid for `json_schema.schema`.
    JsonSchema { json_schema: Box<JsonSchemaFormat> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ResponseFormat {
    /// Ollama's `format`: `"json"`, or the schema itself.
    pub fn ollama_format(&self) -> serde_json::Value {
        match self {
            ResponseFormat::JsonObject => serde_json::Value::String("json".into()),
            ResponseFormat::JsonSchema { json_schema } => json_schema.schema.clone().unwrap_or_else(|| "json".into()),
        }
    }
}

/// A request to `/v1/inference` (and, after translation, to every provider).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// Client-chosen id; the gateway assigns one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Explicit provider name; skips model-name routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// A model (`gpt-4o-mini`), a `provider/model` pair, or a route alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Plain input: shorthand for a single user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default)]
    pub params: Params,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The client's tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

/// Which kind of client the answer is for; `metadata.channel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Channel {
    /// Read on a screen (`"text"`, or no channel).
    #[default]
    Text,
    /// Spoken (`"voice"`): a short answer, at most two sentences.
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Text => "text",
            Channel::Voice => "voice",
        }
    }
}

/// The request options uag itself reads, typed: the one place the well-known `metadata` keys
/// are parsed (`cache`, `collections`, `language`, `channel`); other keys pass through
/// untouched. [`InferenceRequest::validate`] refuses a well-known key of the wrong shape, so a
/// typo like `"collections": 5` is a 400 instead of a silently wider search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOptions {
    /// False when the client asked to skip the response cache (`"cache": false | "bypass"`).
    pub use_cache: bool,
    /// Knowledge-base collections to search (`"collections": "a"` or `["a", "b"]`); empty: all.
    pub collections: Vec<String>,
    /// The language to answer in (ISO 639-1, `"de"`); the voice pipeline sets the spoken one.
    pub language: Option<String>,
    pub channel: Channel,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self { use_cache: true, collections: Vec::new(), language: None, channel: Channel::Text }
    }
}

impl RequestOptions {
    fn parse(metadata: &serde_json::Map<String, serde_json::Value>) -> Result<Self, InvalidRequest> {
        use serde_json::Value;
        let invalid = |field: &'static str, message: &str| InvalidRequest { field, message: message.to_owned() };
        let use_cache = match metadata.get("cache") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(Value::String(s)) if matches!(s.as_str(), "bypass" | "no-cache" | "off") => false,
            Some(Value::String(s)) if s == "on" => true,
            Some(_) => return Err(invalid("metadata.cache", "`metadata.cache` must be true, false or \"bypass\"")),
        };
        let collections = match metadata.get("collections") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("metadata.collections", "`metadata.collections` must be a name or an array of names"))?,
            Some(_) => return Err(invalid("metadata.collections", "`metadata.collections` must be a name or an array of names")),
        };
        let language = match metadata.get("language") {
            None | Some(Value::Null) => None,
            Some(Value::String(l)) if (2..=8).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                Some(l.to_ascii_lowercase())
            }
            Some(_) => return Err(invalid("metadata.language", "`metadata.language` must be a language code such as \"de\" or \"pt-br\"")),
        };
        let channel = match metadata.get("channel") {
            None | Some(Value::Null) => Channel::Text,
            Some(Value::String(c)) if c == "text" => Channel::Text,
            Some(Value::String(c)) if c == "voice" => Channel::Voice,
            Some(_) => return Err(invalid("metadata.channel", "`metadata.channel` must be \"text\" or \"voice\"")),
        };
        Ok(Self { use_cache, collections, language, channel })
    }
}

/// Why a request is not acceptable; the text names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub message: String,
}

impl InferenceRequest {
    /// Checks what serde cannot: the request has something to answer and sane parameters.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        const MAX_METADATA_KEYS: usize = 64;
        const MAX_METADATA_BYTES: usize = 16 * 1024;
        let invalid = |field: &'static str, message: &str| Err(InvalidRequest { field, message: message.to_owned() });
        match (&self.input, self.messages.is_empty()) {
            (Some(_), false) => {
                return invalid("input", "give either `messages` or `input`, not both");
            }
            (None, true) => {
                return invalid("messages", "`messages` must hold at least one message (or give `input`)");
            }
            (Some(input), true) if input.trim().is_empty() => {
                return invalid("input", "`input` must not be empty");
            }
            _ => {}
        }
        if !self.messages.is_empty() && self.messages.iter().all(|m| m.role != Role::User) {
            return invalid("messages", "`messages` must contain at least one `user` message");
        }
        if let Some(t) = self.params.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return invalid("params.temperature", "`temperature` must be between 0 and 2");
        }
        if let Some(p) = self.params.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return invalid("params.top_p", "`top_p` must be in (0, 1]");
        }
        if self.params.max_tokens == Some(0) {
            return invalid("params.max_tokens", "`max_tokens` must be at least 1");
        }
        if self.params.stop.len() > 4 {
            return invalid("params.stop", "at most 4 stop sequences are allowed");
        }
        self.validate_tools_and_images()?;
        // Metadata travels through logs, policy input and cache keys: keep it small.
        if self.metadata.len() > MAX_METADATA_KEYS || serde_json::to_vec(&self.metadata).map_or(true, |v| v.len() > MAX_METADATA_BYTES) {
            return invalid("metadata", "`metadata` may hold at most 64 keys and 16 KiB");
        }
        RequestOptions::parse(&self.metadata).map(drop)
    }

    /// Tools and images. Tools: names every provider accepts, each once; a `tool_choice` that names one of them;
    /// tool calls only in assistant turns, with JSON-object arguments; tool results that say
    /// which call they answer.
    fn validate_tools_and_images(&self) -> Result<(), InvalidRequest> {
        const MAX_TOOLS: usize = 128;
        const MAX_IMAGES: usize = 20;
        let invalid = |field: &'static str, message: String| Err(InvalidRequest { field, message });
        if self.tools.len() > MAX_TOOLS {
            return invalid("tools", format!("at most {MAX_TOOLS} tools are allowed"));
        }
        let mut seen = std::collections::HashSet::new();
        for tool in &self.tools {
            let valid = (1..=64).contains(&tool.name.len()) && tool.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return invalid("tools", format!("tool name `{}` must be 1 to 64 letters, digits, `_` or `-`", tool.name.escape_debug()));
            }
            if !seen.insert(tool.name.as_str()) {
                return invalid("tools", format!("tool `{}` is given twice", tool.name));
            }
            if tool.parameters.as_ref().is_some_and(|p| !p.is_object()) {
                return invalid("tools", format!("the parameters of tool `{}` must be a JSON schema object", tool.name));
            }
        }
        match &self.tool_choice {
            Some(ToolChoice::Tool { name }) if !seen.contains(name.as_str()) => {
                return invalid("tool_choice", format!("tool_choice names `{name}`, which is not among `tools`"));
            }
            Some(ToolChoice::Required) if self.tools.is_empty() => {
                return invalid("tool_choice", "tool_choice `required` needs `tools`".to_owned());
            }
            _ => {}
        }
        for m in &self.messages {
            if !m.images.is_empty() && m.role != Role::User {
                return invalid("messages", "only user messages carry images".to_owned());
            }
            if m.images.len() > MAX_IMAGES {
                return invalid("messages", format!("a message may carry at most {MAX_IMAGES} images"));
            }
            if let Some(e) = m.images.iter().find_map(|i| i.check().err()) {
                return invalid("messages", e);
            }
            if !m.tool_calls.is_empty() && m.role != Role::Assistant {
                return invalid("messages", "only assistant messages carry `tool_calls`".to_owned());
            }
            if let Some(call) = m.tool_calls.iter().find(|c| c.arguments_object().is_none()) {
                return invalid("messages", format!("the arguments of tool call `{}` must be a JSON object", call.id));
            }
            match (m.role, &m.tool_call_id) {
                (Role::Tool, None) => return invalid("messages", "a `tool` message needs the `tool_call_id` it answers".to_owned()),
                (Role::Tool, Some(_)) | (_, None) => {}
                (_, Some(_)) => return invalid("messages", "only `tool` messages carry `tool_call_id`".to_owned()),
            }
        }
        Ok(())
    }

    /// Whether a message shows the model an image (only vision models can answer it).
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| !m.images.is_empty())
    }

    /// Whether the request offers tools or carries a tool conversation (such answers are
    /// actions the client takes: never cached, never answered by a provider that cannot call).
    pub fn uses_tools(&self) -> bool {
        !self.tools.is_empty() || self.messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
    }

    /// The options uag reads from `metadata`, typed. A well-known key of the wrong shape (which
    /// [`Self::validate`] refuses) reads as its default.
    pub fn options(&self) -> RequestOptions {
        RequestOptions::parse(&self.metadata).unwrap_or_default()
    }

    /// Sets a typed option in `metadata` (the front doors that build requests: voice turns).
    pub fn set_channel(&mut self, channel: Channel) {
        self.metadata.insert("channel".into(), serde_json::Value::String(channel.as_str().to_owned()));
    }

    /// Asks for the answer in `language` (ISO 639-1).
    pub fn set_language(&mut self, language: &str) {
        self.metadata.insert("language".into(), serde_json::Value::String(language.to_owned()));
    }

    /// The conversation, with plain `input` turned into one user message.
    pub fn conversation(&self) -> Vec<Message> {
        match &self.input {
            Some(input) if self.messages.is_empty() => vec![Message::new(Role::User, input.clone())],
            _ => self.messages.clone(),
        }
    }

    /// The last user message: what retrieval-style providers answer.
    pub fn question(&self) -> Option<String> {
        if let Some(input) = &self.input {
            return Some(input.clone());
        }
        self.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone())
    }
}

/// A passage an answer was drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Citation number as used in the answer text (`[1]`).
    pub index: u32,
    pub document: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// Token counts, as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Wall-clock timings measured by the gateway, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub total_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<f64>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    #[default]
    Stop,
    Length,
    ContentFilter,
    /// The model called tools; the client runs them and asks again with their results.
    ToolCalls,
    Other,
}

/// A complete answer to `/v1/inference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceResponse {
    pub id: String,
    pub provider: String,
    pub model: String,
    pub output: String,
    /// Calls of the client's tools (`finish_reason` is then `tool_calls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

/// One event of a streamed answer. Every provider produces these; SSE and WebSocket framing
/// happen only at the HTTP edge. Not `non_exhaustive`: every front door matches every event,
/// so a new kind of event is a compile error wherever it is not yet framed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Progress of a stage (`connecting`, `searching`, `generating`, ...).
    Status { stage: String, message: String },
    /// The next piece of output text.
    Delta { text: String },
    /// The model starts call number `index` (0, 1, ... within the answer) of the client's tool
    /// `name`; its arguments follow as [`Event::ToolCallDelta`]s.
    ToolCallStart { index: u32, id: String, name: String },
    /// The next piece of the JSON text of call `index`'s arguments.
    ToolCallDelta { index: u32, arguments: String },
    /// Passages the answer cites.
    Sources { sources: Vec<Source> },
    /// The answer is complete.
    Done {
        #[serde(default)]
        finish_reason: FinishReason,
        usage: Usage,
        timings: Timings,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// The answer failed; no more events follow.
    Error { code: String, message: String },
}

impl Event {
    pub fn status(stage: impl Into<String>, message: impl Into<String>) -> Self {
        Event::Status { stage: stage.into(), message: message.into() }
    }
    pub fn delta(text: impl Into<String>) -> Self {
        Event::Delta { text: text.into() }
    }

    /// A whole tool call as events: its start, then its arguments in one piece.
    pub fn tool_call(index: u32, call: ToolCall) -> [Self; 2] {
        [Event::ToolCallStart { index, id: call.id, name: call.name }, Event::ToolCallDelta { index, arguments: call.arguments }]
    }

    /// The `type` tag, also used as the SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Status { .. } => "status",
            Event::Delta { .. } => "delta",
            Event::ToolCallStart { .. } => "tool_call_start",
            Event::ToolCallDelta { .. } => "tool_call_delta",
            Event::Sources { .. } => "sources",
            Event::Done { .. } => "done",
            Event::Error { .. } => "error",
        }
    }
}

/// An English name for an ISO 639-1 code (for prompts and status messages).
pub fn language_name(code: &str) -> String {
    let name = match code {
        "en" => "English",
        "de" => "German",
        "fr" => "French",
        "es" => "Spanish",
        "it" => "Italian",
        "pt" => "Portuguese",
        "nl" => "Dutch",
        "pl" => "Polish",
        "ru" => "Russian",
        "zh" => "Chinese",
        "ja" => "Japanese",
        "sv" => "Swedish",
        "tr" => "Turkish",
        "uk" => "Ukrainian",
        other => return format!("language `{other}`"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> InferenceRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plain_input_becomes_one_user_message() {
        let r = req(r#"{"input":"hello"}"#);
        r.validate().unwrap();
        assert_eq!(r.conversation(), vec![Message::new(Role::User, "hello")]);
        assert_eq!(r.question().as_deref(), Some("hello"));
    }

    #[test]
    fn empty_and_conflicting_requests_name_the_field() {
        assert_eq!(req(r#"{}"#).validate().unwrap_err().field, "messages");
        assert_eq!(req(r#"{"input":"  "}"#).validate().unwrap_err().field, "input");
        let both = r#"{"input":"a","messages":[{"role":"user","content":"b"}]}"#;
        assert_eq!(req(both).validate().unwrap_err().field, "input");
        let no_user = r#"{"messages":[{"role":"system","content":"b"}]}"#;
        assert_eq!(req(no_user).validate().unwrap_err().field, "messages");
        let hot = r#"{"input":"a","params":{"temperature":3}}"#;
        assert_eq!(req(hot).validate().unwrap_err().field, "params.temperature");
    }

    #[test]
    fn well_known_metadata_keys_are_typed_options() {
        let r = req(r#"{"input":"q","metadata":{"cache":false,"collections":"a","language":"DE","channel":"voice","tag":7}}"#);
        r.validate().unwrap();
        let o = r.options();
        assert_eq!(
            o,
            RequestOptions { use_cache: false, collections: vec!["a".into()], language: Some("de".into()), channel: Channel::Voice }
        );
        assert_eq!(req(r#"{"input":"q"}"#).options(), RequestOptions::default());
        assert!(req(r#"{"input":"q"}"#).options().use_cache);
        assert!(!req(r#"{"input":"q","metadata":{"cache":"bypass"}}"#).options().use_cache);
        assert_eq!(req(r#"{"input":"q","metadata":{"collections":["a","b"]}}"#).options().collections, ["a", "b"]);
        // The wrong shape is refused, naming the key, never read as "no restriction".
        for (json, field) in [
            (r#"{"input":"q","metadata":{"collections":5}}"#, "metadata.collections"),
            (r#"{"input":"q","metadata":{"collections":["a",1]}}"#, "metadata.collections"),
            (r#"{"input":"q","metadata":{"cache":"maybe"}}"#, "metadata.cache"),
            (r#"{"input":"q","metadata":{"language":"deutsch bitte"}}"#, "metadata.language"),
            (r#"{"input":"q","metadata":{"channel":"fax"}}"#, "metadata.channel"),
        ] {
            assert_eq!(req(json).validate().unwrap_err().field, field, "{json}");
        }
        let mut built = req(r#"{"input":"q"}"#);
        built.set_channel(Channel::Voice);
        built.set_language("pt-br");
        built.validate().unwrap();
        assert_eq!((built.options().channel, built.options().language.as_deref()), (Channel::Voice, Some("pt-br")));
    }

    #[test]
    fn tool_requests_are_checked_and_calls_become_events() {
        let ok = r#"{"messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","tool_calls":[{"id":"c1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}]},
            {"role":"tool","tool_call_id":"c1","content":"18"}],
            "tools":[{"name":"get_weather","parameters":{"type":"object"}}],"tool_choice":{"tool":{"name":"get_weather"}}}"#;
        let r = req(ok);
        r.validate().unwrap();
        assert!(r.uses_tools());
        assert_eq!(r.messages[1].tool_calls[0].arguments_object(), Some(serde_json::json!({"city": "Paris"})));
        assert!(!req(r#"{"input":"q"}"#).uses_tools());
        for (json, field) in [
            (r#"{"input":"q","tools":[{"name":"a b"}]}"#, "tools"),
            (r#"{"input":"q","tools":[{"name":"a"},{"name":"a"}]}"#, "tools"),
            (r#"{"input":"q","tools":[{"name":"a","parameters":[]}]}"#, "tools"),
            (r#"{"input":"q","tools":[{"name":"a"}],"tool_choice":{"tool":{"name":"b"}}}"#, "tool_choice"),
            (r#"{"input":"q","tool_choice":"required"}"#, "tool_choice"),
            (r#"{"messages":[{"role":"user","content":"q"},{"role":"tool","content":"18"}]}"#, "messages"),
            (r#"{"messages":[{"role":"user","content":"q","tool_call_id":"c"}]}"#, "messages"),
            (r#"{"messages":[{"role":"user","content":"q","tool_calls":[{"id":"c","name":"a","arguments":"{}"}]}]}"#, "messages"),
            (
                r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","name":"a","arguments":"7"}]}]}"#,
                "messages",
            ),
        ] {
            assert_eq!(req(json).validate().unwrap_err().field, field, "{json}");
        }
        assert_eq!(ToolCall { id: "c".into(), name: "a".into(), arguments: " ".into() }.arguments_object(), Some(serde_json::json!({})));
        let events = Event::tool_call(1, ToolCall { id: "c".into(), name: "a".into(), arguments: "{}".into() });
        assert_eq!(serde_json::to_value(&events[0]).unwrap(), serde_json::json!({"type":"tool_call_start","index":1,"id":"c","name":"a"}));
    }

    #[test]
    fn images_are_data_uris_of_known_types_or_urls_within_the_cap() {
        let with = |url: &str| format!(r#"{{"messages":[{{"role":"user","content":"q","images":[{{"url":"{url}"}}]}}]}}"#);
        req(&with("data:image/png;base64,iVBORw0KGgo=")).validate().unwrap();
        req(&with("https://example.com/a.jpg")).validate().unwrap();
        let big = format!("data:image/jpeg;base64,{}", "A".repeat(Image::MAX_BYTES / 3 * 4 + 8));
        for url in ["data:image/svg+xml;base64,PHN2Zz4=", "data:image/png,raw", "ftp://x/a.png", "data:image/png;base64,a b", big.as_str()]
        {
            assert_eq!(req(&with(url)).validate().unwrap_err().field, "messages", "{}", &url[..url.len().min(40)]);
        }
        let assistant =
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","images":[{"url":"https://x/a.png"}]}]}"#;
        assert_eq!(req(assistant).validate().unwrap_err().field, "messages");
        assert_eq!(Image::from_base64("image/gif", "R0lG").inline(), Some(("image/gif", "R0lG")));
        assert!(req(&with("https://example.com/a.jpg")).has_images());
    }

    #[test]
    fn events_are_tagged_by_type() {
        let json = serde_json::to_value(Event::delta("hi")).unwrap();
        assert_eq!(json, serde_json::json!({"type":"delta","text":"hi"}));
    }
}
