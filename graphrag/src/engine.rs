//! The engine: ingest, delete, query. Owns the store (truth), the chunk index and an
//! immutable [`Snapshot`] of everything queries need, swapped atomically after each change,
//! so queries never wait for an ingest and never see half a document.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::answer::{Answer, synthesize};
use crate::chunk::{ChunkLimits, chunk};
use crate::dense::{Dense, TextEmbedder, Vectors, passage_text, vector_tag};
use crate::error::{EngineError, Result};
use crate::extract::{ExtractChunk, extract};
use crate::index::ChunkIndex;
use crate::kg::{KnowledgeGraph, is_broad_question};
use crate::parse::{Format, parse};
use crate::store::{ChunkRecord, DocRecord, Store};

/// Bumped when parsing or chunking changes what a document's chunks hold (2: code listings
/// keep their lines).
const PARSER_VERSION: &[u8] = b"uag-parse-2\0";

/// The collection documents land in unless told otherwise.
pub const DEFAULT_COLLECTION: &str = "default";

/// What queries read: an immutable view of the knowledge base. The per-document graph
/// contributions are not kept: they are large (every co-occurring pair, by name) and only
/// needed to rebuild the graph, which reads them from the store.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub docs: BTreeMap<String, DocRecord>,
    pub chunks: HashMap<u64, Arc<ChunkRecord>>,
    pub kg: KnowledgeGraph,
}

impl Snapshot {
    /// The graph comes from the contributions in `store`, streamed (three passes).
    fn build(docs: BTreeMap<String, DocRecord>, chunks: HashMap<u64, Arc<ChunkRecord>>, store: &Store) -> Result<Self> {
        let kg = KnowledgeGraph::build_streaming(&mut |f| store.for_each_graph(f), chunks.len())?;
        Ok(Self { docs, chunks, kg })
    }
}

/// Which ranking a query uses (the evaluation compares them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalMode {
    Bm25,
    Graph,
    /// Cosine similarity of chunk embeddings alone (nothing without an embedder).
    Dense,
    /// BM25, the graph and (when an embedder is set) the dense ranking, fused.
    Fused,
}

impl RetrievalMode {
    fn uses_bm25(self) -> bool {
        matches!(self, Self::Bm25 | Self::Fused)
    }
    fn uses_graph(self) -> bool {
        matches!(self, Self::Graph | Self::Fused)
    }
    fn uses_dense(self) -> bool {
        matches!(self, Self::Dense | Self::Fused)
    }
}

#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub top_k: usize,
    pub mode: RetrievalMode,
    /// Only chunks of documents in these collections (None: all).
    pub collections: Option<Vec<String>>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self { top_k: 5, mode: RetrievalMode::Fused, collections: None }
    }
}

/// A stage of the query pipeline, reported as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub stage: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Passage {
    pub chunk: Arc<ChunkRecord>,
    pub document: String,
    pub title: String,
    pub score: f32,
    pub bm25_rank: Option<usize>,
    pub graph_rank: Option<usize>,
    pub dense_rank: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Retrieval {
    pub passages: Vec<Passage>,
    /// Entities linked in the question.
    pub seeds: Vec<String>,
    /// Entities reached by graph expansion.
    pub expanded: usize,
    pub broad: bool,
    pub snapshot: Arc<Snapshot>,
    /// The collections the caller may see (None: all); answers built from the snapshot
    /// beyond the passages (the overview) must keep to them.
    pub collections: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Added { id: String, chunks: usize },
    Replaced { id: String, chunks: usize },
    Unchanged { id: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub documents: usize,
    pub chunks: usize,
    pub entities: usize,
    pub edges: usize,
    pub typed_relations: usize,
    pub communities: usize,
    pub indexed_chunks: u64,
    /// Chunks with a vector of the current embedding model.
    pub embedded_chunks: usize,
    /// That model (None: no embedder set, dense retrieval off).
    pub embedding_model: Option<String>,
    pub generation: u64,
}

/// A document to ingest from memory (an upload).
#[derive(Debug, Clone)]
pub struct NewDocument<'a> {
    /// Its name: a file name or path; decides the id and, without a MIME type, the format.
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub format: Format,
    pub collection: &'a str,
}

