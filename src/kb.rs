//! Knowledge-base commands: `uag ingest`, `uag ask`, `uag kg stats|export|rm`,
//! `uag eval retrieval` (and `uag eval answers`, in [`crate::eval_answers`]). They open the same `[storage] data_dir` as `uag serve`; the store's
//! lock makes a second process fail with a clear message instead of corrupting it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::json;
use uag_gateway::config::Config;
use uag_graphrag::eval::{EvalQuestion, Metrics, evaluate};
use uag_graphrag::export::{ExportFormat, export};
use uag_graphrag::{Engine, IngestOutcome, QueryOptions, RetrievalMode};

use crate::cli::CliError;

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Files or folders (folders are walked recursively; unsupported files in them are skipped).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Collection the documents belong to (policies can restrict collections).
    #[arg(long, default_value = uag_graphrag::engine::DEFAULT_COLLECTION)]
    collection: String,
    /// Upload to this running server (POST /v1/documents) instead of opening the knowledge
    /// base directly, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// With --server: move each uploaded file into this folder (failed ones into its
    /// `failed/` subfolder), so a watched inbox empties itself.
    #[arg(long, value_name = "DIR", requires = "server")]
    done_dir: Option<PathBuf>,
    /// With --server: a file holding the API key to upload with (sent as `Authorization:
    /// Bearer`), for a server that requires credentials (the appliance config does).
    #[arg(long, value_name = "FILE", requires = "server")]
    api_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    Fused,
    Bm25,
    Graph,
    Dense,
}

