//! OpenAI Chat Completions (`POST {base}/chat/completions`, SSE streaming ending in
//! `data: [DONE]`), shared by the `openai` and `openai_compatible` provider types.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::upstream::{self, Discovery};
use super::{Capabilities, EventStream, Health, Provider, ProviderCall};
use crate::config::{ProviderKind, RemoteProviderConfig, SecretString};
use crate::error::ProviderError;
use crate::types::{Event, FinishReason, InferenceResponse, Message, Role, Timings, Tool, ToolCall, ToolChoice, Usage};

/// Model listings double as health probes: they must be quick.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct OpenAiProvider {
    name: String,
    kind: ProviderKind,
    base_url: String,
    api_key: Option<SecretString>,
    client: reqwest::Client,
    discovery: Discovery,
    forward_identity: bool,
}

impl OpenAiProvider {
    pub fn new(
        kind: ProviderKind,
        config: &RemoteProviderConfig,
        base_url: String,
        api_key: Option<SecretString>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: config.name.clone(),
            kind,
            base_url,
            api_key,
            client,
            discovery: Discovery::new(config.models.clone()),
            forward_identity: config.forward_identity,
        }
    }

    fn post(&self, body: &ChatRequest<'_>) -> reqwest::RequestBuilder {
        let builder = self.authorized(self.client.post(format!("{}/chat/completions", self.base_url))).json(body);
        // OpenAI reads only the body's `user`; self-hosted servers and their proxies log headers.
        match body.user {
            Some(user) if self.kind == ProviderKind::OpenAiCompatible => builder.header("x-uag-user", user),
            _ => builder,
        }
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        }
    }

    fn body<'a>(&self, call: &'a ProviderCall, stream: bool) -> ChatRequest<'a> {
        let p = &call.request.params;
        // OpenAI itself deprecated `max_tokens` for `max_completion_tokens`; compatible servers
        // (vLLM, llama.cpp, LocalAI) only know `max_tokens`.
        let (max_tokens, max_completion_tokens) = match self.kind {
            ProviderKind::OpenAi => (None, p.max_tokens),
            _ => (p.max_tokens, None),
        };
        ChatRequest {
            model: &call.model,
            messages: call.request.conversation().into_iter().map(WireMessage::from).collect(),
            tools: wire_tools(&call.request.tools),
            tool_choice: call.request.tool_choice.as_ref().map(wire_tool_choice),
            max_tokens,
            max_completion_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            stop: &p.stop,
            seed: p.seed,
            response_format: p.response_format.as_ref(),
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
            user: call.ctx.identity.as_ref().filter(|_| self.forward_identity).map(|i| i.subject.as_str()),
        }
    }

    /// The JSON body sent upstream for `call`; for the fuzz targets in `fuzz/`, not an API.
    #[doc(hidden)]
    pub fn fuzz_request_body(&self, call: &ProviderCall, stream: bool) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.body(call, stream))
    }

    async fn fetch_models(&self) -> Result<Vec<String>, ProviderError> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let request = self.authorized(self.client.get(format!("{}/models", self.base_url))).timeout(PROBE_TIMEOUT);
        let response = upstream::send(request, PROBE_TIMEOUT, &cancel, "").await?;
        let list: ModelList = upstream::read_json(response, &cancel).await?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

pub(crate) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" | "end_turn" | "stop_sequence" => FinishReason::Stop,
        "length" | "max_tokens" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        "tool_calls" | "tool_use" => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}

/// Tools in OpenAI's wire form (`{"type": "function", "function": {...}}`), which Ollama reads too.
pub(crate) fn wire_tools(tools: &[Tool]) -> Vec<serde_json::Value> {
    tools
        .iter()
        .map(|t| {
            let mut function = serde_json::json!({"name": t.name, "parameters": t.parameters_or_empty()});
            if let Some(d) = &t.description {
                function["description"] = d.clone().into();
            }
            serde_json::json!({"type": "function", "function": function})
        })
        .collect()
}

fn wire_tool_choice(choice: &ToolChoice) -> serde_json::Value {
    match choice {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Tool { name } => serde_json::json!({"type": "function", "function": {"name": name}}),
    }
}

