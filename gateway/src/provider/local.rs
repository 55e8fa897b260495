//! The `local` provider: the in-process GraphRAG engine.
//!
//! Retrieval runs on tokio's blocking pool (never on a worker thread); its stages arrive as
//! status events ("Searching knowledge graph", "Expanding 3 entities", "Ranking passages",
//! "Synthesizing response"), then the answer as deltas (one per cited sentence), then the
//! sources, then `done`. Until a local LLM is installed the answer is extractive, and a
//! status event says so.

use std::sync::Arc;

use async_trait::async_trait;
use uag_graphrag::answer::Answer;
use uag_graphrag::{Engine, EngineError, Progress, QueryOptions};

use super::{Capabilities, EventStream, Health, HealthStatus, Provider, ProviderCall};
use crate::config::ProviderKind;
use crate::error::ProviderError;
use crate::types::{Event, FinishReason, InferenceResponse, Source, Timings, Usage};

/// The model name the local engine answers to.
pub const LOCAL_MODEL: &str = "graphrag";

#[derive(Debug)]
pub struct LocalProvider {
    name: String,
    engine: Option<Arc<Engine>>,
    top_k: usize,
}

impl LocalProvider {
    /// `engine` is `None` where no knowledge base could be opened (then every call is a
    /// clear `not_installed`).
    pub fn new(name: impl Into<String>, engine: Option<Arc<Engine>>, top_k: usize) -> Self {
        Self { name: name.into(), engine, top_k }
    }

    fn engine(&self) -> Result<Arc<Engine>, ProviderError> {
        self.engine.clone().ok_or_else(|| ProviderError::NotInstalled {
            what: "the local GraphRAG engine".into(),
            hint: "no knowledge base is open in this process".into(),
        })
    }

    fn question(call: &ProviderCall) -> Result<String, ProviderError> {
        call.request.question().ok_or_else(|| ProviderError::Rejected { status: 400, message: "no user message to answer".into() })
    }
}

fn engine_error(e: EngineError) -> ProviderError {
    ProviderError::Internal(e.to_string())
}

pub(crate) fn sources(answer: &Answer) -> Vec<Source> {
    answer
        .citations
        .iter()
        .map(|c| Source {
            index: c.index,
            document: c.document.clone(),
            section: c.section.clone(),
            snippet: Some(c.snippet.clone()),
            score: Some(c.score),
        })
        .collect()
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

const EXTRACTIVE_NOTE: &str = "Synthesizing response (no local LLM installed: answering with extracted sentences)";

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
        let engine = self.engine()?;
        let question = Self::question(&call)?;
        let options = QueryOptions { top_k: self.top_k, ..QueryOptions::default() };
        let (_, answer) = tokio::task::spawn_blocking(move || engine.ask(&question, &options, &mut |_| {}))
            .await
            .map_err(|e| ProviderError::Internal(e.to_string()))?
            .map_err(engine_error)?;
        Ok(InferenceResponse {
            id: call.ctx.request_id.clone(),
            provider: self.name.clone(),
            model: call.model,
            sources: sources(&answer),
            output: answer.text,
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: Timings::default(),
        })
    }

    async fn stream_infer(&self, call: ProviderCall) -> Result<EventStream, ProviderError> {
        let engine = self.engine()?;
        let question = Self::question(&call)?;
        let options = QueryOptions { top_k: self.top_k, ..QueryOptions::default() };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Event, ProviderError>>(64);
        tokio::task::spawn_blocking(move || {
            let progress_tx = tx.clone();
            let mut progress = |p: Progress| {
                let message = if p.stage == "synthesizing" { EXTRACTIVE_NOTE.to_owned() } else { p.message };
                // A closed channel means the client left; the query is cheap, let it end.
                let _ = progress_tx.blocking_send(Ok(Event::status(p.stage, message)));
            };
            match engine.ask(&question, &options, &mut progress) {
                Ok((_, answer)) => {
                    for piece in pieces(&answer.text) {
                        if tx.blocking_send(Ok(Event::delta(piece))).is_err() {
                            return;
                        }
                    }
                    let _ = tx.blocking_send(Ok(Event::Sources { sources: sources(&answer) }));
                    let _ = tx.blocking_send(Ok(Event::Done {
                        finish_reason: FinishReason::Stop,
                        usage: Usage::default(),
                        timings: Timings::default(),
                        provider: None,
                        model: None,
                    }));
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(engine_error(e)));
                }
            }
        });
        Ok(Box::pin(async_stream::stream! {
            while let Some(item) = rx.recv().await {
                yield item;
            }
        }))
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec![LOCAL_MODEL.into()])
    }

    async fn health(&self) -> Health {
        match &self.engine {
            Some(engine) => {
                let stats = engine.stats();
                Health {
                    status: HealthStatus::Ok,
                    detail: Some(format!("{} documents, {} chunks, {} entities", stats.documents, stats.chunks, stats.entities)),
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
