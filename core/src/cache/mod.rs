//! Response cache: config `[cache]`; absent (or `enabled = false`), nothing is cached.
//!
//! The cache works on the typed request, inside the one inference path (`crate::pipeline`), so
//! every front door is cached the same way: `POST /v1/inference`, `/v1/chat/completions`, the
//! WebSocket API and voice turns. The pipeline normalises the request into keys (`key.rs`) and
//! looks the answer up ([`ResponseCache::lookup`], which returns a [`CacheSlot`]): on a hit it
//! replays the stored answer (whole, or as events when the request streams), on a miss it asks
//! the router and fills the slot with the complete answer. Every HTTP answer carries
//! `x-uag-cache: hit | semantic | miss` (what was served: a stored answer the policy refuses
//! this caller is a `miss`; `bypass` when the client asked for no cache; `miss` too when the
//! backend could not be asked). Invalid requests are refused before the cache is asked.
//!
//! - **Exact**: keyed by the normalised request and the caller's scope (`user`, `tenant` or
//!   `global`), with a TTL and a count cap (oldest evicted first). Backends: sled under
//!   `<data_dir>/cache` (`sled_store.rs`) or Redis shared by several gateways (`redis_store.rs`).
//! - **Semantic** (`[cache.semantic]`, off by default): the last user message is embedded with
//!   the local embedding model (MiniLM) and compared by cosine with earlier questions of the
//!   same caller scope, provider/model, parameters and system prompt; the best one at or above
//!   `threshold` answers. Single-turn requests only, unless `single_turn_only = false`.
//!
//! What is stored: only complete answers: a 2xx JSON answer, or a stream that ended with `done`
//! and had no `error`; an empty answer is not stored. The value is wire-neutral (the text,
//! sources, finish reason, usage, provider and model), so a streamed request can be answered
//! from an entry a JSON request filled and back. Sampled requests (temperature > 0, no seed)
//! are cached too: turning the cache on is the operator's choice to trade variety for cost,
//! and the sampling parameters are part of the key.
//!
//! Identical requests in flight together (same exact key, so the same caller scope) ask the
//! provider once: the first asks, the others wait for its answer (up to 120 s) and are served it
//! as a `hit` (`uag_cache_requests_total{kind="exact", result="coalesced"}`). If the first ends
//! without an answer to store (an error, a cancel), each waiting request asks on its own.
//!
//! Writes: the answer is written to the backend by a task of its own after the response has
//! gone out; until that write is done this gateway serves it from memory (`PendingWrite`), so a
//! repeat at once is still a hit. A backend that falls more than 1024 writes behind drops
//! answers (counted as backend errors) instead of holding them all in memory.
//!
//! Knowledge-base changes: the answers of `local` providers (GraphRAG draws on the knowledge
//! base) and every semantic record carry the knowledge base's generation from when the request
//! arrived; after an ingest or delete the generation differs and they are misses (also after a
//! `uag ingest` while no server ran: the generation is stored with the knowledge base).
//!
//! Bypass: header `x-uag-cache: bypass` (or `no-cache`), `Cache-Control: no-cache` or
//! `no-store` (read by the HTTP edge), or `"metadata": {"cache": false}` (or `"bypass"`) in the
//! request (read by the pipeline, for every front door): no lookup and no store. Backend failures (Redis down) never fail a request: the cache is skipped and
//! `uag_cache_backend_errors_total{backend}` counts them. Lookups count in
//! `uag_cache_requests_total{kind="exact|semantic", result="hit|miss|bypass|error"}`.
//!
//! Voice turns are keyed with their channel (`metadata.channel = "voice"`: two-sentence answers)
//! and language, so a spoken answer is never served to a text client or the other way round.

mod key;
mod redis_store;
mod sled_store;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uag_models::manifest::ModelKind;
use uag_models::runtime::ModelRuntimes;

use crate::metrics::Metrics;
use crate::provider::EventStream;
use crate::types::{Event, FinishReason, InferenceRequest, InferenceResponse, Source, Timings, Usage};
pub(crate) use key::{caller_scope, request_keys};

/// The response header naming the outcome; also read on requests (`bypass`).
pub const CACHE_HEADER: &str = "x-uag-cache";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackendKind {
    /// Embedded, per process, under `<data_dir>/cache`.
    #[default]
    Sled,
    /// Shared by every gateway pointing at the same Redis.
    Redis,
}