/// The calls of a whole response (`message.tool_calls`) as the upstream sent them, with an id
/// made up where it gave none.
fn calls_of(wire: Vec<WireToolCallIn>) -> Vec<ToolCall> {
    wire.into_iter()
        .enumerate()
        .map(|(i, c)| {
            let function = c.function.unwrap_or_default();
            ToolCall {
                id: c.id.unwrap_or_else(|| format!("call_{i}")),
                name: function.name.unwrap_or_default(),
                arguments: function.arguments.unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Structured output, as the client sent it (OpenAI and compatible servers read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a crate::types::ResponseFormat>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    /// Text, or text and image parts; `null` for an assistant turn that only calls tools.
    content: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

impl From<Message> for WireMessage {
    fn from(m: Message) -> Self {
        let tool_calls: Vec<serde_json::Value> = m
            .tool_calls
            .into_iter()
            .map(|c| serde_json::json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        let content = if m.images.is_empty() {
            (tool_calls.is_empty() || !m.content.is_empty()).then_some(serde_json::Value::String(m.content))
        } else {
            let mut parts = Vec::new();
            if !m.content.is_empty() {
                parts.push(serde_json::json!({"type": "text", "text": m.content}));
            }
            for image in m.images {
                let mut image_url = serde_json::json!({"url": image.url});
                if let Some(detail) = image.detail {
                    image_url["detail"] = detail.into();
                }
                parts.push(serde_json::json!({"type": "image_url", "image_url": image_url}));
            }
            Some(serde_json::Value::Array(parts))
        };
        WireMessage { role: role_name(m.role), content, tool_calls, tool_call_id: m.tool_call_id }
    }
}

/// A tool call in a response (`message.tool_calls[]`) or a fragment of one in a stream
/// (`delta.tool_calls[]`: `index`, then `id` and name first, argument text after).
#[derive(Deserialize)]
struct WireToolCallIn {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionIn>,
}

#[derive(Deserialize, Default)]
struct WireFunctionIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChoiceContent>,
    #[serde(default)]
    delta: Option<ChoiceContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceContent {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallIn>>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens }
    }
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
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
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, citations: false, model_discovery: self.discovery.configured().is_empty() }
    }

    fn default_model(&self) -> Option<String> {
        self.discovery.configured().first().cloned()
    }

    async fn infer(&self, call: ProviderCall) -> Result<InferenceResponse, ProviderError> {
        let request = self.post(&self.body(&call, false)).timeout(call.timeout);
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let body: ChatResponse = upstream::read_json(response, &call.ctx.cancel).await?;
        let choice = body.choices.into_iter().next().ok_or_else(|| ProviderError::InvalidResponse("no choices in the response".into()))?;
        let (output, tool_calls) = match choice.message {
            Some(m) => (m.content.unwrap_or_default(), calls_of(m.tool_calls.unwrap_or_default())),
            None => (String::new(), Vec::new()),
        };
        Ok(InferenceResponse {
            id: call.ctx.request_id.clone(),
            provider: self.name.clone(),
            model: body.model.unwrap_or(call.model),
            output,
            tool_calls,
            sources: Vec::new(),
            finish_reason: choice.finish_reason.as_deref().map(finish_reason).unwrap_or_default(),
            usage: body.usage.map(Usage::from).unwrap_or_default(),
            timings: Timings::default(),
        })
    }

    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        let request = self.post(&self.body(&call, true));
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let name = self.name.clone();
        Ok(Box::pin(async_stream::stream! {
            yield Ok(Event::status("generating", format!("{name} is answering")));
            let mut events = std::pin::pin!(upstream::sse_events(response));
            let mut finish = None;
            let mut usage = Usage::default();
            let mut saw_done = false;
            // Tool calls by the upstream's index: started ones, in order of appearance.
            let mut calls: Vec<u32> = Vec::new();
            while let Some(item) = events.next().await {
                let sse = match item {
                    Ok(sse) => sse,
                    Err(e) => { yield Err(e); return; }
                };
                if sse.data.trim() == "[DONE]" {
                    saw_done = true;
                    break;
                }
                let chunk: StreamChunk = match upstream::parse_chunk(&sse.data) {
                    Ok(c) => c,
                    Err(e) => { yield Err(e); return; }
                };
                if let Some(err) = chunk.error {
                    let detail = err.get("message").and_then(|m| m.as_str()).unwrap_or("error event").to_owned();
                    yield Err(ProviderError::Upstream { status: 500, detail });
                    return;
                }
                for choice in chunk.choices {
                    let Some(delta) = choice.delta else {
                        if let Some(reason) = choice.finish_reason { finish = Some(finish_reason(&reason)); }
                        continue;
                    };
                    if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                        yield Ok(Event::delta(text));
                    }
                    for (n, fragment) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                        let upstream_index = fragment.index.unwrap_or(n as u32);
                        let function = fragment.function.unwrap_or_default();
                        let index = match calls.iter().position(|i| *i == upstream_index) {
                            Some(i) => i as u32,
                            None => {
                                calls.push(upstream_index);
                                let index = (calls.len() - 1) as u32;
                                let id = fragment.id.unwrap_or_else(|| format!("call_{index}"));
                                yield Ok(Event::ToolCallStart { index, id, name: function.name.unwrap_or_default() });
                                index
                            }
                        };
                        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
                            yield Ok(Event::ToolCallDelta { index, arguments });
                        }
                    }
                    if let Some(reason) = choice.finish_reason {
                        finish = Some(finish_reason(&reason));
                    }
                }
                if let Some(u) = chunk.usage {
                    usage = u.into();
                }
            }
            // Some compatible servers omit `[DONE]`; a finish_reason also marks a complete answer.
            if !saw_done && finish.is_none() {
                yield Err(ProviderError::StreamInterrupted("the stream ended before `[DONE]`".into()));
                return;
            }
            yield Ok(Event::Done {
                finish_reason: finish.unwrap_or_default(),
                usage,
                timings: Timings::default(),
                provider: None,
                model: None,
            });
        }))
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        self.discovery.models(|| self.fetch_models()).await
    }

    async fn health(&self) -> Health {
        self.discovery.health(|| self.fetch_models()).await
    }
}
