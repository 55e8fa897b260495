//! Anthropic Messages API (`POST {base}/v1/messages`): `x-api-key` and `anthropic-version`
//! headers, the system prompt as a top-level field, and typed SSE events
//! (`message_start`, `content_block_delta`, `message_delta`, `message_stop`, `ping`, `error`).

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::openai::{PROBE_TIMEOUT, finish_reason};
use super::upstream::{self, Discovery};
use super::{Capabilities, EventStream, Health, Provider, ProviderCall};
use crate::config::{ProviderKind, RemoteProviderConfig, SecretString};
use crate::error::ProviderError;
use crate::types::{Event, InferenceResponse, Message, Role, Timings, ToolCall, ToolChoice, Usage};

const DEFAULT_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when neither the request nor the config gives one.
const FALLBACK_MAX_TOKENS: u32 = 1024;

#[derive(Debug)]
pub struct AnthropicProvider {
    name: String,
    base_url: String,
    api_key: SecretString,
    version: String,
    default_max_tokens: u32,
    client: reqwest::Client,
    discovery: Discovery,
}

impl AnthropicProvider {
    pub fn new(config: &RemoteProviderConfig, base_url: String, api_key: SecretString, client: reqwest::Client) -> Self {
        Self {
            name: config.name.clone(),
            base_url,
            api_key,
            version: config.anthropic_version.clone().unwrap_or_else(|| DEFAULT_VERSION.into()),
            default_max_tokens: config.default_max_tokens.unwrap_or(FALLBACK_MAX_TOKENS),
            client,
            discovery: Discovery::new(config.models.clone()),
        }
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder.header("x-api-key", self.api_key.expose()).header("anthropic-version", &self.version)
    }

    /// Structured output: a JSON schema goes as `output_config.format`; "any JSON object" has no
    /// counterpart in the Messages API and is refused rather than answered in free text.
    fn refuse_response_format(&self, call: &ProviderCall) -> Result<(), ProviderError> {
        match &call.request.params.response_format {
            Some(crate::types::ResponseFormat::JsonObject) => Err(ProviderError::Unsupported {
                provider: self.name.clone(),
                param: "response_format",
                hint: "Anthropic's Messages API takes a JSON schema, not free JSON; send `json_schema` with the schema".into(),
            }),
            Some(crate::types::ResponseFormat::JsonSchema { json_schema }) if json_schema.schema.is_none() => {
                Err(ProviderError::Unsupported {
                    provider: self.name.clone(),
                    param: "response_format",
                    hint: "Anthropic's structured output needs the schema itself (`json_schema.schema`)".into(),
                })
            }
            _ => Ok(()),
        }
    }

    fn body<'a>(&self, call: &'a ProviderCall, stream: bool) -> MessagesRequest<'a> {
        let p = &call.request.params;
        let conversation = call.request.conversation();
        // The Messages API takes the system prompt as a field, not as a message.
        let system: Vec<String> = conversation.iter().filter(|m| m.role == Role::System).map(|m| m.content.clone()).collect();
        let messages = wire_messages(conversation.into_iter().filter(|m| m.role != Role::System));
        let tools = call
            .request
            .tools
            .iter()
            .map(|t| {
                let mut tool = serde_json::json!({"name": t.name, "input_schema": t.parameters_or_empty()});
                if let Some(d) = &t.description {
                    tool["description"] = d.clone().into();
                }
                tool
            })
            .collect();
        let tool_choice = call.request.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => serde_json::json!({"type": "auto"}),
            ToolChoice::None => serde_json::json!({"type": "none"}),
            ToolChoice::Required => serde_json::json!({"type": "any"}),
            ToolChoice::Tool { name } => serde_json::json!({"type": "tool", "name": name}),
        });
        let output_config = match &p.response_format {
            Some(crate::types::ResponseFormat::JsonSchema { json_schema }) => {
                json_schema.schema.as_ref().map(|schema| serde_json::json!({"format": {"type": "json_schema", "schema": schema}}))
            }
            _ => None,
        };
        MessagesRequest {
            model: &call.model,
            tools,
            tool_choice,
            output_config,
            max_tokens: p.max_tokens.unwrap_or(self.default_max_tokens),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            temperature: p.temperature.map(|t| t.min(1.0)),
            top_p: p.top_p,
            stop_sequences: &p.stop,
            stream,
            metadata: call.ctx.identity.as_ref().map(|i| Metadata { user_id: &i.subject }),
        }
    }

    /// The JSON body sent upstream for `call`; for the fuzz targets in `fuzz/`, not an API.
    #[doc(hidden)]
    pub fn fuzz_request_body(&self, call: &ProviderCall, stream: bool) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.body(call, stream))
    }

    async fn fetch_models(&self) -> Result<Vec<String>, ProviderError> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let request = self.request(self.client.get(format!("{}/v1/models", self.base_url))).timeout(PROBE_TIMEOUT);
        let response = upstream::send(request, PROBE_TIMEOUT, &cancel, "").await?;
        let list: ModelList = upstream::read_json(response, &cancel).await?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}