pub struct Engine {
    dir: PathBuf,
    store: Store,
    index: ChunkIndex,
    snapshot: RwLock<Arc<Snapshot>>,
    /// One writer at a time; queries never take it.
    writer: Mutex<()>,
    limits: ChunkLimits,
    dense: RwLock<Dense>,
    /// One embedding pass at a time (a second caller leaves the work to the first).
    embedding: Mutex<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stable id of a document: from its collection and name, so re-ingesting the same file into
/// the same collection replaces it, and the same name in another collection is another
/// document (an upload to one collection can neither replace nor reveal a document of another).
pub fn document_id(collection: &str, name: &str) -> String {
    hex(&Sha256::new().chain_update(collection).chain_update([0u8]).chain_update(name).finalize()[..8])
}

fn chunk_id(doc_id: &str, ordinal: usize, text: &str) -> u64 {
    let digest = Sha256::new().chain_update(doc_id).chain_update(ordinal.to_le_bytes()).chain_update(text).finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// Opens the search index, or, when it cannot be read (a torn write, a bad SD card: files that
/// fail their checksums, a segment list that does not parse), deletes it and starts an empty
/// one, which `Engine::open` then rebuilds from the store. The index is derived data; an
/// appliance must not need someone to delete it by hand before it starts again.
fn open_index(path: &Path) -> Result<ChunkIndex> {
    let checked = ChunkIndex::open(path).and_then(|index| index.check().map(|()| index));
    match checked {
        Ok(index) => Ok(index),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "the search index cannot be read; deleting it and rebuilding it from the store");
            std::fs::remove_dir_all(path).map_err(|source| EngineError::Read { path: path.to_path_buf(), source })?;
            ChunkIndex::open(path)
        }
    }
}

