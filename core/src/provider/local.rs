//! The `local` provider: the in-process GraphRAG engine and the local LLM.
//!
//! Model `graphrag` answers from the knowledge base. Retrieval runs on tokio's blocking pool
//! (never on a worker thread); its stages arrive as status events ("Searching knowledge
//! graph", "Expanding 3 entities", "Ranking passages"), then, when a local LLM is installed,
//! the LLM's answer token by token, grounded in the numbered passages and citing them; without
//! one (or while it is busy) an extractive answer, with a status event that says so. Then the
//! sources, then `done`.
//!
//! The LLM writes only from evidence (the sentences of the passages that answer the
//! question), and every sentence it writes is checked against that evidence before it goes
//! out ([`uag_graphrag::verify`]): a sentence with an invented path, option or fact is
//! dropped, a repetition ends the answer, and an answer with nothing left is replaced by the
//! extractive one, with a status event that says so. What is streamed, cached and spoken is
//! only what passed.
//!
//! Every installed LLM (`uag models list`) is also served by its id as a plain chat model.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::mpsc;
use uag_graphrag::answer::{Answer, Citation, GroundedPrompt, cited_indices, grounded_prompt, synthesize_capped};
use uag_graphrag::verify::{self, Evidence};
use uag_graphrag::{Engine, EngineError, Progress, QueryOptions};
use uag_models::llm::{ChatMessage, FinishReason as LlmFinish, GenerationParams, Role as LlmRole};
use uag_models::manifest::{ModelEntry, ModelKind};
use uag_models::runtime::{LlmEvent, ModelRuntimes};

use super::{Capabilities, EventStream, Health, HealthStatus, Provider, ProviderCall};
use crate::config::{AnswerWriter, GraphRagConfig, ModelsConfig, ProviderKind};
use crate::error::ProviderError;
use crate::types::{Event, FinishReason, InferenceRequest, InferenceResponse, ResponseFormat, Role, Source, Timings, Usage};

/// The model name the local engine answers to.
pub const LOCAL_MODEL: &str = "graphrag";

#[derive(Debug, Clone, Copy)]
struct RagSettings {
    top_k: usize,
    evidence_sentences: usize,
    evidence_words: usize,
    max_tokens: usize,
}

/// How long a grounded answer may be, by where it goes: a spoken answer cannot be skimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerCaps {
    pub sentences: usize,
    pub words: usize,
}

impl AnswerCaps {
    /// Voice: at most two sentences. Text: at most four, about 100 words (the extractive
    /// answer's budget, measured in docs/EVALUATION.md).
    pub fn for_request(request: &InferenceRequest) -> Self {
        match request.options().channel {
            crate::types::Channel::Voice => Self { sentences: 2, words: 50 },
            crate::types::Channel::Text => Self { sentences: 4, words: 120 },
        }
    }
}

