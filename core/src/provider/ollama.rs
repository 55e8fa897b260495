//! Ollama (`POST {base}/api/chat`): one JSON object per line when streaming (NDJSON; a line can
//! arrive split across network chunks), the last with `"done": true` and token counts.

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::openai::{PROBE_TIMEOUT, finish_reason, role_name, wire_tools};
use super::upstream::{self, Discovery};
use super::{Capabilities, EventStream, Health, Provider, ProviderCall};
use crate::config::{ProviderKind, RemoteProviderConfig, SecretString};
use crate::error::ProviderError;
use crate::types::{Event, FinishReason, InferenceResponse, Message, Timings, ToolCall, ToolChoice, Usage};

#[derive(Debug)]
pub struct OllamaProvider {
    name: String,
    base_url: String,
    /// Ollama has no auth of its own; a key is sent as a bearer token for proxies in front of it.
    api_key: Option<SecretString>,
    client: reqwest::Client,
    discovery: Discovery,
    forward_identity: bool,
}

impl OllamaProvider {
    pub fn new(config: &RemoteProviderConfig, base_url: String, api_key: Option<SecretString>, client: reqwest::Client) -> Self {
        Self {
            name: config.name.clone(),
            base_url,
            api_key,
            client,
            discovery: Discovery::new(config.models.clone()),
            forward_identity: config.forward_identity,
        }
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        }
    }

    /// Ollama has no `tool_choice`: the model always decides. A request that needs a call is
    /// refused rather than answered without one. Ollama takes images as base64 only; uag does
    /// not fetch URLs for it (an appliance's gateway reaching out to arbitrary hosts is a risk).
    fn refuse_what_ollama_cannot_take(&self, call: &ProviderCall) -> Result<(), ProviderError> {
        if call.request.messages.iter().flat_map(|m| &m.images).any(|i| i.inline().is_none()) {
            return Err(ProviderError::Unsupported {
                provider: self.name.clone(),
                param: "images",
                hint: "Ollama takes images as data (a `data:image/...;base64,` URI), not URLs; send the image itself".into(),
            });
        }
        match call.request.tool_choice {
            Some(ToolChoice::Required | ToolChoice::Tool { .. }) => Err(ProviderError::Unsupported {
                provider: self.name.clone(),
                param: "tool_choice",
                hint: "Ollama lets the model decide whether to call a tool; use `auto`, or route the request to an OpenAI or Anthropic provider".into(),
            }),
            _ => Ok(()),
        }
    }

    fn chat(&self, call: &ProviderCall, stream: bool) -> reqwest::RequestBuilder {
        let p = &call.request.params;
        let conversation = call.request.conversation();
        // Ollama names the tool of a result (`tool_name`), not the call: found by the call's id.
        let tool_of = |id: &str| conversation.iter().flat_map(|m| &m.tool_calls).find(|c| c.id == id).map(|c| c.name.clone());
        let messages = conversation.iter().map(|m| WireMessage::new(m, &tool_of)).collect();
        let offers_tools = call.request.tool_choice != Some(ToolChoice::None);
        let body = ChatRequest {
            model: &call.model,
            messages,
            tools: if offers_tools { wire_tools(&call.request.tools) } else { Vec::new() },
            stream,
            format: p.response_format.as_ref().map(crate::types::ResponseFormat::ollama_format),
            options: Options { num_predict: p.max_tokens, temperature: p.temperature, top_p: p.top_p, stop: &p.stop, seed: p.seed },
        };
        let mut builder = self.authorized(self.client.post(format!("{}/api/chat", self.base_url))).json(&body);
        if let Some(identity) = call.ctx.identity.as_ref().filter(|_| self.forward_identity) {
            builder = builder.header("x-uag-user", identity.subject.as_str());
        }
        builder
    }

    /// The body of the request [`Self::chat`] builds (`None` when reqwest refuses to build it);
    /// for the fuzz targets in `fuzz/`, not an API.
    #[doc(hidden)]
    pub fn fuzz_request_body(&self, call: &ProviderCall, stream: bool) -> Option<Vec<u8>> {
        let request = self.chat(call, stream).build().ok()?;
        request.body()?.as_bytes().map(<[u8]>::to_vec)
    }

    async fn fetch_models(&self) -> Result<Vec<String>, ProviderError> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let request = self.authorized(self.client.get(format!("{}/api/tags", self.base_url))).timeout(PROBE_TIMEOUT);
        let response = upstream::send(request, PROBE_TIMEOUT, &cancel, "").await?;
        let tags: Tags = upstream::read_json(response, &cancel).await?;
        Ok(tags.models.into_iter().map(|m| m.name).collect())
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
    stream: bool,
    /// Structured output: `"json"` or a JSON schema (Ollama 0.5+).
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<serde_json::Value>,
    options: Options<'a>,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: String,
    /// Ollama's arguments are an object, not JSON text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<String>,
    /// Base64 images (no `data:` prefix).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<String>,
}

