//! `uag eval answers`: how right the answers of model `graphrag` are, measured through the
//! same provider the server answers with (retrieval, evidence, the local LLM when one is
//! used, verification), over a question set with reference answers and their key facts.
//!
//! Per question: key-fact recall (the share of the reference's key facts the answer states),
//! unsupported technical tokens (paths, options, numbers... in the answer but in none of the
//! passages retrieved for it), citation accuracy (a cited passage supports the sentence that
//! cites it), time to the first text and to done. `--corpus` ingests a corpus into a
//! temporary knowledge base first, so a held-out set never touches the configured one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use uag_gateway::config::{AnswerWriter, Config};
use uag_gateway::provider::local::{LOCAL_MODEL, LocalProvider};
use uag_gateway::provider::{Provider, ProviderCall, RequestContext};
use uag_gateway::types::{Event, InferenceRequest, Source, Usage};
use uag_graphrag::eval::{KeyFact, key_fact_recall};
use uag_graphrag::verify::{Evidence, split_finished};
use uag_graphrag::{Engine, QueryOptions};
use uag_models::manifest::{Manifest, ModelKind};
use uag_models::runtime::ModelRuntimes;

use crate::cli::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AnswerMode {
    /// Extracted sentences only (no LLM), as without a local LLM installed.
    Extractive,
    /// The installed local LLM writes from the evidence (`[graphrag] answers = "llm"`).
    Llm,
}

