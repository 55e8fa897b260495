//! Test support: an in-process gateway on `127.0.0.1:0` running the real `serve` loop, wired
//! to the mock upstream, and helpers to read SSE and JSON answers.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod mock_upstream;
pub mod redis;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use mock_upstream::MockUpstream;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uag_gateway::codec::SseDecoder;
use uag_gateway::config::{Config, ConfigOrigin};
use uag_gateway::{AppState, serve};

/// The secret every test provider uses; tests check it never leaks.
pub const TEST_KEY: &str = "sk-test-secret-0123456789abcdef";

/// Providers of every type pointing at `mock`, with short timeouts. `{KEY}` in `extra` is the
/// credential reference.
pub fn providers_toml(mock: &MockUpstream, key_ref: &str) -> String {
    let url = mock.url();
    format!(
        r#"
[[providers]]
name = "openai"
type = "openai"
base_url = "{url}/v1"
api_key = "{key_ref}"
models = ["gpt-4o-mini"]
timeout_ms = 600

[[providers]]
name = "anthropic"
type = "anthropic"
base_url = "{url}"
api_key = "{key_ref}"
models = ["claude-3-5-haiku-20241022"]
timeout_ms = 600

[[providers]]
name = "ollama"
type = "ollama"
base_url = "{url}"
models = ["llama3.2"]
timeout_ms = 600

[[providers]]
name = "vllm"
type = "openai_compatible"
base_url = "{url}/v1"
timeout_ms = 600
"#
    )
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub dir: tempfile::TempDir,
    /// Held while a gateway with local models runs, so a [`quiet`] test runs without them.
    _models_running: Option<Arc<tokio::sync::RwLockReadGuard<'static, ()>>>,
}

/// Gateways with local models hold this shared; a test that asserts how long the server takes
/// holds it alone ([`quiet`]). whisper.cpp's threads spin while they wait for each other, so two
/// transcriptions in two tests on a two-core machine each take several times as long: a bound
/// on latency would then measure the suite, not the server.
static MODELS_RUNNING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

thread_local! {
    /// This test thread holds [`MODELS_RUNNING`] alone: its own gateways take no shared guard.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The shared guard this test thread's gateways hold: a test's second gateway reuses it
    /// (asking again could wait behind a queued [`quiet`] that waits for the first: deadlock).
    static SHARED: std::cell::RefCell<Weak<tokio::sync::RwLockReadGuard<'static, ()>>> = const { std::cell::RefCell::new(Weak::new()) };
}

async fn models_running() -> Arc<tokio::sync::RwLockReadGuard<'static, ()>> {
    if let Some(held) = SHARED.with(|s| s.borrow().upgrade()) {
        return held;
    }
    let held = Arc::new(MODELS_RUNNING.read().await);
    SHARED.with(|s| *s.borrow_mut() = Arc::downgrade(&held));
    held
}

/// Holds the machine for one latency test: waits for running tests with local models to end,
/// and keeps new ones from starting until the guard drops. Call it first in the test (a
/// `#[tokio::test]` runs on its own thread, where gateways started later find the flag).
pub async fn quiet() -> Quiet {
    let guard = MODELS_RUNNING.write().await;
    QUIET.with(|q| q.set(true));
    Quiet { _guard: guard }
}

pub struct Quiet {
    _guard: tokio::sync::RwLockWriteGuard<'static, ()>,
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(false));
    }
}

impl Gateway {
    /// A gateway whose config is `server_toml` + the mock's providers + `extra_toml`.
    pub async fn with_mock(mock: &MockUpstream, extra_toml: &str) -> Self {
        Self::with_mock_env(mock, extra_toml, &[]).await
    }

    /// As [`Gateway::with_mock`], with `UAG__*` overrides (e.g. `[server]` keys).
    pub async fn with_mock_env(mock: &MockUpstream, extra_toml: &str, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, format!("{TEST_KEY}\n")).unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 3000\nws_ping_interval_ms = 5000\n\n[storage]\ndata_dir = \"{}\"\n{}\n{}",
            dir.path().display(),
            providers_toml(mock, &format!("file::{}", key_file.display())),
            extra_toml
        );
        let config = Config::from_toml_str(&text, &ConfigOrigin::File("test.toml".into()), &env).expect("test config");
        Self::start(config, dir).await
    }

    pub async fn start(config: Config, dir: tempfile::TempDir) -> Self {
        let state = AppState::new(config).expect("registry");
        Self::start_with_state(state, dir).await
    }

    /// A gateway whose `local` provider has no knowledge base (it answers `not_installed`).
    pub async fn without_engine(mock: &MockUpstream, extra_toml: &str) -> Self {
        // Build the config as usual (credential files included), then stop that gateway.
        let Gateway { state, shutdown, server, dir, .. } = Self::with_mock(mock, extra_toml).await;
        shutdown.cancel();
        server.await.unwrap().unwrap();
        let config = (*state.config).clone();
        drop(state);
        let registry = uag_gateway::registry::Registry::from_config(config.registry_config(), None, None).unwrap();
        Self::start_with_state(AppState::with_registry(config, registry, None).expect("state"), dir).await
    }

    async fn start_with_state(state: AppState, dir: tempfile::TempDir) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let _models_running = if state.models.is_some() && !QUIET.with(std::cell::Cell::get) { Some(models_running().await) } else { None };
        let server = tokio::spawn(serve(listener, state.clone(), async move { signal.cancelled().await }));
        Self { addr, state, shutdown, server, dir, _models_running }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/inference/stream", self.addr)
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits for `serve` to return.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server).await.expect("serve returned in time").expect("serve task")
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
        let r = client().post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, text) = self.post(path, body).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = client().get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