pub struct LocalProvider {
    name: String,
    engine: Option<Arc<Engine>>,
    models: Option<Arc<ModelRuntimes>>,
    rag: RagSettings,
    writer: AnswerWriter,
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
            evidence_sentences: models_config.rag_evidence_sentences,
            evidence_words: models_config.rag_evidence_words,
            max_tokens: models_config.llm_max_tokens,
        };
        Self { name: name.into(), engine, models, rag, writer: graphrag.answers }
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

    /// The installed LLM `graphrag` writes with, if `[graphrag] answers = "llm"` and one is.
    fn rag_llm(&self) -> Option<(Arc<ModelRuntimes>, ModelEntry)> {
        if self.writer != AnswerWriter::Llm {
            return None;
        }
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
        let with_llm = llm.is_some();
        // Grounded answers are factual: low temperature unless the client asks otherwise.
        let params = self.generation_params(&call.request, 0.2);
        let history = history(&call.request);
        let caps = AnswerCaps::for_request(&call.request);
        let writer = self.writer;
        // The voice pipeline passes the spoken language so the answer comes back in it.
        let language = call.request.options().language.filter(|l| l != "en").map(|l| crate::types::language_name(&l));
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
                engine.retrieve(&question, &options, &mut progress).map(|retrieval| {
                    let answer = synthesize_capped(&question, &retrieval, caps.sentences, caps.words);
                    // The prompt is only built for an LLM that will read it.
                    let prompt = with_llm.then(|| {
                        let mut prompt = grounded_prompt(&question, &retrieval, rag.evidence_sentences, rag.evidence_words);
                        if let Some(language) = language {
                            prompt.system.push_str(&format!("\nAnswer in {language}."));
                        }
                        prompt
                    });
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
            let note = match (llm, prompt) {
                (Some((models, entry)), Some(prompt)) if !prompt.citations.is_empty() => {
                    let writer = LlmWriter { models: &models, entry: &entry, history, params, caps, tx: &tx, started };
                    match writer.write(prompt).await {
                        Ok(()) => return,
                        Err(fallback) => fallback,
                    }
                }
                (Some(_), _) => Fallback::note("Synthesizing response (the knowledge base does not answer this)"),
                (None, _) if writer == AnswerWriter::Extractive => Fallback::note("Synthesizing response from the passages"),
                (None, _) => Fallback::note(EXTRACTIVE_NOTE),
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
        let mut params = self.generation_params(&call.request, 0.7);
        params.json_object = call.request.params.response_format == Some(ResponseFormat::JsonObject);
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

/// Writes the grounded answer with the local LLM, verifying each sentence before it is sent.
struct LlmWriter<'a> {
    models: &'a ModelRuntimes,
    entry: &'a ModelEntry,
    history: Vec<ChatMessage>,
    params: GenerationParams,
    caps: AnswerCaps,
    tx: &'a EventTx,
    started: Instant,
}

/// What the writer decided about one finished sentence of the model's text.
enum Step {
    Send(String),
    Skip,
    /// Degeneration or a cap reached: generation stops here.
    Stop,
}

/// The verifier's running state over one answer.
struct Checked {
    evidence: Evidence,
    caps: AnswerCaps,
    kept: Vec<String>,
    words: usize,
    dropped: usize,
    in_code: bool,
    last_was_code: bool,
    /// A sentence that ends with a colon, waiting for what it announces.
    held: Option<String>,
}

impl Checked {
    fn new(evidence: Evidence, caps: AnswerCaps) -> Self {
        Self { evidence, caps, kept: Vec::new(), words: 0, dropped: 0, in_code: false, last_was_code: false, held: None }
    }

    fn step(&mut self, sentence: &str) -> Step {
        let line = sentence.trim();
        if line.starts_with("```") {
            self.in_code = !self.in_code;
            return Step::Skip;
        }
        if self.in_code {
            if !self.evidence.holds_listing_line(line) {
                self.dropped += 1;
                return Step::Skip;
            }
        } else {
            let body = verify::strip_citations(line);
            if body.split_whitespace().count() < 2 || !verify::says_something(&body) {
                // A bare "[1]", a heading fragment or "Here's how you can do it:" says nothing.
                return Step::Skip;
            }
            if verify::repeats(&self.kept, line) {
                return Step::Stop;
            }
            if let Some(why) = self.evidence.check(line) {
                tracing::debug!(%why, sentence = line, "dropped an unsupported sentence of the LLM's answer");
                self.dropped += 1;
                return Step::Skip;
            }
        }
        if !self.in_code && line.ends_with(':') {
            // "To do so, run:" goes out only with what it announces, once that passed too.
            self.held = Some(line.to_owned());
            return Step::Skip;
        }
        let mut piece = String::new();
        if let Some(held) = self.held.take() {
            piece.push_str(&self.emit(&held, false));
        }
        piece.push_str(&self.emit(line, self.in_code));
        Step::Send(piece)
    }

    /// Records a sentence (or listing line) as sent; the text to send, with its separator.
    fn emit(&mut self, line: &str, code: bool) -> String {
        self.words += line.split_whitespace().count();
        // Listing lines stay lines; sentences run on.
        let separator = match (self.kept.is_empty(), code || self.last_was_code) {
            (true, _) => "",
            (false, true) => "\n",
            (false, false) => " ",
        };
        self.last_was_code = code;
        self.kept.push(line.to_owned());
        format!("{separator}{line}")
    }

    fn full(&self) -> bool {
        self.kept.len() >= self.caps.sentences || self.words >= self.caps.words
    }
}

impl LlmWriter<'_> {
    /// Streams the verified answer; returns the note for the extractive fallback instead
    /// when the LLM fails before writing, or when none of what it wrote is supported.
    async fn write(self, prompt: GroundedPrompt) -> Result<(), Fallback> {
        let mut messages = vec![ChatMessage { role: LlmRole::System, content: prompt.system }];
        messages.extend(self.history);
        messages.push(ChatMessage { role: LlmRole::User, content: prompt.user.clone() });
        let mut events = match self.models.chat_stream(self.entry, messages, self.params) {
            Ok(events) => events,
            Err(e) => {
                return Err(Fallback::note(&format!(
                    "Synthesizing response (the local LLM is unavailable: {e}; answering with extracted sentences)"
                )));
            }
        };
        let tx = self.tx;
        let _ = tx.send(Ok(Event::status("synthesizing", format!("Synthesizing response with {}", self.entry.id)))).await;
        let mut checked = Checked::new(Evidence::new(prompt.evidence.iter().map(String::as_str), &prompt.user), self.caps);
        let mut buffer = String::new();
        let mut first_text = None;
        let mut generation = None;
        // Tokens written, for the usage of an answer stopped before the model finished.
        let mut pieces = 0u32;
        'read: while let Some(event) = events.recv().await {
            let finished = match event {
                LlmEvent::Text(piece) => {
                    pieces += 1;
                    buffer.push_str(&piece);
                    let (done, rest) = verify::split_finished(&buffer);
                    buffer = rest;
                    done
                }
                LlmEvent::Done(g) => {
                    generation = Some(g);
                    vec![std::mem::take(&mut buffer)]
                }
                LlmEvent::Error(e) if checked.kept.is_empty() => {
                    return Err(Fallback::note(&format!(
                        "Synthesizing response (the local LLM failed: {e}; answering with extracted sentences)"
                    )));
                }
                LlmEvent::Error(e) => {
                    let _ = tx.send(Err(ProviderError::from(e))).await;
                    return Ok(());
                }
            };
            for sentence in finished.iter().filter(|s| !s.trim().is_empty()) {
                match checked.step(sentence) {
                    Step::Send(piece) => {
                        first_text.get_or_insert_with(|| self.started.elapsed());
                        if tx.send(Ok(Event::delta(piece))).await.is_err() {
                            return Ok(());
                        }
                        if checked.full() {
                            // Dropping `events` below stops generation at the next token.
                            break 'read;
                        }
                    }
                    Step::Skip => {}
                    Step::Stop => break 'read,
                }
            }
        }
        drop(events);
        let usage = match &generation {
            Some(g) => Usage { input_tokens: g.prompt_tokens as u32, output_tokens: g.completion_tokens as u32 },
            None => Usage { input_tokens: 0, output_tokens: pieces },
        };
        if checked.kept.is_empty() {
            return Err(Fallback {
                note: format!(
                    "Synthesizing response (the local LLM's answer was not supported by the passages ({} sentences dropped); \
answering with extracted sentences)",
                    checked.dropped
                ),
                usage,
            });
        }
        if checked.dropped > 0 {
            let _ = tx
                .send(Ok(Event::status("verifying", format!("Left out {} sentences the passages do not support", checked.dropped))))
                .await;
        }
        let text = checked.kept.join(" ");
        let _ = tx.send(Ok(Event::Sources { sources: cited_sources(&text, &prompt.citations) })).await;
        let finish_reason = match generation.as_ref().map(|g| g.finish_reason) {
            Some(LlmFinish::Length) => FinishReason::Length,
            // Stopped at a cap or a repetition: the answer is complete as sent.
            Some(LlmFinish::Stop | LlmFinish::Cancelled) | None => FinishReason::Stop,
        };
        let _ = tx
            .send(Ok(Event::Done {
                finish_reason,
                usage,
                timings: Timings {
                    total_ms: self.started.elapsed().as_secs_f64() * 1000.0,
                    time_to_first_token_ms: first_text.map(|d| d.as_secs_f64() * 1000.0),
                },
                provider: None,
                model: None,
            }))
            .await;
        Ok(())
    }
}

/// Why the extractive answer is sent, and the tokens an LLM spent before it was given up.
struct Fallback {
    note: String,
    usage: Usage,
}

impl Fallback {
    fn note(note: &str) -> Self {
        Self { note: note.to_owned(), usage: Usage::default() }
    }
}

async fn send_extractive(tx: &EventTx, answer: Answer, fallback: Fallback, started: Instant) {
    let _ = tx.send(Ok(Event::status("synthesizing", fallback.note))).await;
    for piece in pieces(&answer.text) {
        if tx.send(Ok(Event::delta(piece))).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Ok(Event::Sources { sources: sources(&answer) })).await;
    let _ = tx
        .send(Ok(Event::Done {
            finish_reason: FinishReason::Stop,
            usage: fallback.usage,
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
        // Requests with tool results are refused before a prompt is built (`stream_infer`).
        Role::User | Role::Tool => LlmRole::User,
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
            tool_calls: Vec::new(),
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
        // JSON mode is constrained decoding on the local chat models (only tokens that keep
        // the reply a JSON object are sampled); a schema is not enforced, and knowledge-base
        // answers are cited prose: refused rather than answered in free text.
        let refused_format = match &call.request.params.response_format {
            None => None,
            Some(_) if call.model == LOCAL_MODEL => Some(
                "knowledge-base answers are prose with citations; ask a local chat model (`local/<model>`) for a JSON object, or route the request to an OpenAI, OpenAI-compatible, Anthropic (schemas) or Ollama provider",
            ),
            Some(ResponseFormat::JsonObject) => None,
            Some(ResponseFormat::JsonSchema { .. }) => Some(
                "the local models can promise a JSON object (`json_object`), not a schema; route the request to an OpenAI, OpenAI-compatible, Anthropic or Ollama provider",
            ),
        };
        if let Some(hint) = refused_format {
            return Err(ProviderError::Unsupported { provider: self.name.clone(), param: "response_format", hint: hint.into() });
        }
        if call.request.uses_tools() {
            // The local models have no tool-calling template wired in: refused, never answered
            // as if the tools were not there.
            return Err(ProviderError::Unsupported {
                provider: self.name.clone(),
                param: "tools",
                hint: "the local models do not call tools; route the request to an OpenAI, OpenAI-compatible, Anthropic or Ollama provider (their models are listed by GET /v1/models)".into(),
            });
        }
        if call.request.has_images() {
            return Err(ProviderError::Unsupported {
                provider: self.name.clone(),
                param: "images",
                hint: "the local models cannot see images; route the request to a vision model on an OpenAI, OpenAI-compatible, Anthropic or Ollama provider".into(),
            });
        }
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
                let llm = match self.rag_llm() {
                    Some((_, e)) => format!("answers written by {} and verified", e.id),
                    None if self.writer == AnswerWriter::Extractive => "extractive answers".to_owned(),
                    None => "no local LLM (extractive answers)".to_owned(),
                };
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

    /// Section 9.1.1 of the Debian Administrator's Handbook, as the knowledge base holds it.
    const JOURNAL_PASSAGE: &str = "The messages can be displayed later on, with a little help from the journalctl command. \
        Without any arguments, it simply spews all log messages that occurred since system boot; it will rarely be used in \
        such a manner. Most of the time, it will be used with a service identifier: # journalctl -u ssh.service -- Logs \
        begin at Tue 2015-03-31 10:08:49 CEST, end at Tue 2015-03-31 17:06:02 CEST. -- Mar 31 10:08:55 mirtuel \
        sshd[430]: Server listening on 0.0.0.0 port 22. Another useful command-line flag is -f , which instructs \
        journalctl to keep displaying new messages as they are emitted (much in the manner of tail -f file ).";

    /// Runs streamed model text through the verifier as the writer does; what would be sent.
    fn verified(pieces: &[&str], caps: AnswerCaps) -> (Vec<String>, usize) {
        let question = "How do I read the logs of a systemd service?";
        let mut checked = Checked::new(Evidence::new([JOURNAL_PASSAGE], question), caps);
        let mut sent = Vec::new();
        let mut buffer = String::new();
        let mut chunks: Vec<Vec<String>> = pieces
            .iter()
            .map(|p| {
                buffer.push_str(p);
                let (done, rest) = verify::split_finished(&buffer);
                buffer = rest;
                done
            })
            .collect();
        chunks.push(vec![buffer]);
        'all: for sentence in chunks.iter().flatten().filter(|s| !s.trim().is_empty()) {
            match checked.step(sentence) {
                Step::Send(text) => {
                    sent.push(text.trim().to_owned());
                    if checked.full() {
                        break 'all;
                    }
                }
                Step::Skip => {}
                Step::Stop => break 'all,
            }
        }
        (sent, checked.dropped)
    }

    #[test]
    fn the_verifier_drops_invented_commands_from_a_real_answer() {
        // The answer SmolLM2 gave to README's first question (issue 14), streamed in pieces.
        let answer = [
            "To read the logs of a service, run journalctl -u ssh.service. [1] ",
            "You can also run journalctl -u ssh | grep error > /var/log/journalctl to save them. [1] ",
            "The output is a comma-separated list of lines. [1] ",
            "Use journalctl -f to keep displaying new messages as they are emitted. [1]",
        ];
        let (sent, dropped) = verified(&answer, AnswerCaps { sentences: 4, words: 80 });
        assert_eq!(
            sent,
            vec![
                "To read the logs of a service, run journalctl -u ssh.service. [1]",
                "Use journalctl -f to keep displaying new messages as they are emitted. [1]"
            ]
        );
        assert_eq!(dropped, 2);
    }

    #[test]
    fn repetition_ends_the_answer_and_voice_keeps_two_sentences() {
        let looping = [
            "Run journalctl -u ssh.service to see the logs. [1] ",
            "Run journalctl -u ssh.service to see the logs of the ssh service. [1] ",
            "Use journalctl -f to keep displaying new messages. [1]",
        ];
        let (sent, _) = verified(&looping, AnswerCaps { sentences: 4, words: 80 });
        assert_eq!(sent, vec!["Run journalctl -u ssh.service to see the logs. [1]"]);
        let long = [
            "Run journalctl -u ssh.service. [1] ",
            "Use journalctl -f to keep displaying new messages. [1] ",
            "Without any arguments, journalctl spews all log messages since system boot. [1]",
        ];
        let (sent, _) = verified(&long, AnswerCaps { sentences: 2, words: 50 });
        assert_eq!(sent.len(), 2, "{sent:?}");
    }

    #[test]
    fn invented_listings_are_dropped_and_quoted_ones_kept() {
        let (sent, dropped) = verified(
            &["Run this:\n```\n# journalctl -u ssh.service\n", "rm -rf /var/log/journal\n```\n"],
            AnswerCaps { sentences: 4, words: 80 },
        );
        // "Run this:" announces but says nothing, so only the quoted line goes out.
        assert_eq!(sent, vec!["# journalctl -u ssh.service"], "the made-up line is gone");
        assert_eq!(dropped, 1);
        // Filler and an announcement of nothing are not sent.
        let (sent, _) = verified(
            &[
                "Here's how you can do it: ",
                "Use journalctl -f to keep displaying new messages. [1] ",
                "You can use the following command:",
            ],
            AnswerCaps { sentences: 4, words: 80 },
        );
        assert_eq!(sent, vec!["Use journalctl -f to keep displaying new messages. [1]"]);
        // An announcement with content waits for what it announces and goes out with it.
        let (sent, _) = verified(
            &["To keep displaying new messages as they are emitted, use the -f flag: ", "Journalctl -f does that. [1]"],
            AnswerCaps { sentences: 4, words: 80 },
        );
        assert_eq!(sent, vec!["To keep displaying new messages as they are emitted, use the -f flag: Journalctl -f does that. [1]"]);
    }

    #[test]
    fn answers_stream_one_cited_sentence_at_a_time() {
        assert_eq!(pieces("A b. [1] C d. [2]"), vec!["A b. [1] ", "C d. [2]"]);
        assert_eq!(pieces("nothing found"), vec!["nothing found"]);
    }
}