impl Engine {
    /// Opens (or creates) the knowledge base under `dir`, taking its lock, and brings the
    /// search index level with the store.
    pub fn open(dir: &Path) -> Result<Self> {
        let store = Store::open(&dir.join("store"))?;
        let index = open_index(&dir.join("index"))?;
        let contents = store.load()?;
        if index.generation()? != contents.generation || index.num_docs() != contents.chunks.len() as u64 {
            tracing::warn!(
                index = index.generation()?,
                store = contents.generation,
                "search index is behind the store; rebuilding it from the store"
            );
            let items = contents.chunks.values().filter_map(|c| contents.docs.get(&c.doc_id).map(|d| (d, c)));
            index.rebuild(items, contents.generation)?;
        }
        let chunks = contents.chunks.into_iter().map(|(id, c)| (id, Arc::new(c))).collect();
        let snapshot = Snapshot::build(contents.docs, chunks, &store)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            store,
            index,
            snapshot: RwLock::new(Arc::new(snapshot)),
            writer: Mutex::new(()),
            limits: ChunkLimits::default(),
            dense: RwLock::new(Dense::default()),
            embedding: Mutex::new(()),
        })
    }

    /// Turns dense retrieval on with `embedder`: loads the vectors it made before (those of
    /// another model are recomputed by [`Engine::embed_missing`]). Returns how many were loaded.
    pub fn set_embedder(&self, embedder: Arc<dyn TextEmbedder>) -> Result<usize> {
        let snapshot = self.snapshot();
        let tag = vector_tag(embedder.model());
        let (stored, orphans) = self.store.load_vectors(&tag, &|id| snapshot.chunks.contains_key(&id))?;
        if orphans > 0 {
            tracing::info!(orphans, "removed stored vectors of chunks that no longer exist");
        }
        let mut vectors = Vectors::new(&tag);
        for (id, v) in &stored {
            vectors.insert(*id, v);
        }
        let mut dense = self.dense.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *dense = Dense { embedder: Some(embedder), vectors: Arc::new(vectors) };
        Ok(stored.len())
    }

    fn dense(&self) -> (Option<Arc<dyn TextEmbedder>>, Arc<Vectors>) {
        let dense = self.dense.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (dense.embedder.clone(), Arc::clone(&dense.vectors))
    }

    /// Chunks that have no vector of the current model yet (0 without an embedder).
    pub fn missing_vectors(&self) -> usize {
        let (embedder, vectors) = self.dense();
        if embedder.is_none() {
            return 0;
        }
        self.snapshot().chunks.keys().filter(|id| !vectors.contains(**id)).count()
    }

    /// Embeds every chunk that has no vector of the current model, in batches, each stored
    /// durably and searchable as soon as it is done; `progress(done, total)` after each. Until
    /// then those chunks are found by BM25 and the graph only. Returns how many were embedded;
    /// 0 at once when another call is already at it (it picks up new chunks before it ends).
    pub fn embed_missing(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<usize> {
        // Small batches: a `/v1/embeddings` request waits behind at most one (about 2 s on
        // two x86 cores).
        const BATCH: usize = 8;
        let Ok(_guard) = self.embedding.try_lock() else { return Ok(0) };
        let mut embedded = 0;
        // A chunk is tried once per call: one the embedder cannot serve does not loop forever.
        let mut tried = std::collections::HashSet::new();
        loop {
            let (Some(embedder), vectors) = self.dense() else { return Ok(embedded) };
            let snapshot = self.snapshot();
            let mut missing: Vec<&Arc<ChunkRecord>> =
                snapshot.chunks.values().filter(|c| !vectors.contains(c.id) && !tried.contains(&c.id)).collect();
            if missing.is_empty() {
                // Drop the vectors of replaced and deleted chunks from the table.
                if vectors.len() > snapshot.chunks.len() {
                    let live = snapshot.chunks.keys().copied().collect();
                    self.publish_vectors(&vector_tag(embedder.model()), |v| *v = v.retain(&live));
                }
                return Ok(embedded);
            }
            missing.sort_by_key(|c| (c.doc_id.clone(), c.ordinal));
            tried.extend(missing.iter().map(|c| c.id));
            let total = missing.len();
            for (n, batch) in missing.chunks(BATCH).enumerate() {
                let texts: Vec<String> = batch.iter().map(|c| passage_text(snapshot.docs.get(&c.doc_id), c)).collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let vectors = embedder.embed(&refs).map_err(EngineError::Embedding)?;
                if vectors.len() != batch.len() {
                    return Err(EngineError::Embedding(format!("{} vectors for {} texts", vectors.len(), batch.len())));
                }
                let rows: Vec<(u64, Vec<f32>)> = batch.iter().map(|c| c.id).zip(vectors).collect();
                let tag = vector_tag(embedder.model());
                self.store.put_vectors(&tag, &rows)?;
                self.publish_vectors(&tag, |v| {
                    for (id, vector) in &rows {
                        v.insert(*id, vector);
                    }
                });
                embedded += rows.len();
                progress((n * BATCH + batch.len()).min(total), total);
            }
        }
    }

    /// Copy-on-write update of the vector table, unless the embedder changed meanwhile.
    fn publish_vectors(&self, tag: &str, change: impl FnOnce(&mut Vectors)) {
        let mut dense = self.dense.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if dense.vectors.tag() != tag {
            return;
        }
        let mut next = (*dense.vectors).clone();
        change(&mut next);
        dense.vectors = Arc::new(next);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().docs.is_empty()
    }

    /// Ingests a file from disk (format by extension).
    pub fn ingest_path(&self, path: &Path, collection: &str) -> Result<IngestOutcome> {
        let mut batch = self.begin();
        let outcome = batch.add_path(path, collection);
        batch.finish()?;
        outcome
    }

    /// Ingests one in-memory document.
    pub fn ingest(&self, doc: &NewDocument<'_>) -> Result<IngestOutcome> {
        let mut batch = self.begin();
        let outcome = batch.add(doc);
        batch.finish()?;
        outcome
    }

    /// Starts a batch of ingests: each document is durable when `add` returns, the search
    /// index commits and the graph is rebuilt once at `finish`.
    pub fn begin(&self) -> IngestBatch<'_> {
        let guard = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.snapshot();
        IngestBatch { engine: self, _guard: guard, docs: current.docs.clone(), chunks: current.chunks.clone(), generation: None }
    }

    /// Deletes a document: its chunks, its graph contribution, and so the entities no other
    /// document mentions.
    pub fn delete(&self, id: &str) -> Result<DocRecord> {
        let mut batch = self.begin();
        let doc = batch.docs.get(id).cloned().ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let generation = self.store.delete(&doc)?;
        // The store is ahead now; should this fail, start-up rebuilds the index from it.
        self.index.stage_delete(&doc.id)?;
        for c in &doc.chunk_ids {
            batch.chunks.remove(c);
        }
        batch.docs.remove(&doc.id);
        batch.generation = Some(generation);
        batch.finish()?;
        Ok(doc)
    }

    /// The store's generation: every ingest that changes a document and every delete bumps
    /// it, and it survives restarts, so caches of answers can tell when the knowledge base
    /// changed (also through `uag ingest` while no server ran).
    pub fn generation(&self) -> Result<u64> {
        self.store.generation()
    }

    pub fn stats(&self) -> Stats {
        let s = self.snapshot();
        let (embedder, vectors) = self.dense();
        Stats {
            embedded_chunks: if embedder.is_some() { s.chunks.keys().filter(|id| vectors.contains(**id)).count() } else { 0 },
            embedding_model: embedder.map(|e| e.model().to_owned()),
            documents: s.docs.len(),
            chunks: s.chunks.len(),
            entities: s.kg.entities.len(),
            edges: s.kg.edge_count(),
            typed_relations: s.kg.relation_count(),
            communities: s.kg.communities.len(),
            indexed_chunks: self.index.num_docs(),
            generation: self.store.generation().unwrap_or(0),
        }
    }

    /// Runs the retrieval pipeline, reporting each stage to `progress`.
    pub fn retrieve(&self, question: &str, options: &QueryOptions, progress: &mut dyn FnMut(Progress)) -> Result<Retrieval> {
        let snapshot = self.snapshot();
        let kg = &snapshot.kg;
        progress(Progress { stage: "searching", message: "Searching knowledge graph".into() });
        let pool = (options.top_k * 6).max(30);
        // A visitor's "hi, quick question" is not what they are looking for.
        let query = crate::text::without_chatter(question);
        // The caller's collections filter inside each ranking, before any top-k cut: chunks of
        // other collections are never scored, so they cannot crowd the allowed ones out.
        let allowed_docs: Option<Vec<&str>> = options
            .collections
            .as_ref()
            .map(|list| snapshot.docs.values().filter(|d| list.contains(&d.collection)).map(|d| d.id.as_str()).collect());
        let allowed = |chunk: &ChunkRecord| match &options.collections {
            None => true,
            Some(list) => snapshot.docs.get(&chunk.doc_id).is_some_and(|d| list.contains(&d.collection)),
        };
        let allowed_id = |id: u64| snapshot.chunks.get(&id).is_some_and(|c| allowed(c));
        let bm25 = if options.mode.uses_bm25() { self.index.search(&query, pool, allowed_docs.as_deref())? } else { Vec::new() };
        let dense = if options.mode.uses_dense() { self.dense_search(&query, pool, &allowed_id) } else { Vec::new() };
        let seeds = kg.link(&query);
        let seed_names: Vec<String> = seeds.iter().map(|(id, _)| kg.entities[*id as usize].name.clone()).collect();
        progress(Progress { stage: "expanding", message: format!("Expanding {} entities", seeds.len()) });
        let (graph, expanded) = if !options.mode.uses_graph() || seeds.is_empty() {
            (Vec::new(), 0)
        } else {
            let scores = kg.personalized_pagerank(&seeds, 0.2, 1e-5);
            (kg.chunk_scores(&scores, pool, &allowed_id), scores.len())
        };
        progress(Progress { stage: "ranking", message: "Ranking passages".into() });
        // Reciprocal rank fusion: robust to the scores' different scales. The graph list
        // counts less than BM25: it is broader, and meant to add, not to replace.
        const RRF_K: f32 = 60.0;
        // Dense similarity counts double: on the tuning set (docs/eval/handbook-questions.jsonl)
        // it alone beats BM25 by 0.2 recall@5, and BM25 1, graph 0.5, dense 2 was the best of
        // the weights tried there (docs/EVALUATION.md). Without dense vectors the graph keeps
        // the 0.8 chosen for BM25 and the graph alone.
        const BM25_WEIGHT: f32 = 1.0;
        const DENSE_WEIGHT: f32 = 2.0;
        let graph_weight: f32 = if dense.is_empty() { 0.8 } else { 0.5 };
        let mut fused: HashMap<u64, Fused> = HashMap::new();
        for (rank, (id, _)) in bm25.iter().enumerate() {
            let e = fused.entry(*id).or_default();
            e.0 += BM25_WEIGHT / (RRF_K + rank as f32 + 1.0);
            e.1 = Some(rank + 1);
        }
        for (rank, (id, _)) in graph.iter().enumerate() {
            let e = fused.entry(*id).or_default();
            e.0 += graph_weight / (RRF_K + rank as f32 + 1.0);
            e.2 = Some(rank + 1);
        }
        for (rank, (id, _)) in dense.iter().enumerate() {
            let e = fused.entry(*id).or_default();
            e.0 += DENSE_WEIGHT / (RRF_K + rank as f32 + 1.0);
            e.3 = Some(rank + 1);
        }
        let mut ranked: Vec<(u64, Fused)> = fused.into_iter().collect();
        ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
        let mut passages = Vec::with_capacity(options.top_k);
        for (id, (score, bm25_rank, graph_rank, dense_rank)) in ranked {
            let Some(chunk) = snapshot.chunks.get(&id) else { continue };
            // Each list was filtered already; this keeps the invariant in one more place.
            if !allowed(chunk) {
                continue;
            }
            let (document, title) = snapshot
                .docs
                .get(&chunk.doc_id)
                .map_or_else(|| (chunk.doc_id.clone(), String::new()), |d| (d.source.clone(), d.title.clone()));
            passages.push(Passage { chunk: Arc::clone(chunk), document, title, score, bm25_rank, graph_rank, dense_rank });
            if passages.len() == options.top_k {
                break;
            }
        }
        Ok(Retrieval {
            passages,
            seeds: seed_names,
            expanded,
            broad: is_broad_question(question),
            snapshot,
            collections: options.collections.clone(),
        })
    }

    /// The chunks nearest the question by meaning, among those `keep` allows (live chunks of
    /// the caller's collections). A failing or busy embedder costs the dense signal, not the
    /// query.
    fn dense_search(&self, query: &str, limit: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let (Some(embedder), vectors) = self.dense() else { return Vec::new() };
        if vectors.is_empty() || query.trim().is_empty() {
            return Vec::new();
        }
        // While chunks are being embedded the model is busy: the question would wait behind
        // them (the sample manual takes minutes on a Pi), so it is ranked without meaning.
        if self.embedding.try_lock().is_err() {
            tracing::debug!("embedding in progress; ranking without the dense signal");
            return Vec::new();
        }
        let vector = match embedder.embed(&[query]) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "question not embedded; ranking without the dense signal");
                return Vec::new();
            }
        };
        vectors.search(&vector, limit, keep)
    }

    /// Retrieval plus an extractive answer with numbered citations.
    pub fn ask(&self, question: &str, options: &QueryOptions, progress: &mut dyn FnMut(Progress)) -> Result<(Retrieval, Answer)> {
        let retrieval = self.retrieve(question, options, progress)?;
        progress(Progress { stage: "synthesizing", message: "Synthesizing response".into() });
        let answer = synthesize(question, &retrieval);
        Ok((retrieval, answer))
    }

    /// Ids of the documents whose graph contribution is stored (consistency checks).
    pub fn stored_graph_ids(&self) -> Result<Vec<String>> {
        self.store.graph_ids()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A chunk's fused score with its BM25, graph and dense ranks (1-based).
type Fused = (f32, Option<usize>, Option<usize>, Option<usize>);

/// An open ingest batch; holds the writer lock.
pub struct IngestBatch<'e> {
    engine: &'e Engine,
    _guard: std::sync::MutexGuard<'e, ()>,
    docs: BTreeMap<String, DocRecord>,
    chunks: HashMap<u64, Arc<ChunkRecord>>,
    generation: Option<u64>,
}

