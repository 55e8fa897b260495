//! Engine behaviour on real files: ingest, no-op re-ingest, replacement, deletion, restart,
//! index repair, locking, bad files in a folder, queries during ingest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use uag_graphrag::engine::{DEFAULT_COLLECTION, NewDocument, walk};
use uag_graphrag::parse::Format;
use uag_graphrag::{Engine, EngineError, IngestOutcome, QueryOptions};

fn kb_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/kb")
}

fn ingest_kb(engine: &Engine) {
    let w = walk(&[kb_dir()]);
    assert_eq!(w.files.len(), 3);
    let mut batch = engine.begin();
    for f in &w.files {
        batch.add_path(f, DEFAULT_COLLECTION).unwrap();
    }
    batch.finish().unwrap();
}

fn ask(engine: &Engine, q: &str) -> (String, Vec<String>) {
    let (retrieval, answer) = engine.ask(q, &QueryOptions::default(), &mut |_| {}).unwrap();
    let docs = retrieval.passages.iter().map(|p| Path::new(&p.document).file_name().unwrap().to_string_lossy().into_owned()).collect();
    (answer.text, docs)
}

#[test]
fn ingest_ask_and_cite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    ingest_kb(&engine);
    let stats = engine.stats();
    assert_eq!(stats.documents, 3);
    assert_eq!(stats.indexed_chunks as usize, stats.chunks);
    assert!(stats.entities > 10 && stats.edges > 10, "{stats:?}");

    let mut stages = Vec::new();
    let (retrieval, answer) =
        engine.ask("What power supply does the Pi 5 need?", &QueryOptions::default(), &mut |p| stages.push(p.stage)).unwrap();
    assert_eq!(stages, vec!["searching", "expanding", "ranking", "synthesizing"]);
    assert!(answer.text.contains("27 W"), "{}", answer.text);
    assert!(answer.text.contains("[1]"));
    assert!(answer.citations[0].document.ends_with("pi-setup.md"));
    assert_eq!(answer.citations[0].section.as_deref(), Some("Hardware"));
    assert!(retrieval.seeds.iter().any(|s| s.contains("Pi 5")), "{:?}", retrieval.seeds);
}

#[test]
fn a_question_naming_an_entity_finds_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    ingest_kb(&engine);
    // The question names only kioskd; the file it reads is described with `start_url`.
    let (_, docs) = ask(&engine, "Which setting of kioskd chooses the page shown?");
    assert_eq!(docs.first().map(String::as_str), Some("kioskd.md"), "{docs:?}");
}

#[test]
fn reingest_is_a_no_op_and_a_change_replaces_old_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    fn doc(text: &str) -> NewDocument<'_> {
        NewDocument { name: "notes.md", bytes: text.as_bytes(), format: Format::Markdown, collection: DEFAULT_COLLECTION }
    }
    let first = engine.ingest(&doc("# Notes\n\nThe Zebra Router needs firmware 2.1.\n")).unwrap();
    assert!(matches!(first, IngestOutcome::Added { .. }));
    assert!(matches!(engine.ingest(&doc("# Notes\n\nThe Zebra Router needs firmware 2.1.\n")).unwrap(), IngestOutcome::Unchanged { .. }));
    let generation = engine.stats().generation;
    assert!(matches!(engine.ingest(&doc("# Notes\n\nThe Falcon Switch needs firmware 3.0.\n")).unwrap(), IngestOutcome::Replaced { .. }));
    assert_eq!(engine.stats().generation, generation + 1);
    let s = engine.snapshot();
    assert_eq!(s.docs.len(), 1);
    assert!(s.chunks.values().all(|c| !c.text.contains("Zebra")), "old chunks are gone");
    assert!(s.kg.entity_id("zebra router").is_none(), "entities of the old text are gone");
    assert!(s.kg.entity_id("falcon switch").is_some());
}

