//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! One registry per [`crate::AppState`] (no global recorder), so several gateways in one
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

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~33 s: gateway overhead at the low end, LLM answers at the high end.
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Every metric uag exports. Names (after the registry's `uag_` prefix and Prometheus suffixes)
/// are listed in docs and checked against the Grafana dashboard by the test suite.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub upstream_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    pub time_to_first_token: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub fallbacks: Family<ProviderLabels, Counter>,
    pub circuit_state: Family<ProviderLabels, Gauge>,
    pub websocket_connections: Gauge,
    pub kb_documents: Gauge,
    pub kb_chunks: Gauge,
    pub kb_entities: Gauge,
    pub resident_memory: Gauge,
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
            circuit_state: Family::default(),
            websocket_connections: Gauge::default(),
            kb_documents: Gauge::default(),
            kb_chunks: Gauge::default(),
            kb_entities: Gauge::default(),
            resident_memory: Gauge::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut root;
        r.register("http_requests", "HTTP requests by route template, method and status", m.http_requests.clone());
        r.register("http_request_duration_seconds", "HTTP request latency (to the response head)", m.http_duration.clone());
        r.register("upstream_request_duration_seconds", "Provider attempt latency by outcome", m.upstream_duration.clone());
        r.register("time_to_first_token_seconds", "Time from request to the first streamed token", m.time_to_first_token.clone());
        r.register("tokens", "Tokens reported by providers, in and out", m.tokens.clone());
        r.register("fallbacks", "Times a chain moved past a failing provider", m.fallbacks.clone());
        r.register("circuit_state", "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open", m.circuit_state.clone());
        r.register("websocket_connections", "Open WebSocket connections", m.websocket_connections.clone());
        r.register("knowledge_base_documents", "Documents in the knowledge base", m.kb_documents.clone());
        r.register("knowledge_base_chunks", "Chunks in the knowledge base", m.kb_chunks.clone());
        r.register("knowledge_base_entities", "Entities in the knowledge graph", m.kb_entities.clone());
        r.register("process_resident_memory_bytes", "Resident memory of the uag process", m.resident_memory.clone());
        r.register("build_info", "uag version", m.build_info.clone());
        m.build_info.get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        Arc::new(Metrics { registry: root, ..m })
    }

    pub fn observe_http(&self, labels: HttpLabels, elapsed: Duration) {
        self.http_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.http_requests.get_or_create(&labels).inc();
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