#[derive(Debug, Args)]
pub(crate) struct AskArgs {
    question: String,
    /// Print JSON (answer, sources, passages) instead of text.
    #[arg(long)]
    json: bool,
    /// Passages to retrieve.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    top_k: u16,
    #[arg(long, value_enum, default_value_t = Mode::Fused)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Graphml,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KgCommand {
    /// Documents, chunks, entities, edges, communities.
    Stats,
    /// Write the knowledge graph as Graphviz DOT or GraphML.
    Export {
        #[arg(long, value_enum)]
        format: GraphFormat,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Remove a document (by id, as `uag kg stats --documents` or GET /v1/documents show it, or by its source path).
    Rm { document: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EvalCommand {
    /// Recall@1/5/10 and MRR of BM25, graph and fused retrieval over a question set.
    Retrieval {
        /// JSON lines: {"id","question","expected":["FILE.html#N.N"],"multi_hop":bool}
        #[arg(long)]
        questions: PathBuf,
        /// Ingest these files or folders into a temporary knowledge base and search it
        /// (the configured knowledge base is not opened).
        #[arg(long, num_args = 1..)]
        corpus: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Key-fact recall, unsupported technical tokens, citation accuracy and latency of the
    /// answers of model `graphrag` over a question set with key facts.
    Answers(crate::eval_answers::AnswersArgs),
}

/// The configured knowledge base, with dense retrieval attached when it is on.
pub(crate) fn open(config: &Config) -> Result<Engine, CliError> {
    let engine = Engine::open(&config.graphrag_dir())?;
    attach_dense(config, &engine)?;
    Ok(engine)
}

/// Dense retrieval for the CLI, as in the server: the model runtime's embedding worker
/// (nothing loads until a text is embedded). Off without an embedding model installed.
pub(crate) fn attach_dense(config: &Config, engine: &Engine) -> Result<(), CliError> {
    if !config.graphrag.dense {
        return Ok(());
    }
    let manifest = uag_models::manifest::Manifest::embedded().map_err(|e| CliError::Startup(e.to_string()))?;
    let runtimes =
        uag_models::runtime::ModelRuntimes::start(manifest, config.model_runtime_config()).map_err(|e| CliError::Startup(e.to_string()))?;
    if let uag_gateway::embedder::DenseRetrieval::NoModel { models_dir } = uag_gateway::embedder::attach(engine, &runtimes, true) {
        eprintln!(
            "note: no embedding model in {}: passages are ranked by BM25 and the graph only. Install it with \
             `uag models fetch all-minilm-l6-v2`, or point [models] dir (UAG__MODELS__DIR) at the directory that has it \
             (it defaults to <data_dir>/models).",
            models_dir.display()
        );
    }
    Ok(())
}

/// Embeds the chunks that have no vector yet, with a progress bar (the first ingest of a big
/// folder spends most of its time here).
pub(crate) fn embed_missing(engine: &Engine) -> Result<(), CliError> {
    let missing = engine.missing_vectors();
    if missing == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(missing as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} embedding chunks (dense retrieval)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = engine.embed_missing(&mut |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    let n = result?;
    eprintln!("embedded {n} chunks in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

pub(crate) fn ingest(config: &Config, args: &IngestArgs) -> Result<(), CliError> {
    if let Some(server) = &args.server {
        return upload(server, args);
    }
    let engine = open(config)?;
    let walk = uag_graphrag::engine::walk(&args.paths);
    let bar = indicatif::ProgressBar::new(walk.files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut added, mut replaced, mut unchanged, mut chunks) = (0usize, 0usize, 0usize, 0usize);
    let mut failed: Vec<(PathBuf, String)> = Vec::new();
    let mut batch = engine.begin();
    let stdout = std::io::stdout();
    for file in &walk.files {
        bar.set_message(file.display().to_string());
        match batch.add_path(file, &args.collection) {
            Ok(outcome) => {
                // Printed after the store flushed: a listed document survives a crash.
                let line = match &outcome {
                    IngestOutcome::Added { id, chunks: n } => {
                        added += 1;
                        chunks += n;
                        format!("added {id} {} ({n} chunks)", file.display())
                    }
                    IngestOutcome::Replaced { id, chunks: n } => {
                        replaced += 1;
                        chunks += n;
                        format!("replaced {id} {} ({n} chunks)", file.display())
                    }
                    IngestOutcome::Unchanged { id } => {
                        unchanged += 1;
                        format!("unchanged {id} {}", file.display())
                    }
                };
                bar.suspend(|| {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                });
            }
            Err(e) => {
                bar.suspend(|| eprintln!("failed {}: {e}", file.display()));
                failed.push((file.clone(), e.to_string()));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    batch.finish()?;
    embed_missing(&engine)?;
    let stats = engine.stats();
    println!(
        "documents: {added} added, {replaced} replaced, {unchanged} unchanged, {} failed, {} skipped; {chunks} chunks in {:.1} s",
        failed.len(),
        walk.skipped.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "knowledge base: {} documents, {} chunks, {} entities, {} edges, {} communities",
        stats.documents, stats.chunks, stats.entities, stats.edges, stats.communities
    );
    for (path, why) in &walk.skipped {
        if why != "unsupported file type" {
            eprintln!("skipped {}: {why}", path.display());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!("{} of {} files could not be ingested (see above)", failed.len(), walk.files.len())))
    }
}

pub(crate) fn ask(config: &Config, args: &AskArgs) -> Result<(), CliError> {
    let engine = open(config)?;
    let mode = match args.mode {
        Mode::Fused => RetrievalMode::Fused,
        Mode::Bm25 => RetrievalMode::Bm25,
        Mode::Graph => RetrievalMode::Graph,
        Mode::Dense => RetrievalMode::Dense,
    };
    // A knowledge base ingested before dense retrieval (or with another model) catches up once.
    embed_missing(&engine)?;
    let options = QueryOptions { top_k: usize::from(args.top_k), mode, collections: None };
    let started = Instant::now();
    let (retrieval, answer) = engine.ask(&args.question, &options, &mut |_| {})?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if args.json {
        let sources: Vec<_> = answer
            .citations
            .iter()
            .map(|c| json!({"index": c.index, "document": c.document, "title": c.title, "section": c.section, "snippet": c.snippet}))
            .collect();
        let passages: Vec<_> = retrieval
            .passages
            .iter()
            .map(|p| json!({"document": p.document, "section": p.chunk.section, "score": p.score, "bm25_rank": p.bm25_rank, "graph_rank": p.graph_rank, "dense_rank": p.dense_rank, "text": p.chunk.text}))
            .collect();
        let out =
            json!({"answer": answer.text, "sources": sources, "entities": retrieval.seeds, "passages": passages, "elapsed_ms": elapsed_ms});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!("{}\n", answer.text);
    for c in &answer.citations {
        println!("[{}] {} — {}", c.index, c.document, c.section.as_deref().unwrap_or(&c.title));
    }
    Ok(())
}

pub(crate) fn kg(config: &Config, command: KgCommand) -> Result<(), CliError> {
    let engine = open(config)?;
    match command {
        KgCommand::Stats => {
            let s = engine.stats();
            println!("documents        {}", s.documents);
            println!("chunks           {}", s.chunks);
            println!("entities         {}", s.entities);
            println!("edges            {}", s.edges);
            println!("typed relations  {}", s.typed_relations);
            println!("communities      {}", s.communities);
            println!("indexed chunks   {}", s.indexed_chunks);
            match &s.embedding_model {
                Some(model) => println!("embedded chunks  {} ({model})", s.embedded_chunks),
                None => println!("embedded chunks  - (no embedding model installed, or [graphrag] dense = false)"),
            }
            println!("generation       {}", s.generation);
        }
        KgCommand::Export { format, output } => {
            let format = match format {
                GraphFormat::Dot => ExportFormat::Dot,
                GraphFormat::Graphml => ExportFormat::GraphMl,
            };
            let text = export(&engine.snapshot().kg, format);
            match output {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| CliError::Startup(format!("cannot write {}: {e}", path.display())))?
                }
                None => print!("{text}"),
            }
        }
        KgCommand::Rm { document } => {
            let snapshot = engine.snapshot();
            let id = if snapshot.docs.contains_key(&document) {
                document
            } else {
                snapshot.docs.values().find(|d| d.source == document).map(|d| d.id.clone()).unwrap_or(document)
            };
            drop(snapshot);
            let doc = engine.delete(&id)?;
            println!("removed {} {}", doc.id, doc.source);
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct QuestionLine {
    id: Option<String>,
    question: String,
    expected: Expected,
    #[serde(default)]
    multi_hop: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expected {
    One(String),
    Many(Vec<String>),
}

fn read_questions(path: &PathBuf) -> Result<Vec<EvalQuestion>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let q: QuestionLine = serde_json::from_str(line).map_err(|e| CliError::Usage(format!("{}:{}: {e}", path.display(), i + 1)))?;
        let expected = match q.expected {
            Expected::One(s) => vec![s],
            Expected::Many(v) => v,
        };
        out.push(EvalQuestion {
            id: q.id.unwrap_or_else(|| format!("line{}", i + 1)),
            question: q.question,
            expected,
            multi_hop: q.multi_hop,
        });
    }
    if out.is_empty() {
        return Err(CliError::Usage(format!("{} holds no questions", path.display())));
    }
    Ok(out)
}

pub(crate) fn eval(config: &Config, command: EvalCommand) -> Result<(), CliError> {
    let (questions, corpus, json) = match command {
        EvalCommand::Retrieval { questions, corpus, json } => (questions, corpus, json),
        EvalCommand::Answers(args) => return crate::eval_answers::answers(config, args),
    };
    let questions = read_questions(&questions)?;
    let (_temp, engine) = if corpus.is_empty() {
        (None, open(config)?)
    } else {
        let (kb, engine) = crate::eval_answers::TempKb::ingest(config, &corpus)?;
        (Some(kb), engine)
    };
    if engine.is_empty() {
        return Err(CliError::Usage("the knowledge base is empty; ingest documents first (uag ingest PATH)".into()));
    }
    embed_missing(&engine)?;
    let reports = evaluate(&engine, &questions)?;
    let name = |m: RetrievalMode| match m {
        RetrievalMode::Bm25 => "bm25",
        RetrievalMode::Graph => "graph",
        RetrievalMode::Dense => "dense",
        RetrievalMode::Fused => "fused",
    };
    let metrics = |m: &Metrics| json!({"questions": m.questions, "recall@1": m.recall_at_1, "recall@5": m.recall_at_5, "recall@10": m.recall_at_10, "full@5": m.full_at_5, "mrr": m.mrr});
    if json {
        let out: Vec<_> = reports
            .iter()
            .map(|r| json!({"mode": name(r.mode), "all": metrics(&r.all), "single_hop": metrics(&r.single_hop), "multi_hop": metrics(&r.multi_hop)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!("| mode | questions | recall@1 | recall@5 | recall@10 | full recall@5 | MRR |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, pick) in [("all", 0usize), ("single-hop", 1), ("multi-hop", 2)] {
        for r in &reports {
            let m = match pick {
                0 => &r.all,
                1 => &r.single_hop,
                _ => &r.multi_hop,
            };
            println!(
                "| {} ({label}) | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                name(r.mode),
                m.questions,
                m.recall_at_1,
                m.recall_at_5,
                m.recall_at_10,
                m.full_at_5,
                m.mrr
            );
        }
    }
    Ok(())
}

/// The name a file is uploaded (and cited) under: its path below the folder it was found in
/// (`a/manual.md` and `b/manual.md` of an inbox are two documents), else its file name.
fn upload_name(file: &Path, roots: &[PathBuf]) -> PathBuf {
    roots
        .iter()
        .filter(|r| r.is_dir())
        .find_map(|r| file.strip_prefix(r).ok())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(file.file_name().unwrap_or_default()))
}

/// Moves `file` to `dir`/`relative` (creating folders), across filesystems if need be, so
/// two files of one name in different subfolders both survive.
fn move_into(file: &Path, dir: &Path, relative: &Path) -> std::io::Result<()> {
    let target = dir.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::rename(file, &target).is_err() {
        std::fs::copy(file, &target)?;
        std::fs::remove_file(file)?;
    }
    Ok(())
}

/// Removes the empty folders below `root` (not `root`), deepest first; one that is not empty
/// stays.
fn remove_empty_subfolders(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_subfolders(&path);
            let _ = std::fs::remove_dir(&path);
        }
    }
}

/// The outcome of an upload the server refused for want of (valid) credentials.
const UNAUTHORIZED: &str = "401";

/// `uag ingest --server URL`: multipart uploads to a running gateway.
fn upload(server: &str, args: &IngestArgs) -> Result<(), CliError> {
    let base = server.trim_end_matches('/').to_owned();
    let walk = uag_graphrag::engine::walk(&args.paths);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = uag_gateway::crypto::http_client_builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .map_err(|e| CliError::Startup(format!("cannot build an HTTP client: {e}")))?;
    let api_key = match &args.api_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read the API key file {}: {e}", path.display())))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let mut failed = 0usize;
    // In a watched inbox, a file of an unsupported type must leave too, or the watch re-fires.
    if let Some(done) = &args.done_dir {
        for (file, why) in &walk.skipped {
            if file.is_file() {
                failed += 1;
                eprintln!("failed {}: {why}", file.display());
                move_into(file, &done.join("failed"), &upload_name(file, &args.paths))?;
            }
        }
    }
    for file in &walk.files {
        let relative = upload_name(file, &args.paths);
        let outcome: Result<String, String> = runtime.block_on(async {
            let bytes = tokio::fs::read(file).await.map_err(|e| format!("cannot read: {e}"))?;
            let name = relative.to_string_lossy().into_owned();
            let form = reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name))
                .text("collection", args.collection.clone());
            let mut request = client.post(format!("{base}/v1/documents")).multipart(form);
            if let Some(key) = &api_key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.map_err(|e| format!("cannot reach {base}: {e}"))?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                return Err(UNAUTHORIZED.to_owned());
            }
            let ok = response.status().is_success();
            let body: serde_json::Value = response.json().await.map_err(|e| format!("unreadable answer: {e}"))?;
            if ok {
                Ok(format!("{} {}", body["status"].as_str().unwrap_or("added"), body["id"].as_str().unwrap_or("?")))
            } else {
                Err(body["error"]["message"].as_str().unwrap_or("upload refused").to_owned())
            }
        });
        match outcome {
            Ok(what) => {
                println!("{what} {}", file.display());
                if let Some(done) = &args.done_dir {
                    move_into(file, done, &relative)?;
                }
            }
            // Every other file would be refused the same way; the files stay where they are.
            Err(why) if why == UNAUTHORIZED => {
                let hint = if api_key.is_some() { "the key in --api-key-file was refused" } else { "pass --api-key-file with an API key" };
                return Err(CliError::Usage(format!("{base} requires credentials: {hint} (docs/DEPLOY.md, \"Access\")")));
            }
            Err(why) => {
                failed += 1;
                eprintln!("failed {}: {why}", file.display());
                if let Some(done) = &args.done_dir {
                    move_into(file, &done.join("failed"), &relative)?;
                }
            }
        }
    }
    // A watched inbox must end empty, or its path unit fires again: drop emptied subfolders.
    if args.done_dir.is_some() {
        for root in args.paths.iter().filter(|p| p.is_dir()) {
            remove_empty_subfolders(root);
        }
    }
    if failed == 0 { Ok(()) } else { Err(CliError::Usage(format!("{failed} files could not be uploaded (see above)"))) }
}