#[test]
fn delete_removes_chunks_edges_and_orphaned_entities() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    ingest_kb(&engine);
    let id = engine.snapshot().docs.values().find(|d| d.source.ends_with("troubleshooting.md")).unwrap().id.clone();
    let before = engine.stats();
    engine.delete(&id).unwrap();
    let after = engine.stats();
    assert_eq!(after.documents, 2);
    assert!(after.chunks < before.chunks && after.entities < before.entities && after.edges < before.edges);
    assert_eq!(after.indexed_chunks as usize, after.chunks);
    let s = engine.snapshot();
    assert!(s.kg.entity_id("blank screen").is_none(), "only troubleshooting.md mentioned it");
    assert!(s.kg.entity_id("kioskd").is_some(), "still mentioned elsewhere");
    assert!(matches!(engine.delete(&id), Err(EngineError::NotFound(_))));
}

/// A knowledge base with the test documents, closed again; its stats.
fn ingested_and_closed(dir: &Path) -> uag_graphrag::Stats {
    let engine = Engine::open(dir).unwrap();
    ingest_kb(&engine);
    engine.stats()
}

#[test]
fn reopen_rebuilds_the_graph_and_repairs_a_lost_index() {
    let dir = tempfile::tempdir().unwrap();
    let stats = ingested_and_closed(dir.path());
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.stats(), stats);
    drop(engine);
    // Lose the search index: sled is the truth, the index is rebuilt from it.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.stats(), stats);
    let (_, docs) = ask(&engine, "journalctl kioskd logs");
    assert_eq!(docs.first().map(String::as_str), Some("kioskd.md"));
}

#[test]
fn a_second_process_gets_a_clear_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(dir.path()).unwrap();
    let err = Engine::open(dir.path()).unwrap_err();
    assert!(matches!(err, EngineError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another uag process"));
}

#[test]
fn bad_files_in_a_folder_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("good.md"), "# Good\n\nThe Orion Gateway uses port 8443.\n").unwrap();
    std::fs::write(docs.join("binary.txt"), b"\x00\x01\x02garbage").unwrap();
    std::fs::write(docs.join("empty.html"), "<html><body><script>x()</script></body></html>").unwrap();
    std::fs::write(docs.join("manual.pdf"), "%PDF-1.4").unwrap();
    std::fs::write(docs.join("more.md"), "# More\n\nThe Orion Gateway runs on the Vega Board.\n").unwrap();
    let engine = Engine::open(&dir.path().join("kb")).unwrap();
    let w = walk(&[docs]);
    assert_eq!(w.skipped.len(), 1, "the pdf: {:?}", w.skipped);
    let mut batch = engine.begin();
    let results: Vec<_> = w.files.iter().map(|f| (f.clone(), batch.add_path(f, DEFAULT_COLLECTION))).collect();
    batch.finish().unwrap();
    let failed: Vec<_> =
        results.iter().filter(|(_, r)| r.is_err()).map(|(f, _)| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(failed, vec!["binary.txt".to_owned(), "empty.html".to_owned()]);
    assert_eq!(engine.stats().documents, 2, "the good files after the bad ones were still ingested");
    let err =
        Engine::open(&dir.path().join("other")).unwrap().ingest_path(&dir.path().join("docs/manual.pdf"), DEFAULT_COLLECTION).unwrap_err();
    assert!(err.to_string().contains("supported: .txt"), "{err}");
}

#[test]
fn queries_keep_working_during_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    ingest_kb(&engine);
    let writer = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            for i in 0..40 {
                let text = format!("# Unit {i}\n\nThe Unit{i} Module connects to the Kiosk Display over HDMI.\n");
                let name = format!("unit-{i}.md");
                engine
                    .ingest(&NewDocument { name: &name, bytes: text.as_bytes(), format: Format::Markdown, collection: DEFAULT_COLLECTION })
                    .unwrap();
            }
        })
    };
    let mut answered = 0;
    while !writer.is_finished() {
        let (text, docs) = ask(&engine, "What power supply does the Pi 5 need?");
        assert!(text.contains("27 W"), "{text}");
        assert!(!docs.is_empty());
        answered += 1;
    }
    writer.join().unwrap();
    assert!(answered > 0);
    assert_eq!(engine.stats().documents, 43);
}

