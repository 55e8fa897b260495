//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! One registry per gateway (no global recorder), so several gateways in one
//! process (tests) never mix their numbers. Labels are bounded: route templates (never raw
//! paths), provider names from config, status codes, error codes; never user ids or text.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`/v1/documents/{id}`), or `unmatched`.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub provider: String,
    /// `ok` or an error code (`upstream_timeout`, ...).
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub provider: String,
    /// `input` or `output`.
    pub direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `user`, `route`, `provider` or `tokens`.
    pub scope: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `exact` or `semantic`.
    pub kind: String,
    /// `hit`, `miss`, `bypass` or `error`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyDecisionLabels {
    /// `allow`, `deny` or `error` (the policy failed at run time; denied).
    pub decision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheBackendLabels {
    /// `sled` or `redis`.
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VoiceTurnLabels {
    /// `answered`, `cancelled`, `no_speech` or `error`.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    /// `asr`, `llm`, `embed` or `tts`.
    pub runtime: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThermalLabels {
    /// `thermal_zone0` (bounded by the board).
    pub zone: String,
    /// What the zone measures: `cpu-thermal`, `GPU-therm`.
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CpuLabels {
    /// `cpu0` (bounded by the board).
    pub cpu: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThrottlingLabels {
    /// `under_voltage`, `frequency_capped`, `throttled` or `soft_temperature_limit`.
    pub condition: String,
    /// `now` or `since_boot`.
    pub when: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PressureLabels {
    /// `cpu`, `memory` or `io`.
    pub resource: String,
    /// `some` (some tasks waited) or `full` (all did).
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// A manifest id (bounded: the manifest is compiled in).
    pub model: String,
}

/// Registers into the `uag_`-prefixed registry and remembers the family's full name.
struct Registering<'a> {
    registry: &'a mut Registry,
    names: &'a mut Vec<String>,
}

impl Registering<'_> {
    fn register(&mut self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.names.push(format!("uag_{name}"));
        self.registry.register(name, help, metric);
    }
}

fn rtf_histogram() -> Histogram {
    // Real-time factor: processing seconds per audio second; < 1 is faster than real time.
    Histogram::new([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0])
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~33 s: gateway overhead at the low end, LLM answers at the high end.
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Every metric uag exports. Names (after the registry's `uag_` prefix and Prometheus suffixes)
/// are listed in docs and checked against the Grafana dashboard by the test suite.
pub struct Metrics {
    registry: Registry,
    /// Every family's exposition name (`uag_http_requests`, counters without `_total`).
    families: Vec<String>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub upstream_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    pub time_to_first_token: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub fallbacks: Family<ProviderLabels, Counter>,
    pub rate_limit_rejections: Family<ScopeLabels, Counter>,
    pub rate_limit_backend_errors: Counter,
    pub cache_requests: Family<CacheLabels, Counter>,
    pub cache_backend_errors: Family<CacheBackendLabels, Counter>,
    pub cache_pending_writes: Gauge,
    pub policy_decisions: Family<PolicyDecisionLabels, Counter>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub circuit_state: Family<ProviderLabels, Gauge>,
    pub websocket_connections: Gauge,
    pub voice_sessions: Gauge,
    pub voice_turns_active: Gauge,
    pub voice_turns: Family<VoiceTurnLabels, Counter>,
    pub voice_first_audio_seconds: Histogram,
    pub kb_documents: Gauge,
    pub kb_chunks: Gauge,
    pub kb_entities: Gauge,
    pub resident_memory: Gauge,
    pub device_temperature: Family<ThermalLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub device_cpu_frequency: Family<CpuLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub device_throttling: Family<ThrottlingLabels, Gauge>,
    pub device_pressure: Family<PressureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub device_memory_available: Gauge,
    pub device_disk_free: Gauge,
    pub device_disk_size: Gauge,
    pub runtime_queue_depth: Family<RuntimeLabels, Gauge>,
    pub runtime_jobs: Family<RuntimeLabels, Gauge>,
    pub runtime_busy_rejections: Family<RuntimeLabels, Gauge>,
    pub runtime_busy_seconds: Family<RuntimeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub model_loaded: Family<ModelLabels, Gauge>,
    pub model_load_seconds: Family<ModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub asr_real_time_factor: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub build_info: Family<Vec<(String, String)>, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut root = Registry::with_prefix("uag");
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            time_to_first_token: Family::new_with_constructor(latency_histogram),
            tokens: Family::default(),
            fallbacks: Family::default(),
            rate_limit_rejections: Family::default(),
            rate_limit_backend_errors: Counter::default(),
            cache_requests: Family::default(),
            cache_backend_errors: Family::default(),
            cache_pending_writes: Gauge::default(),
            policy_decisions: Family::default(),
            policy_reloads: Family::default(),
            circuit_state: Family::default(),
            websocket_connections: Gauge::default(),
            voice_sessions: Gauge::default(),
            voice_turns_active: Gauge::default(),
            voice_turns: Family::default(),
            voice_first_audio_seconds: latency_histogram(),
            kb_documents: Gauge::default(),
            kb_chunks: Gauge::default(),
            kb_entities: Gauge::default(),
            resident_memory: Gauge::default(),
            device_temperature: Family::default(),
            device_cpu_frequency: Family::default(),
            device_throttling: Family::default(),
            device_pressure: Family::default(),
            device_memory_available: Gauge::default(),
            device_disk_free: Gauge::default(),
            device_disk_size: Gauge::default(),
            runtime_queue_depth: Family::default(),
            runtime_jobs: Family::default(),
            runtime_busy_rejections: Family::default(),
            runtime_busy_seconds: Family::default(),
            model_loaded: Family::default(),
            model_load_seconds: Family::default(),
            asr_real_time_factor: Family::new_with_constructor(rtf_histogram),
            build_info: Family::default(),
            registry: Registry::default(),
            families: Vec::new(),
        };
        let mut families = Vec::new();
        let r = &mut Registering { registry: &mut root, names: &mut families };
        r.register("http_requests", "HTTP requests by route template, method and status", m.http_requests.clone());
        r.register("http_request_duration_seconds", "HTTP request latency (to the response head)", m.http_duration.clone());
        r.register("upstream_request_duration_seconds", "Provider attempt latency by outcome", m.upstream_duration.clone());
        r.register("time_to_first_token_seconds", "Time from request to the first streamed token", m.time_to_first_token.clone());
        r.register("tokens", "Tokens reported by providers, in and out", m.tokens.clone());
        r.register("fallbacks", "Times a chain moved past a failing provider", m.fallbacks.clone());
        r.register("rate_limit_rejections", "Requests refused by a rate limit, by scope", m.rate_limit_rejections.clone());
        r.register(
            "rate_limit_backend_errors",
            "Rate-limit checks the shared backend (Redis) could not answer",
            m.rate_limit_backend_errors.clone(),
        );
        r.register("cache_requests", "Response cache lookups by kind (exact, semantic) and result", m.cache_requests.clone());
        r.register(
            "cache_backend_errors",
            "Response cache calls the backend could not answer (the request was served without the cache)",
            m.cache_backend_errors.clone(),
        );
        r.register(
            "cache_pending_writes",
            "Answers served from memory while their write to the cache backend is still under way (a backlog means a slow backend)",
            m.cache_pending_writes.clone(),
        );
        r.register("policy_decisions", "Authorization decisions of the Rego policy (one per target tried)", m.policy_decisions.clone());
        r.register(
            "policy_reloads",
            "Policy reloads (SIGHUP or file change); an error keeps the previous policy",
            m.policy_reloads.clone(),
        );
        r.register("circuit_state", "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open", m.circuit_state.clone());
        r.register("websocket_connections", "Open WebSocket connections", m.websocket_connections.clone());
        r.register("voice_sessions", "Open voice WebSocket sessions (/v1/voice)", m.voice_sessions.clone());
        r.register("voice_turns_active", "Voice turns being answered right now", m.voice_turns_active.clone());
        r.register("voice_turns", "Finished voice turns by how they ended", m.voice_turns.clone());
        r.register(
            "voice_first_audio_seconds",
            "End of speech to the first audio frame of the answer",
            m.voice_first_audio_seconds.clone(),
        );
        r.register("knowledge_base_documents", "Documents in the knowledge base", m.kb_documents.clone());
        r.register("knowledge_base_chunks", "Chunks in the knowledge base", m.kb_chunks.clone());
        r.register("knowledge_base_entities", "Entities in the knowledge graph", m.kb_entities.clone());
        r.register("process_resident_memory_bytes", "Resident memory of the uag process", m.resident_memory.clone());
        r.register("device_temperature_celsius", "Temperature of each thermal zone of the board", m.device_temperature.clone());
        r.register("device_cpu_frequency_hertz", "Current frequency of each CPU", m.device_cpu_frequency.clone());
        r.register(
            "device_throttling",
            "1 while (or once since boot) the Raspberry Pi firmware reports the condition",
            m.device_throttling.clone(),
        );
        r.register(
            "device_pressure_ratio",
            "Share of the last 10 s in which tasks stalled waiting for the resource (PSI avg10)",
            m.device_pressure.clone(),
        );
        r.register("device_memory_available_bytes", "Memory available to new work (MemAvailable)", m.device_memory_available.clone());
        r.register("device_disk_free_bytes", "Free space of the data directory's filesystem, available to uag", m.device_disk_free.clone());
        r.register("device_disk_size_bytes", "Size of the data directory's filesystem", m.device_disk_size.clone());
        r.register("model_runtime_queue_depth", "Requests waiting per local model runtime", m.runtime_queue_depth.clone());
        r.register("model_runtime_jobs", "Requests a local model runtime has finished (since start)", m.runtime_jobs.clone());
        r.register(
            "model_runtime_busy_rejections",
            "Requests refused because a runtime's queue was full",
            m.runtime_busy_rejections.clone(),
        );
        r.register(
            "model_runtime_busy_seconds",
            "Seconds a local model runtime spent working (since start)",
            m.runtime_busy_seconds.clone(),
        );
        r.register("model_loaded", "1 while a local model is loaded in memory", m.model_loaded.clone());
        r.register("model_load_seconds", "How long the local model took to load", m.model_load_seconds.clone());
        r.register("asr_real_time_factor", "Transcription time per second of audio", m.asr_real_time_factor.clone());
        r.register("build_info", "uag version", m.build_info.clone());
        m.build_info.get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        Arc::new(Metrics { registry: root, families, ..m })
    }

    pub fn observe_http(&self, labels: HttpLabels, elapsed: Duration) {
        self.http_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.http_requests.get_or_create(&labels).inc();
    }

    pub fn count_rate_limit_rejection(&self, scope: &'static str) {
        self.rate_limit_rejections.get_or_create(&ScopeLabels { scope: scope.to_owned() }).inc();
    }

    /// `kind` and `result` are the fixed strings of [`CacheLabels`].
    pub fn count_cache(&self, kind: &'static str, result: &'static str) {
        self.cache_requests.get_or_create(&CacheLabels { kind: kind.to_owned(), result: result.to_owned() }).inc();
    }

    /// `decision` is one of the fixed strings of [`PolicyDecisionLabels`].
    pub fn count_policy_decision(&self, decision: &'static str) {
        self.policy_decisions.get_or_create(&PolicyDecisionLabels { decision: decision.to_owned() }).inc();
    }

    pub fn count_policy_reload(&self, result: &'static str) {
        self.policy_reloads.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
    }

    pub fn count_cache_backend_error(&self, backend: &'static str) {
        self.cache_backend_errors.get_or_create(&CacheBackendLabels { backend: backend.to_owned() }).inc();
    }

    pub fn observe_upstream(&self, provider: &str, outcome: &str, elapsed: Duration) {
        let labels = OutcomeLabels { provider: provider.to_owned(), outcome: outcome.to_owned() };
        self.upstream_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    pub fn observe_tokens(&self, provider: &str, input: u32, output: u32) {
        for (direction, n) in [("input", input), ("output", output)] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels { provider: provider.to_owned(), direction: direction.to_owned() })
                    .inc_by(u64::from(n));
            }
        }
    }

    pub fn observe_first_token(&self, provider: &str, elapsed: Duration) {
        self.time_to_first_token.get_or_create(&ProviderLabels { provider: provider.to_owned() }).observe(elapsed.as_secs_f64());
    }

    pub fn count_fallback(&self, provider: &str) {
        self.fallbacks.get_or_create(&ProviderLabels { provider: provider.to_owned() }).inc();
    }

    pub fn observe_asr(&self, model: &str, audio_seconds: f32, elapsed: Duration) {
        if audio_seconds > 0.0 {
            let rtf = elapsed.as_secs_f64() / f64::from(audio_seconds);
            self.asr_real_time_factor.get_or_create(&ModelLabels { model: model.to_owned() }).observe(rtf);
        }
    }

    /// Mirrors the runtimes' counters (read at scrape time, so the workers never touch metrics).
    /// `known` are the manifest's model ids, so models evicted since the last scrape read 0.
    pub fn observe_runtimes<'a>(&self, status: &[uag_models::runtime::RuntimeStatus], known: impl IntoIterator<Item = &'a str>) {
        for s in status {
            let labels = RuntimeLabels { runtime: s.kind.as_str().to_owned() };
            self.runtime_queue_depth.get_or_create(&labels).set(s.queue_depth as i64);
            self.runtime_jobs.get_or_create(&labels).set(s.jobs_done as i64);
            self.runtime_busy_rejections.get_or_create(&labels).set(s.busy_rejections as i64);
            self.runtime_busy_seconds.get_or_create(&labels).set(s.busy_seconds);
            for (model, seconds) in &s.loaded {
                let labels = ModelLabels { model: model.clone() };
                self.model_loaded.get_or_create(&labels).set(1);
                self.model_load_seconds.get_or_create(&labels).set(*seconds);
            }
        }
        let loaded: Vec<&str> = status.iter().flat_map(|s| s.loaded.iter().map(|(m, _)| m.as_str())).collect();
        for model in known {
            if !loaded.contains(&model)
                && let Some(gauge) = self.model_loaded.get(&ModelLabels { model: model.to_owned() })
            {
                gauge.set(0);
            }
        }
    }

    /// The names of every metric family uag registers, empty or not (`/metrics` omits families
    /// without samples yet); the dashboard check compares against these.
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Resident set size from `/proc/self/status` (Linux; kB there, whatever the page size:
/// a Raspberry Pi 5 kernel uses 16 KiB pages); 0 elsewhere.
pub fn resident_memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok()))
        .map_or(0, |kb| kb * 1024)
}