#[derive(Debug, Args)]
pub(crate) struct AnswersArgs {
    /// JSON lines: {"id","question","expected":[...],"multi_hop":bool,"key_facts":[["form","other form"],...]}
    #[arg(long)]
    questions: PathBuf,
    /// Ingest these files or folders into a temporary knowledge base and answer from it
    /// (the configured knowledge base is not opened).
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Who writes the answers; default: the configuration's `[graphrag] answers` (extractive
    /// unless set), or the LLM when `--llm` names one.
    #[arg(long, value_enum)]
    mode: Option<AnswerMode>,
    /// The LLM to write with (a model id of `uag models list`); default: the preferred one.
    #[arg(long)]
    llm: Option<String>,
    /// Only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Write every question's answer and scores to this JSON-lines file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when key-fact recall is below this (a regression guard for CI).
    #[arg(long, value_name = "RECALL")]
    min_recall: Option<f64>,
    /// Exit with status 1 when the share of unsupported technical tokens is above this.
    #[arg(long, value_name = "SHARE")]
    max_unsupported: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Line {
    id: Option<String>,
    question: String,
    #[serde(default)]
    multi_hop: bool,
    #[serde(default)]
    key_facts: Vec<KeyFact>,
}

/// One answered question with its scores.
#[derive(Debug, Clone)]
struct Scored {
    id: String,
    multi_hop: bool,
    recall: f64,
    /// Key-fact recall of the retrieved passages themselves: the most any answer from them can state.
    passage_recall: f64,
    all_facts: bool,
    technical: usize,
    unsupported: Vec<String>,
    cited: usize,
    cited_right: usize,
    first_text: Option<Duration>,
    done: Duration,
    answer: String,
    /// Prompt and answer tokens of the LLM call (none for an extractive answer): what a
    /// device's prefill and decode rates turn into seconds.
    usage: Option<Usage>,
    /// Where the time went, from the provider's status events: see [`STAGES`].
    stages: Option<[f64; 5]>,
}

/// The stages of an answer, each from one event to the next: `searching` -> `expanding` (BM25,
/// the question's embedding and the dense scan) -> `ranking` (graph expansion) -> `synthesizing`
/// (fusion, evidence selection, the LLM prompt) -> the first text (the LLM's prefill and first
/// sentence with its check) -> done (the rest of the decode and the checks).
const STAGES: [&str; 5] = ["search", "graph", "evidence", "first text", "rest"];

/// Seconds spent in each of [`STAGES`], when every boundary was seen.
fn stage_times(marks: &[(String, Duration)], first_text: Option<Duration>, done: Duration) -> Option<[f64; 5]> {
    let at = |stage: &str| marks.iter().find(|(s, _)| s == stage).map(|(_, t)| *t);
    let bounds = [at("searching")?, at("expanding")?, at("ranking")?, at("synthesizing")?, first_text?, done];
    let mut out = [0.0; 5];
    for (i, pair) in bounds.windows(2).enumerate() {
        out[i] = pair[1].saturating_sub(pair[0]).as_secs_f64();
    }
    Some(out)
}

fn read(path: &Path) -> Result<Vec<(String, Line)>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let q: Line = serde_json::from_str(line).map_err(|e| CliError::Usage(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if q.key_facts.is_empty() {
            return Err(CliError::Usage(format!("{}:{}: no key_facts to score the answer with", path.display(), i + 1)));
        }
        out.push((q.id.clone().unwrap_or_else(|| format!("line{}", i + 1)), q));
    }
    if out.is_empty() {
        return Err(CliError::Usage(format!("{} holds no questions", path.display())));
    }
    Ok(out)
}

/// A knowledge base in a temporary folder, removed when dropped.
pub(crate) struct TempKb {
    dir: PathBuf,
}

impl TempKb {
    /// Ingests `corpus` (and embeds it, when dense retrieval is on) into a new temporary
    /// knowledge base.
    pub(crate) fn ingest(config: &Config, corpus: &[PathBuf]) -> Result<(Self, Engine), CliError> {
        let dir = std::env::temp_dir().join(format!("uag-eval-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(&dir)?;
        let kb = Self { dir };
        let engine = Engine::open(&kb.dir)?;
        let walk = uag_graphrag::engine::walk(corpus);
        if walk.files.is_empty() {
            return Err(CliError::Usage("the --corpus paths hold no .txt, .md or .html files".into()));
        }
        let mut batch = engine.begin();
        for file in &walk.files {
            batch.add_path(file, uag_graphrag::engine::DEFAULT_COLLECTION)?;
        }
        batch.finish()?;
        crate::kb::attach_dense(config, &engine)?;
        crate::kb::embed_missing(&engine)?;
        Ok((kb, engine))
    }
}

impl Drop for TempKb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

pub(crate) fn answers(config: &Config, args: AnswersArgs) -> Result<(), CliError> {
    let questions = read(&args.questions)?;
    let questions: Vec<_> = questions.into_iter().take(args.limit.unwrap_or(usize::MAX)).collect();
    let (_temp, engine) = if args.corpus.is_empty() {
        let engine = crate::kb::open(config)?;
        crate::kb::embed_missing(&engine)?;
        (None, engine)
    } else {
        let (kb, engine) = TempKb::ingest(config, &args.corpus)?;
        (Some(kb), engine)
    };
    if engine.is_empty() {
        return Err(CliError::Usage("the knowledge base is empty; ingest documents first or pass --corpus".into()));
    }
    let engine = Arc::new(engine);
    let mut config = config.clone();
    // The provider reads who writes from the configuration: the mode asked for is set there.
    config.graphrag.answers = match (args.mode, &args.llm) {
        (Some(AnswerMode::Extractive), _) => AnswerWriter::Extractive,
        (Some(AnswerMode::Llm), _) | (None, Some(_)) => AnswerWriter::Llm,
        (None, None) => config.graphrag.answers,
    };
    let models = match config.graphrag.answers {
        AnswerWriter::Extractive => None,
        AnswerWriter::Llm => {
            if let Some(id) = &args.llm {
                config.models.prefer.insert(0, id.clone());
            }
            let manifest = Manifest::embedded().map_err(|e| CliError::Startup(e.to_string()))?;
            let runtimes = ModelRuntimes::start(manifest, config.model_runtime_config()).map_err(|e| CliError::Startup(e.to_string()))?;
            let entry = runtimes.resolve(ModelKind::Llm, None).map_err(|e| CliError::Startup(e.to_string()))?;
            if !entry.main_path(runtimes.models_dir()).is_file() {
                return Err(CliError::Usage(format!(
                    "the LLM {} is not installed; `uag models fetch {}` installs it (or use --mode extractive)",
                    entry.id, entry.id
                )));
            }
            eprintln!("answering with {}", entry.id);
            Some(runtimes)
        }
    };
    let provider = LocalProvider::new("local", Some(Arc::clone(&engine)), models, &config.graphrag, &config.models);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut out_file = match &args.out {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?),
        None => None,
    };
    let mut scored = Vec::new();
    for (n, (id, q)) in questions.iter().enumerate() {
        let s = runtime.block_on(answer_one(&provider, &engine, &config, id, q))?;
        eprintln!(
            "[{}/{}] {id}: recall {:.2}, {} unsupported, {:.1} s",
            n + 1,
            questions.len(),
            s.recall,
            s.unsupported.len(),
            s.done.as_secs_f64()
        );
        if let Some(f) = out_file.as_mut() {
            use std::io::Write;
            let line = json!({
                "id": s.id, "question": q.question, "answer": s.answer, "key_fact_recall": s.recall, "passage_recall": s.passage_recall, "all_facts": s.all_facts,
                "unsupported": s.unsupported, "technical_tokens": s.technical, "cited": s.cited, "cited_right": s.cited_right,
                "first_text_ms": s.first_text.map(|d| d.as_millis() as u64), "done_ms": s.done.as_millis() as u64,
                "stages_ms": s.stages.map(|t| t.map(|v| (v * 1000.0).round())),
                "prompt_tokens": s.usage.map(|u| u.input_tokens), "answer_tokens": s.usage.map(|u| u.output_tokens),
            });
            writeln!(f, "{line}")?;
        }
        scored.push(s);
    }
    let summary = |filter: &dyn Fn(&Scored) -> bool| summarize(scored.iter().filter(|s| filter(s)).collect());
    let all = summary(&|_| true);
    let single = summary(&|s| !s.multi_hop);
    let multi = summary(&|s| s.multi_hop);
    if args.json {
        let embedding_model = engine.stats().embedding_model;
        let summary =
            json!({"all": all.json(), "single_hop": single.json(), "multi_hop": multi.json(), "embedding_model": embedding_model});
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    } else {
        println!(
            "| questions | n | key-fact recall | in the passages | all facts | unsupported tech. tokens | citation accuracy | first text p50 | done p50 | done p90 |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (label, s) in [("all", &all), ("single-hop", &single), ("multi-hop", &multi)] {
            println!("| {label} | {} | {} |", s.n, s.row());
        }
        if let Some((prompt, answer)) = all.tokens {
            println!("\nLLM tokens per answer (mean): {prompt:.0} prompt, {answer:.0} answer");
        }
        if let Some(stages) = all.stages_p50 {
            let parts: Vec<String> = STAGES.iter().zip(stages).map(|(n, v)| format!("{n} {:.1} ms", v * 1000.0)).collect();
            println!("\nStages, p50 of each: {}", parts.join(", "));
        }
    }
    if let Some(min) = args.min_recall
        && all.recall < min
    {
        return Err(CliError::Startup(format!("key-fact recall {:.3} is below --min-recall {min}", all.recall)));
    }
    if let Some(max) = args.max_unsupported
        && all.unsupported > max
    {
        return Err(CliError::Startup(format!("unsupported technical tokens {:.3} above --max-unsupported {max}", all.unsupported)));
    }
    Ok(())
}

async fn answer_one(provider: &LocalProvider, engine: &Arc<Engine>, config: &Config, id: &str, q: &Line) -> Result<Scored, CliError> {
    let request = InferenceRequest {
        id: None,
        provider: None,
        model: Some(LOCAL_MODEL.into()),
        messages: Vec::new(),
        input: Some(q.question.clone()),
        params: Default::default(),
        stream: true,
        metadata: Default::default(),
        tools: Vec::new(),
        tool_choice: None,
    };
    let ctx = RequestContext::new(format!("eval-{id}"), Duration::from_secs(600));
    let call = ProviderCall { model: LOCAL_MODEL.into(), request, ctx, timeout: Duration::from_secs(600) };
    let started = Instant::now();
    let mut stream = provider.stream_infer(call).await.map_err(|e| CliError::Startup(format!("{id}: {e}")))?;
    let (mut answer, mut sources, mut first_text, mut usage) = (String::new(), Vec::<Source>::new(), None, None);
    let mut marks: Vec<(String, Duration)> = Vec::new();
    while let Some(event) = stream.next().await {
        match event.map_err(|e| CliError::Startup(format!("{id}: {e}")))? {
            Event::Delta { text } => {
                first_text.get_or_insert_with(|| started.elapsed());
                answer.push_str(&text);
            }
            Event::Sources { sources: s } => sources = s,
            Event::Done { usage: u, .. } if u.total() > 0 => usage = Some(u),
            Event::Status { stage, .. } if !marks.iter().any(|(s, _)| *s == stage) => marks.push((stage, started.elapsed())),
            _ => {}
        }
    }
    let done = started.elapsed();
    // The passages the answer was written from: the same retrieval, run again (deterministic).
    let options = QueryOptions { top_k: config.graphrag.top_k, ..QueryOptions::default() };
    // On the blocking pool, as in the server: embedding the question waits for the model.
    let retrieval = {
        let (engine, question) = (Arc::clone(engine), q.question.clone());
        tokio::task::spawn_blocking(move || engine.retrieve(&question, &options, &mut |_| {}))
            .await
            .map_err(|e| CliError::Startup(format!("{id}: {e}")))??
    };
    // A passage is its headings and its text: an answer may name the section it cites.
    let passage_texts: Vec<String> =
        retrieval.passages.iter().map(|p| format!("{}\n{}", p.chunk.section.join("\n"), p.chunk.text)).collect();
    let evidence = Evidence::new(passage_texts.iter().map(String::as_str), "");
    let (unsupported, technical) = evidence.unsupported_tokens(&answer);
    // Citation accuracy: each sentence with a marker, against the passage it cites alone.
    let (mut cited, mut cited_right) = (0, 0);
    let (mut sentences, rest) = split_finished(&answer);
    sentences.push(rest);
    for sentence in sentences.iter().filter(|s| !s.trim().is_empty()) {
        let numbers = uag_graphrag::answer::cited_indices(sentence, usize::MAX);
        let Some(n) = numbers.first() else { continue };
        cited += 1;
        // A source is a section: when two chunks of it were retrieved, either may hold the
        // sentence.
        let Some(source) = sources.iter().find(|s| s.index == *n) else { continue };
        let supported = retrieval
            .passages
            .iter()
            .filter(|p| p.document == source.document && p.chunk.section.last() == source.section.as_ref())
            .any(|p| Evidence::new([p.chunk.text.as_str()], &q.question).check(sentence).is_none());
        if supported {
            cited_right += 1;
        }
    }
    let recall = key_fact_recall(&answer, &q.key_facts);
    let passages: Vec<&str> = retrieval.passages.iter().map(|p| p.chunk.text.as_str()).collect();
    let passage_recall = key_fact_recall(&passages.join("\n"), &q.key_facts);
    Ok(Scored {
        id: id.to_owned(),
        multi_hop: q.multi_hop,
        recall,
        passage_recall,
        all_facts: recall >= 1.0,
        technical,
        unsupported,
        cited,
        cited_right,
        first_text,
        done,
        answer,
        usage,
        stages: stage_times(&marks, first_text, done),
    })
}

struct Summary {
    n: usize,
    recall: f64,
    passage_recall: f64,
    all_facts: usize,
    unsupported: f64,
    citation_accuracy: f64,
    first_text_p50: f64,
    done_p50: f64,
    done_p90: f64,
    /// Mean prompt and answer tokens over the answers an LLM wrote.
    tokens: Option<(f64, f64)>,
    /// Median seconds of each of [`STAGES`].
    stages_p50: Option<[f64; 5]>,
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[rank.min(values.len() - 1)]
}

fn summarize(scored: Vec<&Scored>) -> Summary {
    let n = scored.len();
    let technical: usize = scored.iter().map(|s| s.technical).sum();
    let unsupported: usize = scored.iter().map(|s| s.unsupported.len()).sum();
    let cited: usize = scored.iter().map(|s| s.cited).sum();
    let cited_right: usize = scored.iter().map(|s| s.cited_right).sum();
    let mut first: Vec<f64> = scored.iter().map(|s| s.first_text.unwrap_or(s.done).as_secs_f64()).collect();
    let mut done: Vec<f64> = scored.iter().map(|s| s.done.as_secs_f64()).collect();
    Summary {
        n,
        recall: scored.iter().map(|s| s.recall).sum::<f64>() / n.max(1) as f64,
        passage_recall: scored.iter().map(|s| s.passage_recall).sum::<f64>() / n.max(1) as f64,
        all_facts: scored.iter().filter(|s| s.all_facts).count(),
        unsupported: unsupported as f64 / technical.max(1) as f64,
        citation_accuracy: cited_right as f64 / cited.max(1) as f64,
        first_text_p50: percentile(&mut first, 0.5),
        done_p50: percentile(&mut done, 0.5),
        done_p90: percentile(&mut done, 0.9),
        tokens: {
            let written: Vec<Usage> = scored.iter().filter_map(|s| s.usage).collect();
            let mean = |f: fn(&Usage) -> u32| written.iter().map(|u| f64::from(f(u))).sum::<f64>() / written.len().max(1) as f64;
            (!written.is_empty()).then(|| (mean(|u| u.input_tokens), mean(|u| u.output_tokens)))
        },
        stages_p50: {
            let timed: Vec<[f64; 5]> = scored.iter().filter_map(|s| s.stages).collect();
            (!timed.is_empty()).then(|| std::array::from_fn(|i| percentile(&mut timed.iter().map(|t| t[i]).collect::<Vec<f64>>(), 0.5)))
        },
    }
}

impl Summary {
    fn row(&self) -> String {
        format!(
            "{:.1} % | {:.1} % | {} of {} | {:.1} % | {:.1} % | {:.2} s | {:.2} s | {:.2} s",
            self.recall * 100.0,
            self.passage_recall * 100.0,
            self.all_facts,
            self.n,
            self.unsupported * 100.0,
            self.citation_accuracy * 100.0,
            self.first_text_p50,
            self.done_p50,
            self.done_p90
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "questions": self.n, "key_fact_recall": self.recall, "passage_key_fact_recall": self.passage_recall, "all_facts": self.all_facts,
            "unsupported_technical_tokens": self.unsupported, "citation_accuracy": self.citation_accuracy,
            "first_text_p50_s": self.first_text_p50, "done_p50_s": self.done_p50, "done_p90_s": self.done_p90,
            "mean_prompt_tokens": self.tokens.map(|t| t.0), "mean_answer_tokens": self.tokens.map(|t| t.1),
            "stages_p50_ms": self.stages_p50.map(|t| STAGES.iter().zip(t).map(|(n, v)| ((*n).to_owned(), json!(v * 1000.0))).collect::<serde_json::Map<_, _>>()),
        })
    }
}