/// The conversation as Messages API turns: tool calls become `tool_use` blocks of the assistant
/// turn, tool results `tool_result` blocks of one user turn (consecutive results together, as
/// the API requires turns to alternate).
fn wire_messages(conversation: impl Iterator<Item = Message>) -> Vec<WireMessage> {
    let mut out: Vec<WireMessage> = Vec::new();
    for m in conversation {
        match m.role {
            Role::Tool => {
                let block = serde_json::json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.unwrap_or_default(),
                    "content": m.content,
                });
                match out.last_mut() {
                    Some(WireMessage { role: "user", content: WireContent::Blocks(blocks) })
                        if blocks.iter().all(|b| b["type"] == "tool_result") =>
                    {
                        blocks.push(block);
                    }
                    _ => out.push(WireMessage { role: "user", content: WireContent::Blocks(vec![block]) }),
                }
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(serde_json::json!({"type": "text", "text": m.content}));
                }
                for c in m.tool_calls {
                    // Validation made sure the arguments are a JSON object.
                    let input = c.arguments_object().unwrap_or_else(|| serde_json::json!({}));
                    blocks.push(serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                out.push(WireMessage { role: "assistant", content: WireContent::Blocks(blocks) });
            }
            Role::Assistant => out.push(WireMessage { role: "assistant", content: WireContent::Text(m.content) }),
            Role::User if !m.images.is_empty() => {
                // Images first: Anthropic's advice for questions about an image.
                let mut blocks: Vec<serde_json::Value> = m
                    .images
                    .iter()
                    .map(|image| match image.inline() {
                        Some((media_type, data)) => {
                            serde_json::json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
                        }
                        None => serde_json::json!({"type": "image", "source": {"type": "url", "url": image.url}}),
                    })
                    .collect();
                if !m.content.is_empty() {
                    blocks.push(serde_json::json!({"type": "text", "text": m.content}));
                }
                out.push(WireMessage { role: "user", content: WireContent::Blocks(blocks) });
            }
            Role::User | Role::System => out.push(WireMessage { role: "user", content: WireContent::Text(m.content) }),
        }
    }
    out
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    /// Structured output: `{"format": {"type": "json_schema", "schema"}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<serde_json::Value>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: WireContent,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<serde_json::Value>),
}

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// `tool_use` blocks: the call's id, tool and arguments.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