#[test]
fn collections_filter_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    for (name, collection) in [("public.md", "public"), ("secret.md", "staff")] {
        let text = format!("# {name}\n\nThe Nebula Controller password policy is described in {name}.\n");
        engine.ingest(&NewDocument { name, bytes: text.as_bytes(), format: Format::Markdown, collection }).unwrap();
    }
    let options = QueryOptions { collections: Some(vec!["public".into()]), ..QueryOptions::default() };
    let (retrieval, _) = engine.ask("Nebula Controller password policy", &options, &mut |_| {}).unwrap();
    assert!(!retrieval.passages.is_empty());
    assert!(retrieval.passages.iter().all(|p| p.document == "public.md"));
}

/// A caller limited to one collection asks for an overview: nothing of another collection
/// comes back (the overview walks the whole graph, so a limited caller is answered from
/// their own passages).
#[test]
fn a_broad_question_keeps_to_the_callers_collections() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let alpha = "# Greenhouse\n\nThe greenhouse controller Fernwood opens the roof vents at 28 degrees.\n";
    let beta = "# Vault\n\nThe vault door code is Zanzibar-4471. Only the night guard Quillon knows it.\n";
    for (name, text, collection) in [("alpha.md", alpha, "alpha"), ("beta.md", beta, "beta")] {
        engine.ingest(&NewDocument { name, bytes: text.as_bytes(), format: Format::Markdown, collection }).unwrap();
    }
    let limited = QueryOptions { collections: Some(vec!["alpha".into()]), ..QueryOptions::default() };
    let (retrieval, answer) = engine.ask("Give me an overview of the knowledge base", &limited, &mut |_| {}).unwrap();
    assert!(retrieval.broad);
    for secret in ["Zanzibar", "Quillon", "Vault", "beta.md"] {
        assert!(!answer.text.contains(secret), "{}", answer.text);
        assert!(answer.citations.iter().all(|c| !c.document.contains(secret) && !c.snippet.contains(secret)), "{:?}", answer.citations);
    }
    assert!(answer.citations.iter().all(|c| c.document == "alpha.md"), "{:?}", answer.citations);
}

/// all-MiniLM-L6-v2 from the model directory `scripts/fetch-models.sh` fills (`UAG_MODELS_DIR`
/// overrides), in this process.
struct MiniLm {
    id: &'static str,
    embedder: uag_models::embed::Embedder,
}

impl uag_graphrag::dense::TextEmbedder for MiniLm {
    fn model(&self) -> &str {
        self.id
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.embedder.embed(texts).map_err(|e| e.to_string())
    }
}

fn minilm(id: &'static str) -> Arc<MiniLm> {
    let models = std::env::var_os("UAG_MODELS_DIR").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state"));
        state.join("uag/models")
    });
    let dir = models.join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM is not installed in {}: run `scripts/fetch-models.sh all-minilm-l6-v2`",
        dir.display()
    );
    Arc::new(MiniLm { id, embedder: uag_models::embed::Embedder::load(&dir).unwrap() })
}

fn sources(engine: &Engine, question: &str, mode: uag_graphrag::RetrievalMode, collections: Option<Vec<String>>) -> Vec<String> {
    let options = QueryOptions { top_k: 3, mode, collections };
    let retrieval = engine.retrieve(question, &options, &mut |_| {}).unwrap();
    retrieval.passages.iter().map(|p| p.document.clone()).collect()
}

