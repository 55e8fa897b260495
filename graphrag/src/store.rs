//! Durable storage in sled, the source of truth. One tree, key prefixes:
//! `doc/<id>` document record, `chunk/<id:016x>` chunk, `graph/<doc id>` the document's
//! knowledge-graph contribution, `vec/<chunk id:016x>` the chunk's embedding (tagged with the
//! model and passage recipe that made it), `meta/generation` a counter bumped by every document change.
//! Vectors are derived data: writing them does not bump the generation.
//! A document's records change in one atomic batch, and a change is acknowledged only after
//! `flush` returned: after a crash, a document is either whole or absent.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::extract::DocGraph;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    pub id: String,
    /// Where it came from: a path, or the name given at upload.
    pub source: String,
    pub title: String,
    /// sha256 of the raw bytes; an unchanged re-ingest is a no-op.
    pub content_hash: String,
    pub collection: String,
    pub chunk_ids: Vec<u64>,
    pub bytes: u64,
    pub ingested_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: u64,
    pub doc_id: String,
    pub ordinal: u32,
    /// Heading path, outermost first.
    pub section: Vec<String>,
    pub text: String,
    pub code_terms: Vec<String>,
}

/// A chunk's id and its embedding.
pub type ChunkVector = (u64, Vec<f32>);

const GENERATION: &[u8] = b"meta/generation";
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