/// Whose answers a caller may be served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// The authenticated subject, else the client address.
    #[default]
    User,
    /// The caller's tenant; callers without one are scoped as `user`.
    Tenant,
    /// Everyone shares (only for deployments where every caller may see every answer).
    Global,
}

/// `[cache]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    pub backend: CacheBackendKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// How long an answer is served.
    pub ttl_s: u64,
    /// Answers kept; beyond it the oldest are evicted.
    pub max_entries: usize,
    /// Larger answers are not stored.
    pub max_entry_bytes: usize,
    pub scope: CacheScope,
    pub semantic: SemanticConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: CacheBackendKind::Sled,
            redis_url: None,
            ttl_s: 3600,
            max_entries: 10_000,
            max_entry_bytes: 1024 * 1024,
            scope: CacheScope::User,
            semantic: SemanticConfig::default(),
        }
    }
}

/// `[cache.semantic]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    pub enabled: bool,
    /// Cosine similarity at or above which an earlier question's answer is served.
    pub threshold: f32,
    /// Embedding model id (`uag models list`); default: the installed default (MiniLM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Only requests with one user message and no assistant turn.
    pub single_turn_only: bool,
    /// Earlier questions compared per caller scope and model (newest kept).
    pub max_candidates: usize,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self { enabled: false, threshold: 0.92, model: None, single_turn_only: true, max_candidates: 256 }
    }
}

impl CacheConfig {
    /// Load-time checks; the error is (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        match (self.backend, &self.redis_url) {
            (CacheBackendKind::Redis, None) => {
                return Err(("cache.redis_url".into(), "required for backend = \"redis\" (e.g. \"redis://127.0.0.1:6379\")".into()));
            }
            (_, Some(url)) => match url::Url::parse(url) {
                Ok(u) if u.scheme() == "redis" && u.host().is_some() => {}
                _ => return Err(("cache.redis_url".into(), format!("`{url}` must be a redis:// URL with a host"))),
            },
            _ => {}
        }
        if self.ttl_s == 0 {
            return Err(("cache.ttl_s".into(), "must be at least 1".into()));
        }
        if self.max_entries == 0 {
            return Err(("cache.max_entries".into(), "must be at least 1".into()));
        }
        if self.max_entry_bytes < 1024 {
            return Err(("cache.max_entry_bytes".into(), "must be at least 1024".into()));
        }
        let s = &self.semantic;
        if !(s.threshold > 0.0 && s.threshold <= 1.0) {
            return Err(("cache.semantic.threshold".into(), "must be a cosine similarity in (0, 1], e.g. 0.92".into()));
        }
        if !(1..=10_000).contains(&s.max_candidates) {
            return Err(("cache.semantic.max_candidates".into(), "must be between 1 and 10000".into()));
        }
        if let Some(id) = &s.model {
            let manifest = uag_models::manifest::Manifest::embedded().map_err(|e| ("cache.semantic.model".to_owned(), e.to_string()))?;
            if manifest.get(id).is_none_or(|e| e.kind != ModelKind::Embed) {
                let known: Vec<&str> = manifest.models.iter().filter(|m| m.kind == ModelKind::Embed).map(|m| m.id.as_str()).collect();
                return Err(("cache.semantic.model".into(), format!("unknown embedding model `{id}`; known: {}", known.join(", "))));
            }
        }
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot open the cache store {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("cache.redis_url: {0}")]
    RedisUrl(String),
    #[error("{backend} backend: {message}")]
    Backend { backend: &'static str, message: String },
}

/// A stored answer, wire-neutral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub provider: String,
    pub model: String,
    pub output: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The knowledge-base generation the answer depends on (answers of `local` providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb_generation: Option<u64>,
}

/// One earlier question in a semantic partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SemanticRecord {
    /// The exact key of its answer.
    key: String,
    stored_at_ms: u64,
    kb_generation: Option<u64>,
    /// Little-endian f32s, base64.
    vector: String,
}