#[test]
fn dense_retrieval_finds_a_paraphrase_and_its_vectors_follow_the_documents() {
    use uag_graphrag::RetrievalMode::{Bm25, Dense, Fused};
    let dir = tempfile::tempdir().unwrap();
    let docs = [
        ("reboot.md", "# Shutting down\n\nTo reboot the machine, run `systemctl reboot` as root.\n"),
        ("cats.md", "# Pets\n\nCats sleep most of the day in a warm place near the window.\n"),
        ("printers.md", "# Printing\n\nCUPS manages the printers; add a queue with lpadmin.\n"),
    ];
    let question = "How can I restart my computer?";
    {
        let engine = Engine::open(dir.path()).unwrap();
        let mut batch = engine.begin();
        for (name, text) in docs {
            batch.add(&NewDocument { name, bytes: text.as_bytes(), format: Format::Markdown, collection: "manuals" }).unwrap();
        }
        batch.finish().unwrap();
        // No word of the question is in the right document: BM25 cannot find it.
        assert!(sources(&engine, question, Bm25, None).first().is_none_or(|d| d != "reboot.md"));
        assert_eq!(engine.set_embedder(minilm("all-minilm-l6-v2")).unwrap(), 0);
        assert_eq!(engine.missing_vectors(), 3);
        assert_eq!(engine.embed_missing(&mut |_, _| {}).unwrap(), 3);
        assert_eq!(engine.missing_vectors(), 0);
        assert_eq!(sources(&engine, question, Dense, None).first().map(String::as_str), Some("reboot.md"));
        assert_eq!(sources(&engine, question, Fused, None).first().map(String::as_str), Some("reboot.md"));
        // Dense ranking keeps to the caller's collections too.
        assert!(sources(&engine, question, Dense, Some(vec!["other".into()])).is_empty());
        let stats = engine.stats();
        assert_eq!((stats.embedded_chunks, stats.embedding_model.as_deref()), (3, Some("all-minilm-l6-v2")));
    }
    {
        // The vectors are stored: a restart embeds nothing again.
        let engine = Engine::open(dir.path()).unwrap();
        assert_eq!(engine.set_embedder(minilm("all-minilm-l6-v2")).unwrap(), 3);
        assert_eq!(engine.missing_vectors(), 0);
        let id = uag_graphrag::engine::document_id("manuals", "reboot.md");
        engine.delete(&id).unwrap();
        assert!(!sources(&engine, question, Dense, None).contains(&"reboot.md".to_owned()));
        // A replaced document's chunks need new vectors; the old ones go with the old chunks.
        let text = "# Pets\n\nDogs need a walk twice a day.\n";
        engine.ingest(&NewDocument { name: "cats.md", bytes: text.as_bytes(), format: Format::Markdown, collection: "manuals" }).unwrap();
        assert_eq!(engine.missing_vectors(), 1);
        assert_eq!(engine.embed_missing(&mut |_, _| {}).unwrap(), 1);
    }
    // Vectors of another model are not comparable: a model change embeds everything again.
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.set_embedder(minilm("another-model")).unwrap(), 0);
    assert_eq!(engine.missing_vectors(), engine.stats().chunks);
}

