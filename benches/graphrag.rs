//! GraphRAG benchmark: ingest throughput and query latency on the sample corpus (the Debian
//! Administrator's Handbook) and on it replicated to 10x, with BM25-only queries as the
//! baseline measured in the same run, and resident memory per 10k chunks.
//!
//! `cargo bench --bench graphrag` (release build). Writes docs/BENCHMARKS.md between the
//! graphrag markers; `NO_WRITE=1` prints only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use uag_graphrag::engine::{DEFAULT_COLLECTION, NewDocument, walk};
use uag_graphrag::parse::Format;
use uag_graphrag::{Engine, QueryOptions, RetrievalMode};

const HANDBOOK: &str = "/usr/share/doc/debian-handbook/html/en-US";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Resident memory of a fresh process that opens the knowledge base at `dir` and answers one
/// question: what a restarted appliance holds, without the ingest's leftovers.
fn fresh_process_rss_kib(dir: &Path) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap()).env("UAG_BENCH_OPEN", dir).output().unwrap();
    assert!(out.status.success(), "memory probe failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    label: String,
    pages: usize,
    chunks: usize,
    entities: usize,
    edges: usize,
    ingest_s: f64,
    reopen_s: f64,
    fused: (f64, f64),
    bm25: (f64, f64),
    graph: (f64, f64),
    rss_mib: f64,
    empty_rss_mib: f64,
}

fn questions() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/eval/handbook-questions.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(str::to_owned))
        .collect()
}

fn latency(engine: &Engine, questions: &[String], mode: RetrievalMode, rounds: usize) -> (f64, f64) {
    let options = QueryOptions { mode, ..QueryOptions::default() };
    let mut samples = Vec::new();
    for _ in 0..rounds {
        for q in questions {
            let t = Instant::now();
            let _ = engine.ask(q, &options, &mut |_| {}).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn run(label: &str, files: &[PathBuf], copies: usize, questions: &[String]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<(String, Vec<u8>)> = files.iter().map(|f| (f.to_string_lossy().into_owned(), std::fs::read(f).unwrap())).collect();
    let empty = tempfile::tempdir().unwrap();
    let empty_rss_mib = fresh_process_rss_kib(empty.path()) as f64 / 1024.0;
    let engine = Engine::open(dir.path()).unwrap();
    let started = Instant::now();
    let mut batch = engine.begin();
    for copy in 0..copies {
        for (name, bytes) in &contents {
            let name = if copy == 0 { name.clone() } else { format!("copy{copy}/{name}") };
            batch.add(&NewDocument { name: &name, bytes, format: Format::Html, collection: DEFAULT_COLLECTION }).unwrap();
        }
    }
    batch.finish().unwrap();
    let ingest_s = started.elapsed().as_secs_f64();
    drop(engine);
    let started = Instant::now();
    let engine = Engine::open(dir.path()).unwrap();
    let reopen_s = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    let rounds = if copies == 1 { 10 } else { 3 };
    let fused = latency(&engine, questions, RetrievalMode::Fused, rounds);
    let bm25 = latency(&engine, questions, RetrievalMode::Bm25, rounds);
    let graph = latency(&engine, questions, RetrievalMode::Graph, rounds);
    // The child must be able to take the store's lock.
    drop(engine);
    let rss_mib = fresh_process_rss_kib(dir.path()) as f64 / 1024.0;
    Run {
        label: label.to_owned(),
        pages: files.len() * copies,
        chunks: stats.chunks,
        entities: stats.entities,
        edges: stats.edges,
        ingest_s,
        reopen_s,
        fused,
        bm25,
        graph,
        rss_mib,
        empty_rss_mib,
    }
}

fn main() {
    // Child mode: open, answer once, report resident memory.
    if let Some(dir) = std::env::var_os("UAG_BENCH_OPEN") {
        let engine = Engine::open(Path::new(&dir)).unwrap();
        let _ = engine.ask("How do I configure the DHCP server?", &QueryOptions::default(), &mut |_| {}).unwrap();
        println!("{}", rss_kib());
        return;
    }
    if !Path::new(HANDBOOK).is_dir() {
        eprintln!("graphrag bench: {HANDBOOK} is missing; run scripts/setup.sh (it installs Debian's debian-handbook)");
        std::process::exit(1);
    }
    let files = walk(&[PathBuf::from(HANDBOOK)]).files;
    let questions = questions();
    let runs = [run("sample (1x)", &files, 1, &questions), run("sample replicated 10x", &files, 10, &questions)];
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let mut lines = vec![
        "<!-- graphrag:start -->".to_owned(),
        format!(
            "Measured by `cargo bench --bench graphrag` (release) on {} cores ({cpu}), one ingest thread. Pages are the \
             handbook's {} HTML pages (the 10x corpus ingests each page 10 times under different names). Queries are the {} \
             evaluation questions (docs/eval), answered end to end (retrieval and extractive answer); the baseline is \
             BM25-only retrieval in the same run, ratio = fused / BM25.",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            files.len(),
            questions.len()
        ),
        String::new(),
        "| corpus | pages | chunks | entities | edges | ingest (pages/s) | reopen (s) | fused p50 / p99 (ms) | BM25 p50 / p99 (ms) | graph-only p50 / p99 (ms) | fused/BM25 p50 | process RSS (MiB) | MiB per 10k chunks |".to_owned(),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".to_owned(),
    ];
    for r in &runs {
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2}x | {:.1} | {:.1} |",
            r.label,
            r.pages,
            r.chunks,
            r.entities,
            r.edges,
            r.pages as f64 / r.ingest_s,
            r.reopen_s,
            r.fused.0,
            r.fused.1,
            r.bm25.0,
            r.bm25.1,
            r.graph.0,
            r.graph.1,
            r.fused.0 / r.bm25.0,
            r.rss_mib,
            (r.rss_mib - r.empty_rss_mib) / (r.chunks as f64 / 10_000.0)
        ));
    }
    lines.push(format!(
        "\nMemory: resident set of a fresh process that opens the knowledge base and answers one question \
         (what a restarted appliance holds; tantivy's mapped index pages count once touched); an empty \
         knowledge base takes {:.1} MiB, and \"per 10k chunks\" is the growth over that.",
        runs[0].empty_rss_mib
    ));
    lines.push(format!(
        "\nScaling: 10x the corpus costs {:.2}x the fused p50 latency and {:.2}x the ingest time per page.",
        runs[1].fused.0 / runs[0].fused.0,
        (runs[1].ingest_s / runs[1].pages as f64) / (runs[0].ingest_s / runs[0].pages as f64)
    ));
    lines.push("<!-- graphrag:end -->".to_owned());
    let block = lines.join("\n");
    println!("{block}");
    if std::env::var_os("NO_WRITE").is_some() {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let text = match (text.find("<!-- graphrag:start -->"), text.find("<!-- graphrag:end -->")) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], block, &text[b + "<!-- graphrag:end -->".len()..]),
        _ => format!(
            "{text}\n## GraphRAG ingest and query (`cargo bench --bench graphrag`)\n\nFirst milestone on this 2-core machine: query p50 ≤ 5 ms, p99 ≤ 20 ms; ingest ≥ 50 pages/s.\n\n{block}\n"
        ),
    };
    std::fs::write(&path, text).unwrap();
    println!("wrote {}", path.display());
}
