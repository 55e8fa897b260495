//! The `local` provider: the in-process GraphRAG engine and the local LLM.
//!
//! Model `graphrag` answers from the knowledge base. Retrieval runs on tokio's blocking pool
//! (never on a worker thread); its stages arrive as status events ("Searching knowledge
//! graph", "Expanding 3 entities", "Ranking passages"), then, when a local LLM is installed,
//! the LLM's answer token by token, grounded in the numbered passages and citing them; without
//! one (or while it is busy) an extractive answer, with a status event that says so. Then the
//! sources, then `done`.
//!
//! Every installed LLM (`uag models list`) is also served by its id as a plain chat model.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::mpsc;
use uag_graphrag::answer::{Answer, Citation, GroundedPrompt, cited_indices, grounded_prompt};
use uag_graphrag::{Engine, EngineError, Progress, QueryOptions};
use uag_models::llm::{ChatMessage, FinishReason as LlmFinish, GenerationParams, Role as LlmRole};
use uag_models::manifest::{ModelEntry, ModelKind};
use uag_models::runtime::{LlmEvent, ModelRuntimes};

use super::{Capabilities, EventStream, Health, HealthStatus, Provider, ProviderCall};
use crate::config::{GraphRagConfig, ModelsConfig, ProviderKind};
use crate::error::ProviderError;
use crate::types::{Event, FinishReason, InferenceRequest, InferenceResponse, Role, Source, Timings, Usage};

/// The model name the local engine answers to.
pub const LOCAL_MODEL: &str = "graphrag";

#[derive(Debug, Clone, Copy)]
struct RagSettings {
    top_k: usize,
    passages: usize,
    passage_words: usize,
    max_tokens: usize,
}

pub struct LocalProvider {
    name: String,
    engine: Option<Arc<Engine>>,
    models: Option<Arc<ModelRuntimes>>,
    rag: RagSettings,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider").field("name", &self.name).field("engine", &self.engine.is_some()).finish_non_exhaustive()
    }
}

type EventTx = mpsc::Sender<Result<Event, ProviderError>>;

impl LocalProvider {
    /// `engine` is `None` where no knowledge base could be opened, `models` where no local
    /// model runtimes run (then `graphrag` answers extractively and LLM ids are unknown).
    pub fn new(
        name: impl Into<String>,
        engine: Option<Arc<Engine>>,
        models: Option<Arc<ModelRuntimes>>,
        graphrag: &GraphRagConfig,
        models_config: &ModelsConfig,
    ) -> Self {
        let rag = RagSettings {
            top_k: graphrag.top_k,
            passages: models_config.rag_passages,
            passage_words: models_config.rag_passage_words,
            max_tokens: models_config.llm_max_tokens,
        };
        Self { name: name.into(), engine, models, rag }
    }

    fn engine(&self) -> Result<Arc<Engine>, ProviderError> {
        self.engine.clone().ok_or_else(|| ProviderError::NotInstalled {
            what: "the local GraphRAG engine".into(),
            hint: "no knowledge base is open in this process".into(),
        })
    }

    fn question(request: &InferenceRequest) -> Result<String, ProviderError> {
        request.question().ok_or_else(|| ProviderError::Rejected { status: 400, message: "no user message to answer".into() })
    }

    /// The installed LLM `graphrag` writes with, if any.
    fn rag_llm(&self) -> Option<(Arc<ModelRuntimes>, ModelEntry)> {
        let models = self.models.clone()?;
        let entry = models.resolve(ModelKind::Llm, None).ok()?;
        Some((models, entry))
    }

    fn generation_params(&self, request: &InferenceRequest, default_temperature: f64) -> GenerationParams {
        let p = &request.params;
        GenerationParams {
            max_tokens: p.max_tokens.map_or(self.rag.max_tokens, |m| m as usize),
            temperature: p.temperature.map_or(default_temperature, f64::from),
            top_p: p.top_p.map(f64::from),
            seed: p.seed.unwrap_or(299_792_458),
            stop: p.stop.clone(),
            ..GenerationParams::default()
        }
    }