impl WireMessage {
    fn new(m: &Message, tool_of: &dyn Fn(&str) -> Option<String>) -> Self {
        let tool_calls = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = c.arguments_object().unwrap_or_else(|| serde_json::json!({}));
                serde_json::json!({"function": {"name": c.name, "arguments": arguments}})
            })
            .collect();
        WireMessage {
            role: role_name(m.role),
            content: m.content.clone(),
            tool_calls,
            tool_name: m.tool_call_id.as_deref().and_then(tool_of),
            images: m.images.iter().filter_map(|i| i.inline()).map(|(_, data)| data.to_owned()).collect(),
        }
    }
}

#[derive(Serialize)]
struct Options<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

/// A `/api/chat` answer, whole or one streamed line.
#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
    #[serde(default)]
    error: Option<String>,
}

impl ChatChunk {
    fn usage(&self) -> Usage {
        Usage { input_tokens: self.prompt_eval_count.unwrap_or(0), output_tokens: self.eval_count.unwrap_or(0) }
    }
    fn finish(&self) -> FinishReason {
        self.done_reason.as_deref().map(finish_reason).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: String,
    /// Whole calls (Ollama streams a call in one line, never in pieces).
    #[serde(default)]
    tool_calls: Vec<WireToolCallIn>,
}

#[derive(Deserialize)]
struct WireToolCallIn {
    #[serde(default)]
    id: Option<String>,
    function: WireFunctionIn,
}

#[derive(Deserialize)]
struct WireFunctionIn {
    name: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

impl WireToolCallIn {
    /// Older Ollama versions give no call id: one is made from the request id and the call's
    /// number, so the client can match its result to the call.
    fn into_call(self, request_id: &str, n: usize) -> ToolCall {
        let arguments = match self.function.arguments {
            serde_json::Value::Null => "{}".to_owned(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        ToolCall { id: self.id.unwrap_or_else(|| format!("call_{request_id}_{n}")), name: self.function.name, arguments }
    }
}

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagEntry>,
}

#[derive(Deserialize)]
struct TagEntry {
    name: String,
}

#[async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Ollama
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, citations: false, model_discovery: self.discovery.configured().is_empty() }
    }

    fn default_model(&self) -> Option<String> {
        self.discovery.configured().first().cloned()
    }

    async fn infer(&self, call: ProviderCall) -> Result<InferenceResponse, ProviderError> {
        self.refuse_what_ollama_cannot_take(&call)?;
        let request = self.chat(&call, false).timeout(call.timeout);
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let body: ChatChunk = upstream::read_json(response, &call.ctx.cancel).await?;
        let (usage, mut finish_reason) = (body.usage(), body.finish());
        if let Some(error) = body.error {
            return Err(ProviderError::Upstream { status: 500, detail: error });
        }
        let (output, tool_calls) = match body.message {
            Some(m) => {
                let calls: Vec<ToolCall> =
                    m.tool_calls.into_iter().enumerate().map(|(n, c)| c.into_call(&call.ctx.request_id, n)).collect();
                (m.content, calls)
            }
            None => (String::new(), Vec::new()),
        };
        // Ollama says `stop` after a tool call.
        if !tool_calls.is_empty() && finish_reason == FinishReason::Stop {
            finish_reason = FinishReason::ToolCalls;
        }
        Ok(InferenceResponse {
            id: call.ctx.request_id.clone(),
            provider: self.name.clone(),
            usage,
            finish_reason,
            model: body.model.unwrap_or(call.model),
            output,
            tool_calls,
            sources: Vec::new(),
            timings: Timings::default(),
        })
    }

    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        self.refuse_what_ollama_cannot_take(&call)?;
        let request = self.chat(&call, true);
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let name = self.name.clone();
        let request_id = call.ctx.request_id.clone();
        Ok(Box::pin(async_stream::stream! {
            yield Ok(Event::status("generating", format!("{name} is answering")));
            let mut lines = std::pin::pin!(upstream::ndjson_lines(response));
            let mut calls = 0u32;
            while let Some(line) = lines.next().await {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => { yield Err(e); return; }
                };
                let chunk: ChatChunk = match upstream::parse_chunk(&line) {
                    Ok(c) => c,
                    Err(e) => { yield Err(e); return; }
                };
                let (usage, finish) = (chunk.usage(), chunk.finish());
                if let Some(error) = chunk.error {
                    yield Err(ProviderError::Upstream { status: 500, detail: error });
                    return;
                }
                if let Some(message) = chunk.message {
                    if !message.content.is_empty() {
                        yield Ok(Event::delta(message.content));
                    }
                    for wire in message.tool_calls {
                        for event in Event::tool_call(calls, wire.into_call(&request_id, calls as usize)) {
                            yield Ok(event);
                        }
                        calls += 1;
                    }
                }
                if chunk.done {
                    yield Ok(Event::Done {
                        finish_reason: if calls > 0 && finish == FinishReason::Stop { FinishReason::ToolCalls } else { finish },
                        usage,
                        timings: Timings::default(),
                        provider: None,
                        model: None,
                    });
                    return;
                }
            }
            yield Err(ProviderError::StreamInterrupted("the stream ended before `\"done\": true`".into()));
        }))
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        self.discovery.models(|| self.fetch_models()).await
    }

    async fn health(&self) -> Health {
        self.discovery.health(|| self.fetch_models()).await
    }
}