/// Waits until `done` holds, polling every 20 ms; fails naming `what` once `within` has passed.
/// For checks on work another task finishes after the reply or event the test saw (an upstream
/// stream dropped, a counter moved): on a loaded machine no fixed pause is long enough.
pub async fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: still not the case after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python interpreter of `.venv-sdk` (the official openai and anthropic SDKs, wyoming),
/// installed by `scripts/setup.sh --test`; `UAG_SDK_PYTHON` points elsewhere.
pub fn sdk_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("UAG_SDK_PYTHON") {
        return std::path::PathBuf::from(p);
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-sdk/bin/python")
}

/// Runs `tests/sdk/SCRIPT` with the official SDKs' Python (`.venv-sdk`, from
/// `scripts/setup.sh --test`) and `args`; fails the test unless it exits 0. Returns its stdout.
pub async fn run_sdk_script(script: &str, args: &[&str]) -> String {
    let python = sdk_python();
    assert!(python.exists(), "{} is missing: run `scripts/setup.sh --test` to install the SDKs the tests drive uag with", python.display());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let out = tokio::process::Command::new(&python).arg(&path).args(args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

pub fn client() -> reqwest::Client {
    // Generous: local inference on a busy 2-core CI machine can take many seconds.
    uag_gateway::crypto::http_client_builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Signs a test token through the gateway's own JWT provider (ring), installed first: the
/// binary links no other, and jsonwebtoken fixes its provider at first use.
pub fn jwt<T: serde::Serialize>(
    header: &jsonwebtoken::Header,
    claims: &T,
    key: &jsonwebtoken::EncodingKey,
) -> jsonwebtoken::errors::Result<String> {
    uag_gateway::jwt_ring::install();
    jsonwebtoken::encode(header, claims, key)
}

/// A rustls client config builder on the process's provider (ring), installed first.
pub fn rustls_client() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    uag_gateway::crypto::install_crypto_provider();
    rustls::ClientConfig::builder()
}

/// Parses an SSE body into (event name, data) pairs.
pub fn sse(body: &str) -> Vec<(Option<String>, String)> {
    let mut d = SseDecoder::new();
    let mut out: Vec<_> = d.push(body.as_bytes()).unwrap().into_iter().map(|e| (e.event, e.data)).collect();
    out.extend(d.finish().into_iter().map(|e| (e.event, e.data)));
    out
}

/// The JSON payloads of a native `/v1/inference` SSE stream.
pub fn sse_events(body: &str) -> Vec<Value> {
    sse(body).into_iter().map(|(_, data)| serde_json::from_str(&data).unwrap()).collect()
}

/// Concatenated `delta` texts of native events.
pub fn delta_text(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "delta").map(|e| e["text"].as_str().unwrap()).collect()
}

/// Asserts the OpenAI error shape and returns its code.
pub fn error_code(body: &Value) -> String {
    let err = &body["error"];
    assert!(err["message"].is_string(), "no error.message in {body}");
    assert!(err["type"].is_string(), "no error.type in {body}");
    err["code"].as_str().unwrap_or_else(|| panic!("no error.code in {body}")).to_owned()
}

/// The model directory `scripts/fetch-models.sh` fills (`UAG_MODELS_DIR` overrides). Tests of
/// the local models use the real files and fail, naming the install command, when one is
/// missing: they never skip.
pub fn models_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("UAG_MODELS_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    // The same default as the server's (`[storage] data_dir`): XDG state dir, else ~/.local/state.
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(state).join("uag/models");
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    home.join(".local/state/uag/models")
}

/// `[models]` config pointing at the real model directory, asserting the given models exist.
pub fn models_toml(required: &[&str]) -> String {
    let dir = models_dir();
    let manifest = uag_models::manifest::Manifest::embedded().unwrap();
    for id in required {
        let entry = manifest.require(id).unwrap();
        assert!(
            uag_models::fetch::is_installed(entry, &dir),
            "model {id} is not installed in {}: run `scripts/fetch-models.sh {id}` (or set UAG_MODELS_DIR)",
            dir.display()
        );
    }
    format!("\n[models]\ndir = \"{}\"\n", dir.display())
}

/// Word error rate: word-level edit distance over the reference length, ignoring case and
/// punctuation.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let cost = usize::from(r[i - 1] != h[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

/// Everything a tracing event writes in this test binary (debug level for uag's crates), so
/// tests can check that decisions are logged and credentials are not. One subscriber serves
/// the whole binary: a process has one global subscriber.
pub fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        // Dependencies stay at info: their debug lines (hyper, h2, tantivy) would only grow the buffer.
        let filter = tracing_subscriber::EnvFilter::new("info,uag=debug,uag_gateway=debug,uag_graphrag=debug,uag_models=debug");
        let _ =
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(move || LogWriter(Arc::clone(&sink))).try_init();
        buffer
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