fn encode_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_vector(s: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    bytes.len().is_multiple_of(4).then(|| bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Cosine of two L2-normalised vectors; `None` when their dimensions differ.
fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    (a.len() == b.len()).then(|| a.iter().zip(b).map(|(x, y)| x * y).sum())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum Store {
    Sled(sled_store::SledStore),
    // Boxed: the Redis client is several times the size of the sled handles.
    Redis(Box<redis_store::RedisStore>),
}

impl Store {
    fn label(&self) -> &'static str {
        match self {
            Store::Sled(_) => "sled",
            Store::Redis(_) => "redis",
        }
    }
}

/// Answers stored while the backend is still behind (see [`PendingWrite`]); beyond this many
/// the backend is not keeping up and further answers are not stored.
const MAX_PENDING_WRITES: usize = 1024;

/// An answer on its way to the backend. Writes run on a task of their own after the response
/// has gone out (a sled write with its eviction, or a Redis round trip, was the largest part of
/// the cache's cost on the request path); until the write is done this gateway answers from
/// here, so a client repeating a request at once still finds it.
struct PendingWrite {
    /// Shared with the requests that waited for it (see `join_inflight`).
    answer: Arc<CachedAnswer>,
    /// Partition and record of the semantic index.
    semantic: Option<(String, SemanticRecord)>,
}

/// How long an identical request waits for the one already asking the provider; a local LLM
/// on a Pi can take tens of seconds, and waiting costs nothing while asking again costs a turn.
const COALESCE_WAIT: Duration = Duration::from_secs(120);

/// Where a request asking the provider publishes its answer for identical requests waiting.
type AnswerSender = tokio::sync::watch::Sender<Option<Arc<CachedAnswer>>>;
type AnswerReceiver = tokio::sync::watch::Receiver<Option<Arc<CachedAnswer>>>;

/// The cache of one gateway: its backend and settings. Built once per gateway.
pub struct ResponseCache {
    config: CacheConfig,
    store: Store,
    metrics: Arc<Metrics>,
    /// Providers whose answers depend on the knowledge base.
    local_providers: HashSet<String>,
    /// By exact key; an entry leaves once its write is done.
    pending: Mutex<HashMap<String, Arc<PendingWrite>>>,
    /// Exact keys being answered by a provider now, with the id of the request asking: an
    /// identical request (same caller scope) waits for that answer instead of asking again.
    inflight: Mutex<HashMap<String, (u64, AnswerReceiver)>>,
    next_inflight_id: AtomicU64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("backend", &self.store.label()).finish_non_exhaustive()
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Semantic,
    Miss,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Semantic => "semantic",
            CacheOutcome::Miss => "miss",
        }
    }
}

