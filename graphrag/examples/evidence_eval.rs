//! Evidence-selection tuning loop: opens an ingested knowledge base with MiniLM, answers every
//! question of a set extractively and prints key-fact recall (no server, no LLM, seconds per run).
//!
//! `cargo run --release -p uag-graphrag --example evidence_eval -- DATA/graphrag MODELS/all-minilm-l6-v2 QUESTIONS.jsonl [OUT.jsonl]`
//! (the knowledge base ingested with `uag ingest`; the first build of this example alone takes
//! minutes, later ones seconds). `CAPS=sentences,words` changes the answer's caps (default 4,120).
//! `OUT.jsonl` gets each answer with its recall, the passages' ceiling and the passages
//! themselves, so a miss can be placed: not retrieved, or retrieved and not picked.

use std::sync::Arc;

use uag_graphrag::answer::synthesize_capped;
use uag_graphrag::eval::key_fact_recall;
use uag_graphrag::{Engine, QueryOptions};

struct MiniLm(uag_models::embed::Embedder);

impl uag_graphrag::dense::TextEmbedder for MiniLm {
    fn model(&self) -> &str {
        "all-minilm-l6-v2"
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts).map_err(|e| e.to_string())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: evidence_eval DATA_DIR/graphrag MODELS_DIR/all-minilm-l6-v2 QUESTIONS.jsonl [OUT.jsonl] (ingest with `uag ingest` first)".into());
    }
    let engine = Engine::open(std::path::Path::new(&args[1]))?;
    engine.set_embedder(Arc::new(MiniLm(uag_models::embed::Embedder::load(std::path::Path::new(&args[2]))?)))?;
    let started = std::time::Instant::now();
    let embedded = engine.embed_missing(&mut |_, _| {})?;
    if embedded > 0 {
        eprintln!("embedded {embedded} chunks in {:.1} s", started.elapsed().as_secs_f64());
    }
    let caps: (usize, usize) = match std::env::var("CAPS") {
        Ok(v) => {
            let (a, b) = v.split_once(',').ok_or("CAPS=sentences,words")?;
            (a.parse()?, b.parse()?)
        }
        Err(_) => (4, 120),
    };
    let mut out = args.get(4).map(std::fs::File::create).transpose()?;
    let (mut all, mut single, mut multi) = (Vec::new(), Vec::new(), Vec::new());
    let mut words = 0usize;
    let mut times: Vec<f64> = Vec::new();
    for line in std::fs::read_to_string(&args[3])?.lines().filter(|l| !l.trim().is_empty()) {
        let q: serde_json::Value = serde_json::from_str(line)?;
        let question = q["question"].as_str().unwrap_or_default();
        let facts: Vec<Vec<String>> = serde_json::from_value(q["key_facts"].clone())?;
        let retrieval = engine.retrieve(question, &QueryOptions::default(), &mut |_| {})?;
        let started = std::time::Instant::now();
        let answer = synthesize_capped(question, &retrieval, caps.0, caps.1);
        times.push(started.elapsed().as_secs_f64());
        let passages: String = retrieval.passages.iter().map(|p| format!("{} {}\n", p.chunk.section.join(" "), p.chunk.text)).collect();
        let recall = key_fact_recall(&answer.text, &facts);
        let ceiling = key_fact_recall(&passages, &facts);
        words += answer.text.split_whitespace().count();
        all.push(recall);
        if q["multi_hop"].as_bool().unwrap_or(false) {
            multi.push(recall)
        } else {
            single.push(recall)
        }
        if let Some(f) = out.as_mut() {
            use std::io::Write;
            let passages: Vec<serde_json::Value> =
                retrieval.passages.iter().map(|p| serde_json::json!({"section": p.chunk.section, "text": p.chunk.text})).collect();
            writeln!(
                f,
                "{}",
                serde_json::json!({"id": q["id"], "recall": recall, "ceiling": ceiling, "answer": answer.text, "passages": passages})
            )?;
        }
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { 100.0 * v.iter().sum::<f64>() / v.len() as f64 };
    println!(
        "recall {:.1} % (single {:.1} %, multi {:.1} %), {} questions, {:.0} words per answer, selection p50 {:.0} ms",
        mean(&all),
        mean(&single),
        mean(&multi),
        all.len(),
        words as f64 / all.len().max(1) as f64,
        {
            times.sort_by(f64::total_cmp);
            1000.0 * times.get(times.len() / 2).copied().unwrap_or(0.0)
        }
    );
    Ok(())
}
