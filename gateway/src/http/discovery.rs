//! Liveness, readiness and the provider overview.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::circuit::CircuitState;
use crate::metrics::{ProviderLabels, resident_memory_bytes};
use crate::provider::Health;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(4);

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while serving, 503 once shutdown began (load balancers stop sending).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let providers: Vec<Value> =
        state.router.registry().entries().iter().map(|e| json!({"name": e.provider.name(), "circuit": e.breaker.state()})).collect();
    // A probe is anonymous; where the server otherwise requires credentials, a model's load
    // error (which names files and paths) is only said to exist, its text stays in the log.
    let redact = state.auth.as_ref().is_some_and(|a| a.requires_credentials());
    let models = state.models.as_ref().map(|m| models_overview(m, redact));
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting_down", "providers": providers, "models": models})))
            .into_response();
    }
    Json(json!({"status": "ready", "providers": providers, "models": models})).into_response()
}

/// Per model kind: what is loaded, what would be used, and the queue. A kind with no installed
/// model does not make the gateway unready (cloud fallbacks and extractive answers still work);
/// it shows `installed: null` with the command that installs the default.
fn models_overview(models: &uag_models::runtime::ModelRuntimes, redact_errors: bool) -> Value {
    let status = models.status();
    let kinds: serde_json::Map<String, Value> = status
        .iter()
        .map(|s| {
            let install = models.manifest().defaults().find(|m| m.kind == s.kind).map(|m| m.install_hint());
            let loaded: Vec<Value> = s.loaded.iter().map(|(id, secs)| json!({"model": id, "load_seconds": secs})).collect();
            let value = json!({
                "installed": s.installed_default,
                "loaded": loaded,
                "queue_depth": s.queue_depth,
                "queue_capacity": s.queue_capacity,
                "install": if s.installed_default.is_none() { install } else { None },
                "last_error": if redact_errors { s.last_error.as_ref().map(|_| "failed to load; see the gateway log".to_owned()) } else { s.last_error.clone() },
            });
            (s.kind.as_str().to_owned(), value)
        })
        .collect();
    Value::Object(kinds)
}

/// `GET /metrics`: the Prometheus exposition; gauges that mirror state are refreshed here.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    for entry in state.router.registry().entries() {
        let value = match entry.breaker.state() {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        };
        m.circuit_state.get_or_create(&ProviderLabels { provider: entry.provider.name().to_owned() }).set(value);
    }
    if let Some(engine) = &state.engine {
        let snapshot = engine.snapshot();
        m.kb_documents.set(snapshot.docs.len() as i64);
        m.kb_chunks.set(snapshot.chunks.len() as i64);
        m.kb_entities.set(snapshot.kg.entities.len() as i64);
    }
    if let Some(models) = &state.models {
        m.observe_runtimes(&models.status(), models.manifest().models.iter().map(|e| e.id.as_str()));
    }
    m.resident_memory.set(resident_memory_bytes());
    let (device, data_dir) = (state.config.device.clone(), state.config.storage.data_dir.clone());
    match tokio::task::spawn_blocking(move || crate::device::read(&device, &data_dir)).await {
        Ok(health) => crate::device::observe(m, &health),
        Err(e) => tracing::warn!(error = %e, "reading device health failed"),
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
}

/// `GET /v1/providers`: each provider's type, capabilities, health, circuit state and models.
pub async fn providers(State(state): State<AppState>) -> Json<Value> {
    let registry = state.router.registry();
    let rows = futures::future::join_all(registry.entries().iter().map(|entry| async move {
        let p = &entry.provider;
        let health = tokio::time::timeout(HEALTH_TIMEOUT, p.health()).await.unwrap_or_else(|_| Health::down("health check timed out"));
        let models = match tokio::time::timeout(HEALTH_TIMEOUT, p.list_models()).await {
            Ok(Ok(models)) => json!(models),
            _ => json!([]),
        };
        json!({
            "name": p.name(),
            "type": p.kind(),
            "capabilities": p.capabilities(),
            "health": health,
            "circuit": {"state": entry.breaker.state(), "consecutive_failures": entry.breaker.consecutive_failures()},
            "timeout_ms": entry.timeout.as_millis() as u64,
            "models": models,
        })
    }))
    .await;
    Json(json!({"object": "list", "data": rows}))
}