    fn rag_stream(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        let engine = self.engine()?;
        let question = Self::question(&call.request)?;
        // Only chunks of the collections the policy (and the request) allow are ranked at all.
        let options = QueryOptions { top_k: self.rag.top_k, collections: call.ctx.allowed_collections.clone(), ..QueryOptions::default() };
        let llm = self.rag_llm();
        // Grounded answers are factual: low temperature unless the client asks otherwise.
        let params = self.generation_params(&call.request, 0.2);
        let history = history(&call.request);
        // The voice pipeline passes the spoken language so the answer comes back in it.
        let language =
            call.request.metadata.get("language").and_then(|v| v.as_str()).filter(|l| *l != "en").map(crate::voice::language_name);
        let rag = self.rag;
        let (tx, rx) = mpsc::channel::<Result<Event, ProviderError>>(64);
        tokio::spawn(async move {
            let started = Instant::now();
            let progress_tx = tx.clone();
            let retrieved = tokio::task::spawn_blocking(move || {
                let mut progress = |p: Progress| {
                    if p.stage != "synthesizing" {
                        // A closed channel means the client left; the query is cheap, let it end.
                        let _ = progress_tx.blocking_send(Ok(Event::status(p.stage, p.message)));
                    }
                };
                engine.ask(&question, &options, &mut progress).map(|(retrieval, answer)| {
                    let mut prompt = grounded_prompt(&question, &retrieval, rag.passages, rag.passage_words);
                    if let Some(language) = language {
                        prompt.system.push_str(&format!("\nAnswer in {language}."));
                    }
                    (answer, prompt)
                })
            })
            .await;
            let (extractive, prompt) = match retrieved {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(engine_error(e))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(ProviderError::Internal(e.to_string()))).await;
                    return;
                }
            };
            let note = match llm {
                Some((models, entry)) if !prompt.citations.is_empty() => {
                    match write_with_llm(&models, &entry, prompt, history, params, &tx, started).await {
                        Ok(()) => return,
                        Err(note) => note,
                    }
                }
                Some(_) => "Synthesizing response (no passages found)".to_owned(),
                None => EXTRACTIVE_NOTE.to_owned(),
            };
            send_extractive(&tx, extractive, note, started).await;
        });
        Ok(receiver_stream(rx))
    }

    fn chat_stream(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        let models = self.models.clone().ok_or_else(|| ProviderError::ModelNotFound { model: call.model.clone() })?;
        let entry =
            models.resolve(ModelKind::Llm, Some(&call.model)).map_err(|_| ProviderError::ModelNotFound { model: call.model.clone() })?;
        if !entry.main_path(models.models_dir()).is_file() {
            return Err(entry.not_installed().into());
        }
        let messages: Vec<ChatMessage> = call
            .request
            .messages
            .iter()
            .map(|m| ChatMessage { role: llm_role(m.role), content: m.content.clone() })
            .chain(call.request.input.iter().map(|input| ChatMessage { role: LlmRole::User, content: input.clone() }))
            .collect();
        if messages.is_empty() {
            return Err(ProviderError::Rejected { status: 400, message: "no messages to answer".into() });
        }
        let params = self.generation_params(&call.request, 0.7);
        let mut events = models.chat_stream(&entry, messages, params)?;
        let (tx, rx) = mpsc::channel::<Result<Event, ProviderError>>(64);
        let started = Instant::now();
        tokio::spawn(async move {
            let mut first_token = None;
            while let Some(event) = events.recv().await {
                let out = match event {
                    LlmEvent::Text(text) => {
                        first_token.get_or_insert_with(|| started.elapsed());
                        Ok(Event::delta(text))
                    }
                    LlmEvent::Done(g) => Ok(done_event(&g, started, first_token)),
                    LlmEvent::Error(e) => Err(ProviderError::from(e)),
                };
                if tx.send(out).await.is_err() {
                    // The client left: dropping `events` stops generation at the next token.
                    return;
                }
            }
        });
        Ok(receiver_stream(rx))
    }
}

