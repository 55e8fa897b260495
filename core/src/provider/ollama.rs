//! Ollama (`POST {base}/api/chat`): one JSON object per line when streaming (NDJSON; a line can
//! arrive split across network chunks), the last with `"done": true` and token counts.

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::openai::{PROBE_TIMEOUT, finish_reason, role_name};
use super::upstream::{self, Discovery};
use super::{Capabilities, EventStream, Health, Provider, ProviderCall};
use crate::config::{ProviderKind, RemoteProviderConfig, SecretString};
use crate::error::ProviderError;
use crate::types::{Event, FinishReason, InferenceResponse, Timings, Usage};

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

    fn chat(&self, call: &ProviderCall, stream: bool) -> reqwest::RequestBuilder {
        let p = &call.request.params;
        let body = ChatRequest {
            model: &call.model,
            messages: call
                .request
                .conversation()
                .into_iter()
                .map(|m| WireMessage { role: role_name(m.role), content: m.content })
                .collect(),
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
        let request = self.chat(&call, false).timeout(call.timeout);
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let body: ChatChunk = upstream::read_json(response, &call.ctx.cancel).await?;
        if let Some(error) = body.error {
            return Err(ProviderError::Upstream { status: 500, detail: error });
        }
        Ok(InferenceResponse {
            id: call.ctx.request_id.clone(),
            provider: self.name.clone(),
            usage: body.usage(),
            finish_reason: body.finish(),
            model: body.model.unwrap_or(call.model),
            output: body.message.map(|m| m.content).unwrap_or_default(),
            sources: Vec::new(),
            timings: Timings::default(),
        })
    }

    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        let request = self.chat(&call, true);
        let response = upstream::send(request, call.timeout, &call.ctx.cancel, &call.model).await?;
        let name = self.name.clone();
        Ok(Box::pin(async_stream::stream! {
            yield Ok(Event::status("generating", format!("{name} is answering")));
            let mut lines = std::pin::pin!(upstream::ndjson_lines(response));
            while let Some(line) = lines.next().await {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => { yield Err(e); return; }
                };
                let chunk: ChatChunk = match upstream::parse_chunk(&line) {
                    Ok(c) => c,
                    Err(e) => { yield Err(e); return; }
                };
                if let Some(error) = chunk.error {
                    yield Err(ProviderError::Upstream { status: 500, detail: error });
                    return;
                }
                if let Some(text) = chunk.message.as_ref().map(|m| m.content.as_str()).filter(|t| !t.is_empty()) {
                    yield Ok(Event::delta(text));
                }
                if chunk.done {
                    yield Ok(Event::Done {
                        finish_reason: chunk.finish(),
                        usage: chunk.usage(),
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