/// The SSE payloads the gateway reads; the `type` field repeats the SSE `event:` name.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorBody,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct BlockDelta {
    #[serde(default)]
    text: Option<String>,
    /// `input_json_delta`: the next piece of a tool call's arguments.
    #[serde(default)]
    partial_json: Option<String>,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, citations: false, model_discovery: self.discovery.configured().is_empty() }
    }

    fn default_model(&self) -> Option<String> {
        self.discovery.configured().first().cloned()
    }

    async fn infer(&self, call: ProviderCall) -> Result<InferenceResponse, ProviderError> {
        self.refuse_response_format(&call)?;
        let url = format!("{}/v1/messages", self.base_url);
        let request = self.request(self.client.post(url)).json(&self.body(&call, false)).timeout(call.timeout);
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let body: MessagesResponse = upstream::read_json(response, &call.ctx.cancel).await?;
        let output: String = body.content.iter().filter(|b| b.kind == "text").filter_map(|b| b.text.as_deref()).collect();
        let tool_calls = body
            .content
            .into_iter()
            .filter(|b| b.kind == "tool_use")
            .enumerate()
            .map(|(i, b)| ToolCall {
                id: b.id.unwrap_or_else(|| format!("toolu_{i}")),
                name: b.name.unwrap_or_default(),
                arguments: b.input.map_or_else(|| "{}".to_owned(), |v| v.to_string()),
            })
            .collect();
        Ok(InferenceResponse {
            id: call.ctx.request_id.clone(),
            provider: self.name.clone(),
            model: body.model.unwrap_or(call.model),
            output,
            tool_calls,
            sources: Vec::new(),
            finish_reason: body.stop_reason.as_deref().map(finish_reason).unwrap_or_default(),
            usage: Usage { input_tokens: body.usage.input_tokens.unwrap_or(0), output_tokens: body.usage.output_tokens.unwrap_or(0) },
            timings: Timings::default(),
        })
    }

    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        self.refuse_response_format(&call)?;
        let url = format!("{}/v1/messages", self.base_url);
        let request = self.request(self.client.post(url)).json(&self.body(&call, true));
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let name = self.name.clone();
        Ok(Box::pin(async_stream::stream! {
            yield Ok(Event::status("generating", format!("{name} is answering")));
            let mut events = std::pin::pin!(upstream::sse_events(response));
            let mut usage = Usage::default();
            let mut finish = None;
            // Content-block index -> tool call number, for the `tool_use` blocks.
            let mut calls: Vec<u32> = Vec::new();
            while let Some(item) = events.next().await {
                let sse = match item {
                    Ok(sse) => sse,
                    Err(e) => { yield Err(e); return; }
                };
                let event: StreamEvent = match upstream::parse_chunk(&sse.data) {
                    Ok(e) => e,
                    Err(e) => { yield Err(e); return; }
                };
                match event {
                    StreamEvent::MessageStart { message } => {
                        usage.input_tokens = message.usage.input_tokens.unwrap_or(0);
                        usage.output_tokens = message.usage.output_tokens.unwrap_or(0);
                    }
                    StreamEvent::ContentBlockStart { index, content_block } if content_block.kind == "tool_use" => {
                        calls.push(index);
                        let n = (calls.len() - 1) as u32;
                        yield Ok(Event::ToolCallStart {
                            index: n,
                            id: content_block.id.unwrap_or_else(|| format!("toolu_{n}")),
                            name: content_block.name.unwrap_or_default(),
                        });
                    }
                    StreamEvent::ContentBlockDelta { index, delta } => {
                        if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                            yield Ok(Event::delta(text));
                        }
                        if let Some(arguments) = delta.partial_json.filter(|t| !t.is_empty())
                            && let Some(n) = calls.iter().position(|i| *i == index)
                        {
                            yield Ok(Event::ToolCallDelta { index: n as u32, arguments });
                        }
                    }
                    StreamEvent::MessageDelta { delta, usage: u } => {
                        if let Some(out) = u.output_tokens { usage.output_tokens = out; }
                        if let Some(inp) = u.input_tokens { usage.input_tokens = inp; }
                        if let Some(r) = delta.stop_reason { finish = Some(finish_reason(&r)); }
                    }
                    StreamEvent::MessageStop {} => {
                        yield Ok(Event::Done {
                            finish_reason: finish.unwrap_or_default(),
                            usage,
                            timings: Timings::default(),
                            provider: None,
                            model: None,
                        });
                        return;
                    }
                    StreamEvent::Error { error } => {
                        // `overloaded_error` and `api_error` are Anthropic's 529 and 500.
                        let status = if error.kind == "overloaded_error" { 529 } else { 500 };
                        yield Err(ProviderError::Upstream { status, detail: format!("{}: {}", error.kind, error.message) });
                        return;
                    }
                    StreamEvent::ContentBlockStart { .. } | StreamEvent::ContentBlockStop {} | StreamEvent::Ping {} | StreamEvent::Unknown => {}
                }
            }
            yield Err(ProviderError::StreamInterrupted("the stream ended before `message_stop`".into()));
        }))
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        self.discovery.models(|| self.fetch_models()).await
    }

    async fn health(&self) -> Health {
        self.discovery.health(|| self.fetch_models()).await
    }
}
