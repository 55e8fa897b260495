//! Reliability: `uag ingest` is killed with SIGKILL at random points, many times; after each
//! kill the store is reopened and must hold every acknowledged document whole, no partial
//! document, and a search index that agrees with it.

// A plain test driving child processes: no async runtime to block.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use uag_graphrag::engine::document_id;
use uag_graphrag::{Engine, QueryOptions};

const FILES: usize = 60;
const ROUNDS: usize = 25;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn write_doc(dir: &Path, i: usize, revision: usize) -> String {
    let path = dir.join(format!("device-{i:03}.md"));
    let mut text = format!("# Device {i}\n\n");
    for s in 0..4 {
        text.push_str(&format!(
            "## Part {s}\n\nRevision {revision} of the Model{i} Unit{s} connects to the Hub{} Bridge. The Model{i} Unit{s} requires firmware {revision}.{s}.\n\n",
            (i + s) % 7
        ));
    }
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn sigkill_at_random_points_never_leaves_a_partial_document() {
    let root = tempfile::tempdir().unwrap();
    let docs = root.path().join("docs");
    let data = root.path().join("data");
    std::fs::create_dir_all(&docs).unwrap();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    // path -> revisions written so far (any of them may be the stored one).
    let mut written: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for i in 0..FILES {
        written.entry(write_doc(&docs, i, 0)).or_default().insert(0);
    }
    // Time one complete ingest of the same folder, so kills can be aimed inside the run
    // whatever the machine's speed.
    let mut full = {
        let started = std::time::Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_uag"))
            .arg("ingest")
            .arg(&docs)
            .env("UAG__STORAGE__DATA_DIR", root.path().join("timing"))
            .env_remove("UAG_CONFIG")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        started.elapsed()
    };
    let mut interrupted = 0;
    let mut acknowledged_total = 0;
    for round in 1..=ROUNDS {
        // Change half the documents every round: each run has real work, and replacements get
        // killed too.
        let mut current: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..FILES / 2 {
            let i = rng.below(FILES as u64) as usize;
            let path = write_doc(&docs, i, round);
            written.entry(path.clone()).or_default().insert(round);
            current.insert(path, round);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_uag"))
            .arg("ingest")
            .arg(&docs)
            .env("UAG__STORAGE__DATA_DIR", &data)
            .env_remove("UAG_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from process start-up to just past the end of a full run.
        let millis = full.as_millis() as u64;
        let delay = Duration::from_millis(rng.below(millis + millis / 10 + 1));
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        } else {
            // This run was over within `delay`, so a run takes no longer than that now: the timed
            // run may have met a busier machine, and later kills must still land inside runs.
            full = full.min(delay);
        }
        // Lines printed before the kill: each names a document the store had flushed.
        let acknowledged: Vec<String> = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                match parts.next() {
                    Some("added" | "replaced" | "unchanged") => parts.nth(1).map(str::to_owned),
                    _ => None,
                }
            })
            .collect();
        acknowledged_total += acknowledged.len();

        let engine = Engine::open(&data.join("graphrag")).expect("the store reopens after SIGKILL");
        let snapshot = engine.snapshot();
        for path in &acknowledged {
            let doc = snapshot
                .docs
                .get(&document_id(uag_graphrag::engine::DEFAULT_COLLECTION, path))
                .unwrap_or_else(|| panic!("round {round}: acknowledged {path} is missing"));
            // Acknowledged this round: the stored text is this round's when the file changed now.
            if let Some(revision) = current.get(path) {
                let first = snapshot.chunks.get(&doc.chunk_ids[0]).unwrap();
                assert!(first.text.contains(&format!("Revision {revision} ")), "round {round}: {path} holds an old revision");
            }
        }
        let graph_ids = engine.stored_graph_ids().unwrap();
        assert_eq!(graph_ids.len(), snapshot.docs.len(), "round {round}: graph records without documents");
        // No partial document: every stored document has all its chunks and its graph, and
        // no chunk belongs to a document that does not list it.
        for doc in snapshot.docs.values() {
            assert!(!doc.chunk_ids.is_empty());
            for id in &doc.chunk_ids {
                let chunk = snapshot.chunks.get(id).unwrap_or_else(|| panic!("round {round}: {} lost chunk {id}", doc.source));
                assert_eq!(chunk.doc_id, doc.id);
            }
            assert!(graph_ids.contains(&doc.id), "round {round}: {} has no graph record", doc.source);
            let revisions = &written[&doc.source];
            let first = &snapshot.chunks[&doc.chunk_ids[0]].text;
            assert!(revisions.iter().any(|r| first.contains(&format!("Revision {r} "))), "round {round}: unknown content");
        }
        let listed: usize = snapshot.docs.values().map(|d| d.chunk_ids.len()).sum();
        assert_eq!(listed, snapshot.chunks.len(), "round {round}: orphaned chunks");
        let stats = engine.stats();
        assert_eq!(stats.indexed_chunks as usize, stats.chunks, "round {round}: search index and store disagree");
        if let Some(path) = acknowledged.first() {
            let name = Path::new(path).file_stem().unwrap().to_string_lossy().replace("device-", "");
            let n: usize = name.parse().unwrap();
            let (retrieval, _) =
                engine.ask(&format!("What firmware does the Model{n} Unit2 require?"), &QueryOptions::default(), &mut |_| {}).unwrap();
            assert!(retrieval.passages.iter().any(|p| p.document == *path), "round {round}: {path} is not searchable");
        }
    }
    assert!(interrupted >= ROUNDS / 4, "kills should land mid-ingest ({interrupted} of {ROUNDS})");
    assert!(acknowledged_total > 0, "some documents were acknowledged before kills");
}
