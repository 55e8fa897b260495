//! The retrieval evaluation as a regression test: on the sample knowledge base (the Debian
//! Administrator's Handbook, installed by `scripts/setup.sh`), fused retrieval must beat BM25
//! alone on the multi-hop questions of docs/eval/handbook-questions.jsonl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use uag_graphrag::Engine;
use uag_graphrag::engine::{DEFAULT_COLLECTION, walk};
use uag_graphrag::eval::{EvalQuestion, evaluate};

const HANDBOOK: &str = "/usr/share/doc/debian-handbook/html/en-US";

fn questions() -> Vec<EvalQuestion> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/eval/handbook-questions.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            EvalQuestion {
                id: v["id"].as_str().unwrap().to_owned(),
                question: v["question"].as_str().unwrap().to_owned(),
                expected: v["expected"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_owned()).collect(),
                multi_hop: v["multi_hop"].as_bool().unwrap(),
            }
        })
        .collect()
}

#[test]
fn fused_retrieval_beats_bm25_on_multi_hop_questions() {
    assert!(Path::new(HANDBOOK).is_dir(), "{HANDBOOK} is missing: run `scripts/setup.sh --test` (Debian package debian-handbook)");
    let questions = questions();
    assert!(questions.len() >= 40 && questions.iter().filter(|q| q.multi_hop).count() >= 15);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut batch = engine.begin();
    for f in walk(&[PathBuf::from(HANDBOOK)]).files {
        batch.add_path(&f, DEFAULT_COLLECTION).unwrap();
    }
    batch.finish().unwrap();
    let reports = evaluate(&engine, &questions).unwrap();
    let (bm25, graph, fused) = (&reports[0], &reports[1], &reports[2]);
    for r in &reports {
        eprintln!("{:?}: all {:?}\n  multi-hop {:?}", r.mode, r.all, r.multi_hop);
    }
    assert!(graph.multi_hop.recall_at_10 > 0.3, "graph-only retrieval works on its own");
    assert!(fused.multi_hop.recall_at_5 > bm25.multi_hop.recall_at_5, "multi-hop recall@5");
    assert!(fused.multi_hop.recall_at_10 > bm25.multi_hop.recall_at_10, "multi-hop recall@10");
    assert!(fused.multi_hop.mrr > bm25.multi_hop.mrr, "multi-hop MRR");
    assert!(fused.all.mrr >= bm25.all.mrr, "no loss overall");
}
