//! Authorization: which caller may use which provider and which knowledge sources. Config
//! `[policy]`; absent, every authenticated (or anonymous) request is allowed.
//!
//! Decisions come from Rego policies evaluated in process by regorus (OPA-compatible): the
//! policy files plus an optional JSON data file are compiled into one engine, and every decision
//! evaluates `query` (a boolean, default `data.uag.allow`) against an input document
//! ([`PolicyInput`], documented in docs/POLICY.md). An undefined or non-boolean result denies.
//! `collections_query`, when set, names a set of knowledge-base collections the caller may
//! retrieve from; GraphRAG then only ranks chunks of those collections.
//!
//! Where decisions are made:
//! - inference (`/v1/inference`, `/v1/chat/completions`, the WebSocket APIs, the voice assistant):
//!   per target of the routed chain, right after `plan` (in [`crate::pipeline`]); denied
//!   targets are skipped, and when none is left the request gets 403 `policy_denied`;
//! - documents, audio and embeddings routes: once per request, without a provider ([`enforce`]).
//!
//! Policies reload on SIGHUP and when a file's size or mtime changes (polled every
//! `watch_interval_ms`). A policy set that fails to read or compile is not installed: the last
//! good one stays active and the error is logged with the Rego compiler's message.
//!
//! The input carries the verified identity (subject, roles, tenant), never a token or key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::ProviderKind;
use crate::memo::RecentResults;
use crate::metrics::Metrics;
use crate::provider::Identity;
use crate::routing::Target;

/// A collection name a policy may return to mean "every collection".
pub const ALL_COLLECTIONS: &str = "*";
/// One evaluation may take this long; a policy that loops is a deny, not a stuck request.
const EVAL_TIME_LIMIT: Duration = Duration::from_millis(250);

/// `[policy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rego files, compiled together.
    pub files: Vec<PathBuf>,
    /// A JSON object merged into `data` (role tables, collection lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// The boolean decision: true allows.
    #[serde(default = "default_query")]
    pub query: String,
    /// A set (or array) of collection names the caller may retrieve from (`"*"`: all). Unset:
    /// the policy does not restrict collections. Set but undefined for a request: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections_query: Option<String>,
    /// How often the files are checked for changes; 0: only on SIGHUP.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
}

fn default_query() -> String {
    "data.uag.allow".into()
}
fn default_watch_interval_ms() -> u64 {
    2000
}

impl PolicyConfig {
    /// Load-time checks: the files exist and compile, and the queries name a loaded package.
    /// The error is (key path, message) as in [`crate::config::Config::validate`].
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.files.is_empty() {
            return Err(("policy.files".into(), "needs at least one Rego file".into()));
        }
        for (key, query) in [("policy.query", Some(&self.query)), ("policy.collections_query", self.collections_query.as_ref())] {
            if let Some(q) = query
                && !q.starts_with("data.")
            {
                return Err((key.into(), format!("`{q}` must be a rule path under `data.` (e.g. `data.uag.allow`)")));
            }
        }
        Compiled::load(self).map(|_| ()).map_err(|e| (e.key().to_owned(), e.to_string()))
    }
}

/// Why a policy set could not be loaded or a decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    /// The Rego compiler's message, with file, line and column.
    #[error("{} does not compile: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    #[error("{} is not a JSON object for `data`: {message}", path.display())]
    Data { path: PathBuf, message: String },
    #[error("query `{query}` cannot be evaluated: {message}")]
    Query { query: String, message: String },
}

impl PolicyError {
    /// The config key the error is about.
    fn key(&self) -> &'static str {
        match self {
            PolicyError::Read { .. } | PolicyError::Compile { .. } => "policy.files",
            PolicyError::Data { .. } => "policy.data",
            PolicyError::Query { .. } => "policy.query",
        }
    }
}

/// What a decision is about. Serialized as the policy's `input`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInput {
    pub identity: InputIdentity,
    /// The route template (`/v1/inference`, `/v1/documents/{id}`).
    pub route: String,
    pub method: String,
    /// `inference`, `documents`, `audio` or `embeddings`.
    pub kind: &'static str,
    /// The provider name from config; null for routes without one.
    pub provider: Option<String>,
    /// Its type (`openai`, `anthropic`, `ollama`, `openai_compatible`, `local`).
    pub provider_type: Option<&'static str>,
    pub model: Option<String>,
    /// Collections the request asked for (`metadata.collections`, `?collection=`); empty: none named.
    pub collections: Vec<String>,
}