/// Streams the LLM's grounded answer; on a failure before the first token returns the note
/// for the extractive fallback instead.
async fn write_with_llm(
    models: &ModelRuntimes,
    entry: &ModelEntry,
    prompt: GroundedPrompt,
    history: Vec<ChatMessage>,
    params: GenerationParams,
    tx: &EventTx,
    started: Instant,
) -> Result<(), String> {
    let mut messages = vec![ChatMessage { role: LlmRole::System, content: prompt.system }];
    messages.extend(history);
    messages.push(ChatMessage { role: LlmRole::User, content: prompt.user });
    let mut events = match models.chat_stream(entry, messages, params) {
        Ok(events) => events,
        Err(e) => return Err(format!("Synthesizing response (the local LLM is unavailable: {e}; answering with extracted sentences)")),
    };
    let _ = tx.send(Ok(Event::status("synthesizing", format!("Synthesizing response with {}", entry.id)))).await;
    let mut text = String::new();
    let mut first_token = None;
    while let Some(event) = events.recv().await {
        match event {
            LlmEvent::Text(piece) => {
                first_token.get_or_insert_with(|| started.elapsed());
                text.push_str(&piece);
                if tx.send(Ok(Event::delta(piece))).await.is_err() {
                    return Ok(());
                }
            }
            LlmEvent::Done(g) => {
                let _ = tx.send(Ok(Event::Sources { sources: cited_sources(&text, &prompt.citations) })).await;
                let _ = tx.send(Ok(done_event(&g, started, first_token))).await;
                return Ok(());
            }
            LlmEvent::Error(e) if text.is_empty() => {
                return Err(format!("Synthesizing response (the local LLM failed: {e}; answering with extracted sentences)"));
            }
            LlmEvent::Error(e) => {
                let _ = tx.send(Err(ProviderError::from(e))).await;
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn send_extractive(tx: &EventTx, answer: Answer, note: String, started: Instant) {
    let _ = tx.send(Ok(Event::status("synthesizing", note))).await;
    for piece in pieces(&answer.text) {
        if tx.send(Ok(Event::delta(piece))).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Ok(Event::Sources { sources: sources(&answer) })).await;
    let _ = tx
        .send(Ok(Event::Done {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: Timings { total_ms: started.elapsed().as_secs_f64() * 1000.0, time_to_first_token_ms: None },
            provider: None,
            model: None,
        }))
        .await;
}

fn done_event(g: &uag_models::llm::Generation, started: Instant, first_token: Option<std::time::Duration>) -> Event {
    Event::Done {
        finish_reason: match g.finish_reason {
            LlmFinish::Stop | LlmFinish::Cancelled => FinishReason::Stop,
            LlmFinish::Length => FinishReason::Length,
        },
        usage: Usage { input_tokens: g.prompt_tokens as u32, output_tokens: g.completion_tokens as u32 },
        timings: Timings {
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
            time_to_first_token_ms: first_token.map(|d| d.as_secs_f64() * 1000.0),
        },
        provider: None,
        model: None,
    }
}

/// Earlier turns of the conversation (without the question itself), most recent last; a
/// short memory so follow-up questions make sense without crowding out the passages.
fn history(request: &InferenceRequest) -> Vec<ChatMessage> {
    let mut turns: Vec<ChatMessage> = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| ChatMessage { role: llm_role(m.role), content: m.content.clone() })
        .collect();
    if request.input.is_none() {
        // The last user message is the question; it goes in with the passages.
        if let Some(pos) = turns.iter().rposition(|m| m.role == LlmRole::User) {
            turns.truncate(pos);
        }
    }
    let keep = turns.len().saturating_sub(4);
    turns.split_off(keep)
}

fn llm_role(role: Role) -> LlmRole {
    match role {
        Role::System => LlmRole::System,
        Role::User => LlmRole::User,
        Role::Assistant => LlmRole::Assistant,
    }
}

fn receiver_stream(mut rx: mpsc::Receiver<Result<Event, ProviderError>>) -> EventStream {
    Box::pin(async_stream::stream! {
        while let Some(item) = rx.recv().await {
            yield item;
        }
    })
}

fn engine_error(e: EngineError) -> ProviderError {
    ProviderError::Internal(e.to_string())
}

fn citation_source(c: &Citation) -> Source {
    Source {
        index: c.index,
        document: c.document.clone(),
        section: c.section.clone(),
        snippet: Some(c.snippet.clone()),
        score: Some(c.score),
    }
}

pub(crate) fn sources(answer: &Answer) -> Vec<Source> {
    answer.citations.iter().map(citation_source).collect()
}

/// The passages the LLM cited, in the numbering of its text; all of them if it cited none
/// (the answer still came from them).
fn cited_sources(text: &str, citations: &[Citation]) -> Vec<Source> {
    let cited = cited_indices(text, citations.len());
    if cited.is_empty() {
        return citations.iter().map(citation_source).collect();
    }
    citations.iter().filter(|c| cited.contains(&c.index)).map(citation_source).collect()
}

/// The answer split into streamable pieces: one per cited sentence.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find("] ") {
        out.push(rest[..end + 2].to_owned());
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

const EXTRACTIVE_NOTE: &str = "Synthesizing response (no local LLM installed: answering with extracted sentences; \
`uag models fetch smollm2-135m-instruct` installs one)";

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, citations: true, model_discovery: false }
    }

    fn default_model(&self) -> Option<String> {
        Some(LOCAL_MODEL.into())
    }

    async fn infer(&self, call: ProviderCall) -> Result<InferenceResponse, ProviderError> {
        use futures::StreamExt;
        let id = call.ctx.request_id.clone();
        let model = call.model.clone();
        let mut stream = self.stream_infer(call).await?;
        let mut response = InferenceResponse {
            id,
            provider: self.name.clone(),
            model,
            output: String::new(),
            sources: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: Timings::default(),
        };
        while let Some(event) = stream.next().await {
            match event? {
                Event::Delta { text } => response.output.push_str(&text),
                Event::Sources { sources } => response.sources = sources,
                Event::Done { finish_reason, usage, timings, .. } => {
                    response.finish_reason = finish_reason;
                    response.usage = usage;
                    response.timings = timings;
                }
                _ => {}
            }
        }
        Ok(response)
    }

    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        if call.model == LOCAL_MODEL { self.rag_stream(call) } else { self.chat_stream(call) }
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        let mut models = vec![LOCAL_MODEL.to_owned()];
        if let Some(runtimes) = &self.models {
            let dir = runtimes.models_dir();
            models.extend(
                runtimes.manifest().models.iter().filter(|m| m.kind == ModelKind::Llm && m.main_path(dir).is_file()).map(|m| m.id.clone()),
            );
        }
        Ok(models)
    }

    async fn health(&self) -> Health {
        match &self.engine {
            Some(engine) => {
                let stats = engine.stats();
                let llm = self.rag_llm().map_or_else(|| "no local LLM (extractive answers)".to_owned(), |(_, e)| format!("LLM {}", e.id));
                Health {
                    status: HealthStatus::Ok,
                    detail: Some(format!("{} documents, {} chunks, {} entities; {llm}", stats.documents, stats.chunks, stats.entities)),
                }
            }
            None => Health { status: HealthStatus::NotInstalled, detail: Some("no knowledge base is open".into()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_stream_one_cited_sentence_at_a_time() {
        assert_eq!(pieces("A b. [1] C d. [2]"), vec!["A b. [1] ", "C d. [2]"]);
        assert_eq!(pieces("nothing found"), vec!["nothing found"]);
    }
}