fn doc_key(id: &str) -> Vec<u8> {
    format!("doc/{id}").into_bytes()
}
fn chunk_key(id: u64) -> Vec<u8> {
    format!("chunk/{id:016x}").into_bytes()
}
fn vector_key(id: u64) -> Vec<u8> {
    format!("vec/{id:016x}").into_bytes()
}
fn graph_key(doc_id: &str) -> Vec<u8> {
    format!("graph/{doc_id}").into_bytes()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| EngineError::Storage(e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| EngineError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// Everything in the store, read at start-up.
#[derive(Debug, Default)]
pub struct Contents {
    pub docs: BTreeMap<String, DocRecord>,
    pub chunks: BTreeMap<u64, ChunkRecord>,
    pub generation: u64,
}

/// How long opening waits for a lock that a store just dropped in this process still holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| EngineError::Read { path: path.to_path_buf(), source })?;
        // sled caches up to 1 GiB of pages by default; the engine keeps its own decoded copy of
        // everything, so a small cache is enough (and matters on a 4 GB board).
        // No background flusher: every write here flushes before it is acknowledged anyway, and
        // sled's flusher thread kept the file lock for up to its 500 ms period after the store was
        // dropped, so reopening a knowledge base in the same process could fail as "locked".
        let config = sled::Config::new().path(path).mode(sled::Mode::LowSpace).cache_capacity(CACHE_BYTES).flush_every_ms(None);
        // sled reports a held file lock as an I/O error mentioning the lock.
        let locked = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.to_string().to_lowercase().contains("lock") || io.kind() == std::io::ErrorKind::WouldBlock);
        // A store dropped in this process lets go of its lock only once sled's I/O pool has
        // finished the last buffer writes it queued (moments later), so reopening right after a
        // drop waits for that; a lock another process holds is reported after the wait.
        let started = std::time::Instant::now();
        loop {
            match config.open() {
                Ok(db) => return Ok(Self { db }),
                Err(e) if locked(&e) && started.elapsed() < LOCK_WAIT => {
                    // Opening is blocking by nature (sled reads the store from disk) and happens at
                    // start-up or in a CLI command, never on a serving worker.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if locked(&e) => return Err(EngineError::Locked { path: path.to_path_buf() }),
                Err(e) => return Err(EngineError::from(e)),
            }
        }
    }

    pub fn generation(&self) -> Result<u64> {
        Ok(self.db.get(GENERATION)?.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
    }

    pub fn load(&self) -> Result<Contents> {
        let mut c = Contents { generation: self.generation()?, ..Contents::default() };
        for item in self.db.scan_prefix(b"doc/") {
            let (k, v) = item?;
            let doc: DocRecord = decode(&k, &v)?;
            c.docs.insert(doc.id.clone(), doc);
        }
        for item in self.db.scan_prefix(b"chunk/") {
            let (k, v) = item?;
            let chunk: ChunkRecord = decode(&k, &v)?;
            c.chunks.insert(chunk.id, chunk);
        }
        Ok(c)
    }

    /// Calls `f` with every document's knowledge-graph contribution, one decoded at a time.
    pub fn for_each_graph(&self, f: &mut dyn FnMut(&DocGraph)) -> Result<()> {
        for item in self.db.scan_prefix(b"graph/") {
            let (k, v) = item?;
            let graph: DocGraph = decode(&k, &v)?;
            f(&graph);
        }
        Ok(())
    }

    /// Ids of the documents whose contribution is stored.
    pub fn graph_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for key in self.db.scan_prefix(b"graph/").keys() {
            let key = key?;
            ids.push(String::from_utf8_lossy(&key["graph/".len()..]).into_owned());
        }
        Ok(ids)
    }

    /// The stored vectors tagged `tag` (model and passage recipe: those of other models are
    /// not comparable and are left for [`Store::put_vectors`] to overwrite), and how many stored ones belong to no chunk
    /// any more (removed here: a document deleted while its vectors were computed).
    pub fn load_vectors(&self, tag: &str, live: &dyn Fn(u64) -> bool) -> Result<(Vec<ChunkVector>, usize)> {
        let mut out = Vec::new();
        let mut orphans = sled::Batch::default();
        let mut removed = 0;
        for item in self.db.scan_prefix(b"vec/") {
            let (k, v) = item?;
            let id = std::str::from_utf8(&k[b"vec/".len()..]).ok().and_then(|h| u64::from_str_radix(h, 16).ok());
            let Some(id) = id.filter(|id| live(*id)) else {
                orphans.remove(k);
                removed += 1;
                continue;
            };
            match crate::dense::decode_vector(&v) {
                Some((t, vector)) if t == tag => out.push((id, vector)),
                Some(_) => {}
                None => {
                    orphans.remove(k);
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.db.apply_batch(orphans)?;
        }
        Ok((out, removed))
    }

    /// Stores chunk vectors tagged `tag`, durably.
    pub fn put_vectors(&self, tag: &str, vectors: &[ChunkVector]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (id, vector) in vectors {
            batch.insert(vector_key(*id), crate::dense::encode_vector(tag, vector));
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Replaces `replaced` (if any) by the new document, atomically and durably. Returns the
    /// new generation.
    pub fn put(&self, doc: &DocRecord, chunks: &[ChunkRecord], graph: &DocGraph, replaced: Option<&DocRecord>) -> Result<u64> {
        let mut batch = sled::Batch::default();
        if let Some(old) = replaced {
            for id in &old.chunk_ids {
                batch.remove(chunk_key(*id));
                batch.remove(vector_key(*id));
            }
            // A document re-keyed (ids per collection) leaves nothing under its old id.
            if old.id != doc.id {
                batch.remove(graph_key(&old.id));
                batch.remove(doc_key(&old.id));
            }
        }
        for chunk in chunks {
            batch.insert(chunk_key(chunk.id), encode(chunk)?);
        }
        batch.insert(graph_key(&doc.id), encode(graph)?);
        batch.insert(doc_key(&doc.id), encode(doc)?);
        self.commit(batch)
    }

    pub fn delete(&self, doc: &DocRecord) -> Result<u64> {
        let mut batch = sled::Batch::default();
        for id in &doc.chunk_ids {
            batch.remove(chunk_key(*id));
            batch.remove(vector_key(*id));
        }
        batch.remove(graph_key(&doc.id));
        batch.remove(doc_key(&doc.id));
        self.commit(batch)
    }

    fn commit(&self, mut batch: sled::Batch) -> Result<u64> {
        let generation = self.generation()? + 1;
        batch.insert(GENERATION, &generation.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(generation)
    }
}