impl PolicyInput {
    /// The input of an inference decision: one target of the routed chain.
    pub fn inference(
        identity: Option<&Identity>,
        route: Route,
        provider: &str,
        provider_type: Option<ProviderKind>,
        model: &str,
        collections: Vec<String>,
    ) -> Self {
        Self {
            identity: InputIdentity::from_identity(identity),
            route: route.path.to_owned(),
            method: route.method.to_owned(),
            kind: "inference",
            provider: Some(provider.to_owned()),
            provider_type: provider_type.map(ProviderKind::as_str),
            model: Some(model.to_owned()),
            collections,
        }
    }
}

/// The caller as the policy sees it: the verified identity, no credentials.
#[derive(Debug, Clone, Serialize)]
pub struct InputIdentity {
    pub anonymous: bool,
    pub subject: Option<String>,
    pub roles: Vec<String>,
    pub tenant: Option<String>,
    /// `jwt` or `api_key`; null when anonymous.
    pub method: Option<crate::provider::AuthMethod>,
}

impl InputIdentity {
    pub fn from_identity(identity: Option<&Identity>) -> Self {
        match identity {
            Some(i) => Self {
                anonymous: false,
                subject: Some(i.subject.clone()),
                roles: i.roles.clone(),
                tenant: i.tenant.clone(),
                method: Some(i.method),
            },
            None => Self { anonymous: true, subject: None, roles: Vec::new(), tenant: None, method: None },
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// Collections the caller may retrieve from; `None`: not restricted.
    pub collections: Option<Vec<String>>,
}

/// A file as last seen, to notice edits without a filesystem-events dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        // Editors and config managers replace files by rename: a new inode is a change too.
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// A compiled policy set, never modified after loading (evaluations work on clones).
#[derive(Debug)]
struct Compiled {
    engine: regorus::Engine,
    stamps: Vec<Option<FileStamp>>,
    /// Recent decisions by their input document. Evaluating means cloning the engine (about
    /// 0.2 ms); a kiosk or a client sends the same input over and over. Entries live for
    /// [`DECISION_TTL`] so policies that read the clock stay close to right; a reload brings
    /// a new `Compiled` and so an empty memo.
    memo: RecentResults<Decision>,
}

/// How long a memoised decision is reused.
const DECISION_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Most memoised decisions.
const DECISION_MEMO_CAP: usize = 4096;

impl Compiled {
    fn load(config: &PolicyConfig) -> Result<Self, PolicyError> {
        // Stamps first: an edit while we read is then seen as a change on the next poll.
        let stamps = watched_files(config).map(|p| stamp(p)).collect();
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVAL_TIME_LIMIT,
            check_interval: std::num::NonZeroU32::MIN.saturating_add(999),
        });
        for path in &config.files {
            let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read { path: path.clone(), message: e.to_string() })?;
            engine
                .add_policy(path.display().to_string(), text)
                .map_err(|e| PolicyError::Compile { path: path.clone(), message: e.to_string() })?;
        }
        if let Some(path) = &config.data {
            let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read { path: path.clone(), message: e.to_string() })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| PolicyError::Data { path: path.clone(), message: e.to_string() })?;
            if !json.is_object() {
                return Err(PolicyError::Data { path: path.clone(), message: "the top level must be an object".into() });
            }
            engine.add_data(regorus::Value::from(json)).map_err(|e| PolicyError::Data { path: path.clone(), message: e.to_string() })?;
        }
        let compiled = Self { engine, stamps, memo: RecentResults::new(DECISION_MEMO_CAP) };
        compiled.check_queries(config)?;
        Ok(compiled)
    }

    /// Parsing alone misses unknown functions and unsafe variables; one evaluation with an
    /// empty input runs the full compilation, so such a policy is refused at load, not per request.
    fn check_queries(&self, config: &PolicyConfig) -> Result<(), PolicyError> {
        let packages =
            self.engine.get_packages().map_err(|e| PolicyError::Query { query: config.query.clone(), message: e.to_string() })?;
        for query in std::iter::once(&config.query).chain(config.collections_query.as_ref()) {
            // A typo in the package would make every decision undefined, i.e. deny everything.
            if !packages.iter().any(|p| query.starts_with(&format!("{p}."))) {
                return Err(PolicyError::Query {
                    query: query.clone(),
                    message: format!("no loaded policy declares its package (packages: {})", packages.join(", ")),
                });
            }
            let mut engine = self.engine.clone();
            engine.set_input(regorus::Value::new_object());
            engine.eval_query(query.clone(), false).map_err(|e| {
                // Compile errors surface here and name the file and line.
                let message = e.to_string();
                match config.files.iter().find(|f| message.contains(&f.display().to_string())) {
                    Some(path) => PolicyError::Compile { path: path.clone(), message },
                    None => PolicyError::Query { query: query.clone(), message },
                }
            })?;
        }
        Ok(())
    }

    fn eval(&self, query: &str, input: &regorus::Value) -> Result<Option<serde_json::Value>, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(input.clone());
        let results = engine
            .eval_query(query.to_owned(), false)
            .map_err(|e| PolicyError::Query { query: query.to_owned(), message: e.to_string() })?;
        let value = results.result.first().and_then(|r| r.expressions.first()).map(|e| &e.value);
        Ok(value.and_then(|v| serde_json::to_value(v).ok()))
    }
}