impl IngestBatch<'_> {
    pub fn add_path(&mut self, path: &Path, collection: &str) -> Result<IngestOutcome> {
        let name = path.to_string_lossy();
        let format = Format::from_name(&name)?;
        let bytes = std::fs::read(path).map_err(|source| EngineError::Read { path: path.to_path_buf(), source })?;
        self.add(&NewDocument { name: &name, bytes: &bytes, format, collection })
    }

    /// Parses, chunks, extracts and stores one document; durable when this returns `Ok`.
    pub fn add(&mut self, new: &NewDocument<'_>) -> Result<IngestOutcome> {
        let id = document_id(new.collection, new.name);
        // The parser's version is part of the hash: a document parsed by an older parser is
        // parsed again when it is ingested again, even with the same bytes.
        let content_hash = hex(&Sha256::new().chain_update(PARSER_VERSION).chain_update(new.bytes).finalize());
        // Knowledge bases from before ids per collection hold ids of the name alone: such a
        // document (same name, same collection) is the one this replaces, and takes the new id.
        let previous = self
            .docs
            .get(&id)
            .cloned()
            .or_else(|| self.docs.values().find(|d| d.source == new.name && d.collection == new.collection && d.id != id).cloned());
        // Unchanged only under its current id: an old-style id is re-keyed even when unchanged.
        if previous.as_ref().is_some_and(|p| p.id == id && p.content_hash == content_hash) {
            return Ok(IngestOutcome::Unchanged { id });
        }
        let parsed = parse(new.format, new.name, new.bytes)?;
        let drafts = chunk(&parsed, self.engine.limits);
        let records: Vec<ChunkRecord> = drafts
            .into_iter()
            .enumerate()
            .map(|(i, d)| ChunkRecord {
                id: chunk_id(&id, i, &d.text),
                doc_id: id.clone(),
                ordinal: u32::try_from(i).unwrap_or(u32::MAX),
                section: d.section,
                text: d.text,
                code_terms: d.code_terms,
            })
            .collect();
        let inputs: Vec<ExtractChunk<'_>> =
            records.iter().map(|c| ExtractChunk { id: c.id, text: &c.text, code_terms: &c.code_terms }).collect();
        let graph = extract(&inputs);
        let doc = DocRecord {
            id: id.clone(),
            source: new.name.to_owned(),
            title: parsed.title,
            content_hash,
            collection: new.collection.to_owned(),
            chunk_ids: records.iter().map(|c| c.id).collect(),
            bytes: new.bytes.len() as u64,
            ingested_at: now(),
        };
        let generation = self.engine.store.put(&doc, &records, &graph, previous.as_ref())?;
        if let Some(old) = previous.as_ref().filter(|p| p.id != id) {
            tracing::info!(old = %old.id, new = %id, source = %old.source, "document re-keyed by collection");
            self.engine.index.stage_delete(&old.id)?;
            self.docs.remove(&old.id);
        }
        self.engine.index.stage_document(&doc, &records)?;
        self.generation = Some(generation);
        if let Some(old) = &previous {
            for c in &old.chunk_ids {
                self.chunks.remove(c);
            }
        }
        let n = records.len();
        for c in records {
            self.chunks.insert(c.id, Arc::new(c));
        }
        self.docs.insert(id.clone(), doc);
        Ok(if previous.is_some() { IngestOutcome::Replaced { id, chunks: n } } else { IngestOutcome::Added { id, chunks: n } })
    }

    /// Commits the search index and publishes the new snapshot (graph rebuilt once).
    pub fn finish(self) -> Result<()> {
        let Some(generation) = self.generation else { return Ok(()) };
        let started = Instant::now();
        self.engine.index.commit(generation)?;
        // The store holds every document's contribution, this batch's included.
        let snapshot = Snapshot::build(self.docs, self.chunks, &self.engine.store)?;
        *self.engine.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(snapshot);
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "knowledge graph rebuilt");
        Ok(())
    }
}