#[test]
fn the_same_name_in_another_collection_is_another_document_and_old_ids_are_rekeyed() {
    use uag_graphrag::extract::{ExtractChunk, extract};
    use uag_graphrag::store::{ChunkRecord, DocRecord, Store};
    let dir = tempfile::tempdir().unwrap();
    // A knowledge base from before ids per collection: the id came from the name alone.
    {
        let store = Store::open(&dir.path().join("store")).unwrap();
        let text = "The Delta Pump needs a 48 V supply.";
        let chunk = ChunkRecord {
            id: 42,
            doc_id: "0123456789abcdef".into(),
            ordinal: 0,
            section: vec!["Pump".into()],
            text: text.into(),
            code_terms: Vec::new(),
        };
        let graph = extract(&[ExtractChunk { id: 42, text, code_terms: &[] }]);
        let doc = DocRecord {
            id: "0123456789abcdef".into(),
            source: "manual.md".into(),
            title: "Pump".into(),
            content_hash: "old".into(),
            collection: "alpha".into(),
            chunk_ids: vec![42],
            bytes: text.len() as u64,
            ingested_at: 0,
        };
        store.put(&doc, &[chunk], &graph, None).unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    let (_, docs) = ask(&engine, "What supply does the Delta Pump need?");
    assert_eq!(docs, ["manual.md"], "an old knowledge base keeps working");
    let md = |text: &'static str, collection: &'static str| NewDocument {
        name: "manual.md",
        bytes: text.as_bytes(),
        format: Format::Markdown,
        collection,
    };

    // The same name in beta: a new document; alpha's is untouched.
    let outcome = engine.ingest(&md("# Printer\n\nThe Orion Printer takes A4 paper.\n", "beta")).unwrap();
    assert_eq!(outcome, IngestOutcome::Added { id: uag_graphrag::engine::document_id("beta", "manual.md"), chunks: 1 });
    let s = engine.snapshot();
    assert_eq!(s.docs.len(), 2);
    assert_eq!(s.docs["0123456789abcdef"].collection, "alpha");
    drop(s);

    // The same name in alpha again: it replaces the old document and takes the new id, leaving
    // nothing under the old one (record, graph, search index).
    let outcome = engine.ingest(&md("# Pump\n\nThe Delta Pump now needs a 24 V supply.\n", "alpha")).unwrap();
    let new_id = uag_graphrag::engine::document_id("alpha", "manual.md");
    let beta_id = uag_graphrag::engine::document_id("beta", "manual.md");
    assert_eq!(outcome, IngestOutcome::Replaced { id: new_id.clone(), chunks: 1 });
    let check = |engine: &Engine| {
        let s = engine.snapshot();
        let mut ids: Vec<&str> = s.docs.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let mut expected = vec![new_id.as_str(), beta_id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert!(s.chunks.values().all(|c| !c.text.contains("48 V")), "the old chunk is gone");
        let mut graphs = engine.stored_graph_ids().unwrap();
        graphs.sort_unstable();
        assert_eq!(graphs, expected);
        assert_eq!(engine.stats().indexed_chunks as usize, s.chunks.len());
    };
    check(&engine);
    drop(engine);
    check(&Engine::open(dir.path()).unwrap());
}

/// A caller limited to one collection still gets its passage when other collections hold many
/// better matches: the filter is inside BM25 and the graph, not a cut after their top 30.
#[test]
fn a_restricted_caller_is_not_crowded_out_by_other_collections() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("big-{i}.md")).collect();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("# Pump {i}\n\nThe Delta Pump maintenance interval is {i} weeks; the Delta Pump maintenance log lists every Delta Pump maintenance check.\n"))
        .collect();
    let mut batch = engine.begin();
    for (name, text) in names.iter().zip(&texts) {
        batch.add(&NewDocument { name, bytes: text.as_bytes(), format: Format::Markdown, collection: "big" }).unwrap();
    }
    let small = "# Hall B\n\nThe Delta Pump stands in hall B, next to the maintenance door.\n";
    batch.add(&NewDocument { name: "small.md", bytes: small.as_bytes(), format: Format::Markdown, collection: "small" }).unwrap();
    batch.finish().unwrap();
    for mode in [uag_graphrag::RetrievalMode::Bm25, uag_graphrag::RetrievalMode::Fused] {
        let options = QueryOptions { top_k: 5, mode, collections: Some(vec!["small".into()]) };
        let retrieval = engine.retrieve("Delta Pump maintenance interval", &options, &mut |_| {}).unwrap();
        let docs: Vec<&str> = retrieval.passages.iter().map(|p| p.document.as_str()).collect();
        assert_eq!(docs, ["small.md"], "{mode:?}");
        assert_eq!(retrieval.passages[0].bm25_rank, Some(1), "{mode:?}: BM25 ranked only the allowed chunks");
    }
}

#[test]
fn a_corrupt_search_index_is_rebuilt_from_the_store_instead_of_stopping_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let stats = ingested_and_closed(dir.path());
    // Garbage where tantivy keeps its segment list (a power cut mid-write, a bad SD card).
    std::fs::write(dir.path().join("index/meta.json"), b"{\"segments\": [garbage").unwrap();
    let engine = Engine::open(dir.path()).expect("start-up survives a corrupt index");
    assert_eq!(engine.stats(), stats);
    let (_, docs) = ask(&engine, "journalctl kioskd logs");
    assert_eq!(docs.first().map(String::as_str), Some("kioskd.md"));
    drop(engine);
    // And a segment file cut short.
    let segment = std::fs::read_dir(dir.path().join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "idx" || e == "term"))
        .expect("a segment file");
    std::fs::write(&segment, b"cut").unwrap();
    let engine = Engine::open(dir.path()).expect("start-up survives a truncated segment");
    let (_, docs) = ask(&engine, "journalctl kioskd logs");
    assert_eq!(docs.first().map(String::as_str), Some("kioskd.md"));
}