fn watched_files(config: &PolicyConfig) -> impl Iterator<Item = &PathBuf> {
    config.files.iter().chain(config.data.as_ref())
}

/// The loaded policy set, swapped whole on reload; one per gateway.
pub struct PolicyEngine {
    config: PolicyConfig,
    current: RwLock<Arc<Compiled>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("files", &self.config.files).field("query", &self.config.query).finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Reads and compiles the files `config` names.
    pub fn load(config: &PolicyConfig, metrics: Arc<Metrics>) -> Result<Self, PolicyError> {
        let compiled = Compiled::load(config)?;
        Ok(Self { config: config.clone(), current: RwLock::new(Arc::new(compiled)), metrics })
    }

    fn current(&self) -> Arc<Compiled> {
        // A panic elsewhere cannot leave a half-written Arc behind; the value is always whole.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Decides `input`. Errors (a policy that fails at run time) are for the caller to deny.
    pub fn authorize(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let compiled = self.current();
        let json =
            serde_json::to_value(input).map_err(|e| PolicyError::Query { query: self.config.query.clone(), message: e.to_string() })?;
        let key = json.to_string();
        if let Some(decision) = compiled.memo.get(&key) {
            return Ok(decision);
        }
        let input = regorus::Value::from(json);
        let allow = matches!(compiled.eval(&self.config.query, &input)?, Some(serde_json::Value::Bool(true)));
        let collections = match (&self.config.collections_query, allow) {
            (Some(query), true) => collection_list(compiled.eval(query, &input)?),
            _ => None,
        };
        let decision = Decision { allow, collections };
        compiled.memo.insert(key, decision.clone(), DECISION_TTL);
        Ok(decision)
    }

    /// Compiles the files again and installs the result; on failure the active policy stays and
    /// the error is logged and counted.
    pub fn reload(&self) -> Result<(), PolicyError> {
        match Compiled::load(&self.config) {
            Ok(compiled) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(compiled);
                self.metrics.count_policy_reload("ok");
                tracing::info!(files = self.config.files.len(), "policy reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.count_policy_reload("error");
                tracing::error!(error = %e, "policy reload failed; the previous policy stays active");
                Err(e)
            }
        }
    }

    /// Whether a file changed since the active policy (or the last failed attempt) was loaded.
    fn files_changed(&self, last_seen: &mut Vec<Option<FileStamp>>) -> bool {
        let now: Vec<Option<FileStamp>> = watched_files(&self.config).map(|p| stamp(p)).collect();
        let changed = now != *last_seen;
        *last_seen = now;
        changed
    }

    /// Reloads on SIGHUP and on file changes until `shutdown` fires.
    pub fn spawn_watcher(self: &Arc<Self>, shutdown: CancellationToken) {
        let engine = Arc::clone(self);
        // Installed before spawning, so a SIGHUP right after start-up reloads instead of killing.
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; policies reload on file changes only");
                None
            }
        };
        let interval = Duration::from_millis(self.config.watch_interval_ms);
        tokio::spawn(async move {
            let mut last_seen = engine.current().stamps.clone();
            loop {
                #[cfg(unix)]
                let hup = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup = std::future::pending::<Option<()>>();
                let poll = async { if interval.is_zero() { std::future::pending().await } else { tokio::time::sleep(interval).await } };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    // `None` (the signal driver is gone at runtime shutdown) disables the branch.
                    Some(()) = hup => {
                        tracing::info!("SIGHUP: reloading the policy");
                        let _ = engine.reload();
                        last_seen = engine.current().stamps.clone();
                    }
                    () = poll => {
                        if engine.files_changed(&mut last_seen) {
                            // A failure is logged and counted; it is retried on the next change.
                            let _ = engine.reload();
                        }
                    }
                }
            }
        });
    }
}