/// Files found under the paths given to an ingest.
#[derive(Debug, Default)]
pub struct Walk {
    /// Files to ingest, in a stable order.
    pub files: Vec<PathBuf>,
    /// Files passed over, with the reason (unsupported type found in a folder, unreadable).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Expands folders recursively. A file named explicitly is always listed (so an unsupported
/// type is reported as an error); files found in folders are listed only when their type is
/// supported.
pub fn walk(paths: &[PathBuf]) -> Walk {
    let mut walk = Walk::default();
    for path in paths {
        if path.is_dir() {
            visit(path, &mut walk);
        } else {
            walk.files.push(path.clone());
        }
    }
    // One document per file: a symbolic link to a file already listed (Debian's FAQ links
    // `pkgtools.html` to `pkgtools.en.html`) would ingest the same text twice.
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::with_capacity(walk.files.len());
    for path in std::mem::take(&mut walk.files) {
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.insert(real) {
            files.push(path);
        } else {
            walk.skipped.push((path, "same file as one already listed (a link)".into()));
        }
    }
    walk.files = files;
    walk
}

fn visit(dir: &Path, walk: &mut Walk) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            walk.skipped.push((dir.to_path_buf(), format!("cannot read folder: {e}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            visit(&path, walk);
        } else if Format::from_name(&path.to_string_lossy()).is_ok() {
            walk.files.push(path);
        } else {
            walk.skipped.push((path, "unsupported file type".into()));
        }
    }
}