impl ResponseCache {
    /// Opens the backend (sled under `data_dir/cache`; Redis connects on first use).
    pub fn open(
        config: &CacheConfig,
        data_dir: &Path,
        local_providers: HashSet<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CacheError> {
        let store = match config.backend {
            CacheBackendKind::Sled => Store::Sled(sled_store::SledStore::open(
                &data_dir.join("cache"),
                config.max_entries,
                config.semantic.max_candidates,
                u64::try_from(config.ttl().as_millis()).unwrap_or(u64::MAX),
            )?),
            CacheBackendKind::Redis => {
                let url = config.redis_url.as_deref().ok_or_else(|| CacheError::RedisUrl("required for backend = \"redis\"".into()))?;
                Store::Redis(Box::new(redis_store::RedisStore::new(url, config.ttl(), config.max_entries, config.semantic.max_candidates)?))
            }
        };
        Ok(Self {
            config: config.clone(),
            store,
            metrics,
            local_providers,
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next_inflight_id: AtomicU64::new(0),
        })
    }

    /// Whose answers a caller may be served (`[cache] scope`).
    pub fn scope(&self) -> CacheScope {
        self.config.scope
    }

    /// A request that asked for no cache.
    pub(crate) fn count_bypass(&self) {
        self.count("exact", "bypass");
    }

    fn count(&self, kind: &'static str, result: &'static str) {
        self.metrics.count_cache(kind, result);
    }

    fn backend_error(&self, err: &CacheError) {
        tracing::warn!(error = %err, "response cache backend unavailable; serving without it");
        self.metrics.count_cache_backend_error(self.store.label());
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, AnswerReceiver)>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves the in-flight map if `id` still holds `key` there.
    fn end_inflight(&self, key: &str, id: u64) {
        let mut inflight = self.inflight();
        if inflight.get(key).is_some_and(|(holder, _)| *holder == id) {
            inflight.remove(key);
        }
    }

    /// After a miss: become the request that asks the provider for `key`, or wait for the one
    /// already asking. `Ok` carries the leader's id and sender; `Err` the waited-for answer,
    /// `Err(None)` when that request ended without one (this request then asks on its own).
    async fn join_inflight(&self, key: &str) -> Result<(u64, AnswerSender), Option<CachedAnswer>> {
        let mut waiting = {
            let mut inflight = self.inflight();
            match inflight.get(key) {
                Some((_, receiver)) => receiver.clone(),
                None => {
                    let id = self.next_inflight_id.fetch_add(1, Ordering::Relaxed);
                    let (sender, receiver) = tokio::sync::watch::channel(None);
                    inflight.insert(key.to_owned(), (id, receiver));
                    return Ok((id, sender));
                }
            }
        };
        let answer = tokio::time::timeout(COALESCE_WAIT, waiting.wait_for(Option::is_some)).await;
        Err(match answer {
            Ok(Ok(answer)) => answer.as_deref().cloned(),
            // The leader failed, was cancelled or stored nothing (`Err(RecvError)`), or is slow.
            _ => None,
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PendingWrite>>> {
        // The map stays consistent whatever a panicking holder did: each change is one call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn get(&self, key: &str) -> Result<Option<CachedAnswer>, CacheError> {
        if let Some(write) = self.pending().get(key) {
            return Ok(Some(CachedAnswer::clone(&write.answer)));
        }
        let bytes = match &self.store {
            Store::Sled(s) => s.get(key, now_ms())?,
            Store::Redis(r) => r.get(key).await?,
        };
        // An unreadable value (another version wrote it) is a miss, not a failure.
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), CacheError> {
        match &self.store {
            Store::Sled(s) => s.put(key, value, now_ms()),
            Store::Redis(r) => r.put(key, value, now_ms()).await,
        }
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        {
            let mut pending = self.pending();
            pending.remove(key);
            self.metrics.cache_pending_writes.set(pending.len() as i64);
        }
        match &self.store {
            Store::Sled(s) => s.remove(key),
            Store::Redis(r) => r.remove(key).await,
        }
    }

    async fn semantic_add(&self, partition: &str, record: &[u8]) -> Result<(), CacheError> {
        match &self.store {
            Store::Sled(s) => s.semantic_add(partition, record, now_ms()),
            Store::Redis(r) => r.semantic_add(partition, record).await,
        }
    }

    async fn semantic_scan(&self, partition: &str) -> Result<Vec<Vec<u8>>, CacheError> {
        match &self.store {
            Store::Sled(s) => s.semantic_scan(partition, now_ms()),
            Store::Redis(r) => r.semantic_scan(partition).await,
        }
    }

    /// The answer under `key` if it is still valid for the knowledge base at `generation`.
    async fn valid(&self, key: &str, generation: Option<u64>) -> Result<Option<CachedAnswer>, CacheError> {
        let Some(answer) = self.get(key).await? else { return Ok(None) };
        if answer.kb_generation.is_some() && answer.kb_generation != generation {
            // Answered from an older knowledge base: never again.
            self.remove(key).await?;
            return Ok(None);
        }
        Ok(Some(answer))
    }

    /// Looks `req` up for a caller in `scope`; `None` when the request cannot be cached now.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        req: &InferenceRequest,
        scope: &str,
        models: Option<&Arc<ModelRuntimes>>,
        engine: Option<&Arc<uag_graphrag::Engine>>,
    ) -> Option<CacheSlot> {
        let started = Instant::now();
        let generation = match engine.map(|e| e.generation()) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(e)) => {
                // Without the generation, answers could outlive the knowledge base they came from.
                tracing::warn!(error = %e, "cannot read the knowledge-base generation; not caching");
                self.count("exact", "error");
                return None;
            }
        };
        let keys = request_keys(req, scope, self.config.semantic.single_turn_only);
        let mut slot = SlotInner { cache: Arc::clone(self), key: keys.exact, generation, hit: None, semantic: None, started, leader: None };
        match self.valid(&slot.key, generation).await {
            Ok(Some(answer)) => {
                self.count("exact", "hit");
                slot.hit = Some((CacheOutcome::Hit, answer));
                return Some(CacheSlot(Arc::new(slot)));
            }
            Ok(None) => self.count("exact", "miss"),
            Err(e) => {
                self.count("exact", "error");
                self.backend_error(&e);
                // The store would fail the same way; skip the cache for this request.
                return None;
            }
        }
        if let (true, Some(semantic), Some(models)) = (self.config.semantic.enabled, keys.semantic, models) {
            match self.semantic_lookup(models, &semantic, generation).await {
                Ok((found, partition, vector)) => {
                    self.count("semantic", if found.is_some() { "hit" } else { "miss" });
                    slot.hit = found.map(|a| (CacheOutcome::Semantic, a));
                    slot.semantic = Some((partition, vector));
                }
                Err(e) => {
                    self.count("semantic", "error");
                    match e {
                        SemanticError::Backend(e) => self.backend_error(&e),
                        SemanticError::Model(e) => tracing::warn!(error = %e, "cannot embed the prompt; semantic cache skipped"),
                    }
                }
            }
        }
        if slot.hit.is_none() {
            match self.join_inflight(&slot.key).await {
                Ok(leader) => slot.leader = Some(leader),
                Err(Some(answer)) => {
                    self.count("exact", "coalesced");
                    slot.hit = Some((CacheOutcome::Hit, answer));
                }
                Err(None) => {}
            }
        }
        Some(CacheSlot(Arc::new(slot)))
    }

    async fn semantic_lookup(
        &self,
        models: &ModelRuntimes,
        key: &key::SemanticKey,
        generation: Option<u64>,
    ) -> Result<(Option<CachedAnswer>, String, Vec<f32>), SemanticError> {
        let entry = models.resolve(ModelKind::Embed, self.config.semantic.model.as_deref()).map_err(SemanticError::Model)?;
        let embeddings = models.embed(&entry, vec![key.text.clone()]).await.map_err(SemanticError::Model)?;
        let vector = embeddings
            .vectors
            .into_iter()
            .next()
            .ok_or_else(|| SemanticError::Model(uag_models::ModelError::InvalidInput("no embedding returned".into())))?;
        let partition = key.partition(&entry.id);
        let cutoff = now_ms().saturating_sub(u64::try_from(self.config.ttl().as_millis()).unwrap_or(u64::MAX));
        let mut best: Option<(f32, String)> = None;
        let stored = self.semantic_scan(&partition).await.map_err(SemanticError::Backend)?;
        let stored = stored.iter().filter_map(|bytes| serde_json::from_slice::<SemanticRecord>(bytes).ok());
        let pending: Vec<SemanticRecord> = self
            .pending()
            .values()
            .filter_map(|w| w.semantic.as_ref().filter(|(p, _)| *p == partition).map(|(_, record)| record.clone()))
            .collect();
        for record in stored.chain(pending) {
            if record.stored_at_ms < cutoff || record.kb_generation != generation {
                continue;
            }
            let Some(score) = decode_vector(&record.vector).and_then(|v| cosine(&v, &vector)) else { continue };
            if score >= self.config.semantic.threshold && best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, record.key));
            }
        }
        let found = match best {
            Some((score, exact)) => {
                tracing::debug!(score, "semantic cache candidate");
                self.valid(&exact, generation).await.map_err(SemanticError::Backend)?
            }
            None => None,
        };
        Ok((found, partition, vector))
    }

    /// Stores a complete answer under the slot's keys: at once in the pending map, and in the
    /// backend by a task of its own, so the response does not wait for the write. Failures are
    /// counted and logged only. Writes still pending when the process exits are lost, which a
    /// cache can afford.
    fn store(self: &Arc<Self>, slot: &SlotInner, mut answer: CachedAnswer) {
        if answer.output.is_empty() {
            return;
        }
        answer.kb_generation = if self.local_providers.contains(&answer.provider) { slot.generation } else { None };
        let Ok(value) = serde_json::to_vec(&answer) else { return };
        if value.len() > self.config.max_entry_bytes {
            tracing::debug!(bytes = value.len(), "answer larger than cache.max_entry_bytes; not cached");
            return;
        }
        let semantic = slot.semantic.as_ref().map(|(partition, vector)| {
            let record = SemanticRecord {
                key: slot.key.clone(),
                stored_at_ms: now_ms(),
                kb_generation: slot.generation,
                vector: encode_vector(vector),
            };
            (partition.clone(), record)
        });
        let write = Arc::new(PendingWrite { answer: Arc::new(answer), semantic });
        // Identical requests waiting for this one get the answer now; later ones find it pending.
        if let Some((id, sender)) = &slot.leader {
            sender.send_replace(Some(Arc::clone(&write.answer)));
            self.end_inflight(&slot.key, *id);
        }
        {
            let mut pending = self.pending();
            if pending.len() >= MAX_PENDING_WRITES && !pending.contains_key(&slot.key) {
                drop(pending);
                self.backend_error(&CacheError::Backend {
                    backend: self.store.label(),
                    message: format!("{MAX_PENDING_WRITES} writes are waiting; answer not stored"),
                });
                return;
            }
            pending.insert(slot.key.clone(), Arc::clone(&write));
            self.metrics.cache_pending_writes.set(pending.len() as i64);
        }
        let cache = Arc::clone(self);
        let key = slot.key.clone();
        tokio::spawn(async move {
            cache.write(&key, &value, &write).await;
            let mut pending = cache.pending();
            // A newer answer for the same key may have replaced this one meanwhile; it stays.
            if pending.get(&key).is_some_and(|w| Arc::ptr_eq(w, &write)) {
                pending.remove(&key);
                cache.metrics.cache_pending_writes.set(pending.len() as i64);
            }
        });
    }

    async fn write(&self, key: &str, value: &[u8], write: &PendingWrite) {
        if let Err(e) = self.put(key, value).await {
            self.backend_error(&e);
            return;
        }
        if let Some((partition, record)) = &write.semantic {
            let Ok(bytes) = serde_json::to_vec(record) else { return };
            if let Err(e) = self.semantic_add(partition, &bytes).await {
                self.backend_error(&e);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SemanticError {
    #[error("{0}")]
    Backend(CacheError),
    #[error("{0}")]
    Model(uag_models::ModelError),
}

struct SlotInner {
    cache: Arc<ResponseCache>,
    key: String,
    generation: Option<u64>,
    hit: Option<(CacheOutcome, CachedAnswer)>,
    /// Partition and prompt vector, to record the answer in the semantic index.
    semantic: Option<(String, Vec<f32>)>,
    started: Instant,
    /// Set when this request asks the provider for its key while identical ones may wait.
    leader: Option<(u64, AnswerSender)>,
}

impl Drop for SlotInner {
    /// The request ended (answered, failed or cancelled): whoever still waits stops waiting
    /// (their receivers see the sender gone) and asks on their own.
    fn drop(&mut self) {
        if let Some((id, _)) = &self.leader {
            self.cache.end_inflight(&self.key, *id);
        }
    }
}

/// The cache's part in one request: a stored answer to replay, or the keys under which the
/// pipeline stores the answer.
#[derive(Clone)]
pub struct CacheSlot(Arc<SlotInner>);

impl std::fmt::Debug for CacheSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSlot").field("outcome", &self.outcome()).finish_non_exhaustive()
    }
}

impl CacheSlot {
    pub fn outcome(&self) -> CacheOutcome {
        self.0.hit.as_ref().map_or(CacheOutcome::Miss, |(o, _)| *o)
    }

    /// The stored answer, on a hit.
    pub fn answer(&self) -> Option<&CachedAnswer> {
        self.0.hit.as_ref().map(|(_, a)| a)
    }

    fn timings(&self) -> Timings {
        Timings { total_ms: self.0.started.elapsed().as_secs_f64() * 1000.0, time_to_first_token_ms: None }
    }

    /// The hit as a JSON answer with the request's id.
    pub fn replay_response(&self, id: &str) -> Option<InferenceResponse> {
        let a = self.answer()?;
        Some(InferenceResponse {
            id: id.to_owned(),
            provider: a.provider.clone(),
            model: a.model.clone(),
            output: a.output.clone(),
            tool_calls: Vec::new(),
            sources: a.sources.clone(),
            finish_reason: a.finish_reason,
            usage: a.usage,
            timings: self.timings(),
        })
    }

    /// The hit as the events of a stream: a `cache` status, the text, the sources, `done`.
    pub fn replay_events(&self) -> Option<EventStream> {
        let a = self.answer()?;
        let mut events = vec![Event::status("cache", format!("answered from the response cache ({})", self.outcome().as_str()))];
        events.push(Event::delta(a.output.clone()));
        if !a.sources.is_empty() {
            events.push(Event::Sources { sources: a.sources.clone() });
        }
        events.push(Event::Done {
            finish_reason: a.finish_reason,
            usage: a.usage,
            timings: self.timings(),
            provider: Some(a.provider.clone()),
            model: Some(a.model.clone()),
        });
        Some(Box::pin(futures::stream::iter(events.into_iter().map(Ok))))
    }

    /// Stores a complete JSON answer (on a miss).
    pub fn fill(&self, response: &InferenceResponse) {
        // Tool calls are never stored (the pipeline does not cache tool requests at all).
        if self.0.hit.is_some() || !response.tool_calls.is_empty() {
            return;
        }
        let answer = CachedAnswer {
            provider: response.provider.clone(),
            model: response.model.clone(),
            output: response.output.clone(),
            sources: response.sources.clone(),
            finish_reason: response.finish_reason,
            usage: response.usage,
            kb_generation: None,
        };
        self.0.cache.store(&self.0, answer);
    }

    /// Passes `events` through and, when the stream ends with `done` and had no error, stores
    /// the answer before the `done` event goes out (so a client that saw `done` finds it cached).
    pub fn tap(&self, events: EventStream) -> EventStream {
        if self.0.hit.is_some() {
            return events;
        }
        let slot = self.clone();
        Box::pin(async_stream::stream! {
            let mut events = events;
            let mut output = String::new();
            let mut sources = Vec::new();
            let mut failed = false;
            while let Some(item) = events.next().await {
                match &item {
                    Ok(Event::Delta { text }) => output.push_str(text),
                    Ok(Event::Sources { sources: s }) => sources.clone_from(s),
                    Ok(Event::Done { finish_reason, usage, provider, model, .. }) if !failed => {
                        let answer = CachedAnswer {
                            provider: provider.clone().unwrap_or_default(),
                            model: model.clone().unwrap_or_default(),
                            output: std::mem::take(&mut output),
                            sources: std::mem::take(&mut sources),
                            finish_reason: *finish_reason,
                            usage: *usage,
                            kb_generation: None,
                        };
                        slot.0.cache.store(&slot.0, answer);
                    }
                    Ok(Event::Error { .. } | Event::ToolCallStart { .. }) | Err(_) => failed = true,
                    Ok(_) => {}
                }
                yield item;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c = CacheConfig::default();
        c.validate().unwrap();
        assert_eq!((c.backend, c.scope, c.semantic.enabled), (CacheBackendKind::Sled, CacheScope::User, false));
        let bad = |edit: &dyn Fn(&mut CacheConfig), key: &str| {
            let mut c = CacheConfig::default();
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().0, key);
        };
        bad(&|c| c.backend = CacheBackendKind::Redis, "cache.redis_url");
        bad(&|c| c.redis_url = Some("http://x".into()), "cache.redis_url");
        bad(&|c| c.ttl_s = 0, "cache.ttl_s");
        bad(&|c| c.max_entries = 0, "cache.max_entries");
        bad(&|c| c.semantic.threshold = 1.5, "cache.semantic.threshold");
        bad(&|c| c.semantic.threshold = 0.0, "cache.semantic.threshold");
        bad(&|c| c.semantic.model = Some("whisper-tiny.en".into()), "cache.semantic.model");
        let mut ok = CacheConfig::default();
        ok.semantic.model = Some("all-minilm-l6-v2".into());
        ok.validate().unwrap();
    }

    #[test]
    fn vectors_round_trip_and_compare() {
        let v = vec![0.6_f32, 0.8, 0.0];
        let back = decode_vector(&encode_vector(&v)).unwrap();
        assert_eq!(back, v);
        assert!((cosine(&v, &back).unwrap() - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&v, &[1.0]), None);
        assert_eq!(decode_vector("AAA"), None);
    }
}