/// Without a policy SIGHUP has nothing to reload, but its default action would end the process
/// (`systemctl reload uag` sends it): listen and log instead, until `shutdown` fires.
pub fn ignore_hangup(shutdown: CancellationToken) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        Some(()) = hangup.recv() => tracing::info!("SIGHUP: no [policy] configured; nothing to reload"),
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
    #[cfg(not(unix))]
    drop(shutdown);
}

/// A collections result: a set or array of strings; `"*"` among them lifts the restriction.
fn collection_list(value: Option<serde_json::Value>) -> Option<Vec<String>> {
    let items = match value {
        Some(serde_json::Value::Array(items)) => items,
        Some(serde_json::Value::String(one)) => vec![serde_json::Value::String(one)],
        // Undefined or anything else: the caller may use no collection (fail closed).
        _ => Vec::new(),
    };
    let names: Vec<String> = items.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    if names.iter().any(|n| n == ALL_COLLECTIONS) { None } else { Some(names) }
}

/// `allowed` ∩ `requested`, where `None` means "not restricted" on either side.
pub fn effective_collections(allowed: Option<Vec<String>>, requested: &[String]) -> Option<Vec<String>> {
    match (allowed, requested.is_empty()) {
        (None, true) => None,
        (None, false) => Some(requested.to_vec()),
        (Some(allowed), true) => Some(allowed),
        (Some(allowed), false) => Some(requested.iter().filter(|c| allowed.contains(c)).cloned().collect()),
    }
}

/// An inference request none of whose targets the policy allows this caller (403
/// `policy_denied`; the message names the first refused target, never the policy).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PolicyDenied(pub String);

/// Where an inference request came in, for the policy input and the decision log.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub method: &'static str,
}

/// One evaluation, counted; a failing policy denies (fail closed) and says why in the log.
pub fn decide(policy: &PolicyEngine, metrics: &Metrics, input: &PolicyInput) -> Option<Decision> {
    match policy.authorize(input) {
        Ok(decision) => {
            metrics.count_policy_decision(if decision.allow { "allow" } else { "deny" });
            Some(decision)
        }
        Err(e) => {
            metrics.count_policy_decision("error");
            tracing::error!(error = %e, route = %input.route, provider = ?input.provider, "policy evaluation failed; denying");
            None
        }
    }
}

/// The decision log line: who, what, the outcome; never credentials.
pub fn log_decision(
    identity: Option<&Identity>,
    route: &str,
    kind: &str,
    allowed: &[Target],
    denied: &[String],
    collections: Option<&[String]>,
) {
    let allowed: Vec<String> = allowed.iter().map(|t| format!("{}/{}", t.provider, t.model)).collect();
    tracing::info!(
        target: "uag::policy",
        decision = if allowed.is_empty() { "deny" } else { "allow" },
        subject = identity.map_or("-", |i| i.subject.as_str()),
        route,
        kind,
        allowed = %allowed.join(","),
        denied = %denied.join(","),
        collections = ?collections,
        "policy decision"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"package uag

default allow := false

allow if "admin" in input.identity.roles

allow if {
    some role in input.identity.roles
    input.provider in data.roles[role].providers
}

allowed_collections contains c if {
    some role in input.identity.roles
    some c in data.roles[role].collections
}
"#;

    const DATA: &str = r#"{"roles": {"user": {"providers": ["ollama", "local"], "collections": ["a"]},
                          "admin": {"collections": ["*"]}}}"#;

    fn setup(policy: &str) -> (tempfile::TempDir, PolicyConfig) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("uag.rego"), policy).unwrap();
        std::fs::write(dir.path().join("data.json"), DATA).unwrap();
        let config = PolicyConfig {
            files: vec![dir.path().join("uag.rego")],
            data: Some(dir.path().join("data.json")),
            query: default_query(),
            collections_query: Some("data.uag.allowed_collections".into()),
            watch_interval_ms: 0,
        };
        (dir, config)
    }

    fn input(roles: &[&str], provider: &str) -> PolicyInput {
        PolicyInput {
            identity: InputIdentity {
                anonymous: false,
                subject: Some("alice".into()),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                tenant: None,
                method: Some(crate::provider::AuthMethod::Jwt),
            },
            route: "/v1/inference".into(),
            method: "POST".into(),
            kind: "inference",
            provider: Some(provider.into()),
            provider_type: None,
            model: Some("m".into()),
            collections: Vec::new(),
        }
    }

    #[test]
    fn decides_per_provider_and_returns_collections() {
        let (_dir, config) = setup(POLICY);
        config.validate().unwrap();
        let engine = PolicyEngine::load(&config, Metrics::new()).unwrap();
        let d = engine.authorize(&input(&["user"], "ollama")).unwrap();
        assert_eq!(d, Decision { allow: true, collections: Some(vec!["a".into()]) });
        assert!(!engine.authorize(&input(&["user"], "openai")).unwrap().allow);
        assert!(!engine.authorize(&input(&[], "ollama")).unwrap().allow);
        // `"*"` lifts the restriction.
        assert_eq!(engine.authorize(&input(&["admin"], "openai")).unwrap(), Decision { allow: true, collections: None });
    }

    #[test]
    fn broken_policies_are_refused_with_the_compiler_message() {
        let (_dir, config) = setup("package uag\nallow if { input.x == }\n");
        let (key, message) = config.validate().unwrap_err();
        assert_eq!(key, "policy.files");
        assert!(message.contains("uag.rego") && message.contains("does not compile"), "{message}");
        // Parses, but calls a function that does not exist: found at load, not per request.
        let (_dir, config) = setup("package uag\nallow if { nosuchfn(input.x) }\n");
        let (_, message) = config.validate().unwrap_err();
        assert!(message.contains("nosuchfn"), "{message}");
        // A query whose package no file declares.
        let (_dir, mut config) = setup(POLICY);
        config.query = "data.uga.allow".into();
        assert_eq!(config.validate().unwrap_err().0, "policy.query");
    }

    #[test]
    fn reload_swaps_only_a_policy_that_compiles() {
        let (dir, config) = setup(POLICY);
        let metrics = Metrics::new();
        let engine = PolicyEngine::load(&config, Arc::clone(&metrics)).unwrap();
        let mut seen = engine.current().stamps.clone();
        assert!(!engine.files_changed(&mut seen));
        std::fs::write(dir.path().join("uag.rego"), "package uag\nallow if { input.x == }\n").unwrap();
        assert!(engine.files_changed(&mut seen));
        assert!(engine.reload().is_err());
        assert!(engine.authorize(&input(&["user"], "ollama")).unwrap().allow, "the old policy stays active");
        std::fs::write(dir.path().join("uag.rego"), "package uag\ndefault allow := false\n").unwrap();
        engine.reload().unwrap();
        assert!(!engine.authorize(&input(&["user"], "ollama")).unwrap().allow);
        let text = metrics.render();
        assert!(text.contains(r#"uag_policy_reloads_total{result="error"} 1"#), "{text}");
        assert!(text.contains(r#"uag_policy_reloads_total{result="ok"} 1"#), "{text}");
    }

    #[test]
    fn collections_are_intersected() {
        let s = |v: &[&str]| v.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        assert_eq!(effective_collections(None, &[]), None);
        assert_eq!(effective_collections(None, &s(&["b"])), Some(s(&["b"])));
        assert_eq!(effective_collections(Some(s(&["a"])), &[]), Some(s(&["a"])));
        assert_eq!(effective_collections(Some(s(&["a"])), &s(&["a", "b"])), Some(s(&["a"])));
        assert_eq!(collection_list(None), Some(vec![]));
        assert_eq!(collection_list(Some(serde_json::json!(["a", "*"]))), None);
    }
}
