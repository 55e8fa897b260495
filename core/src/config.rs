//! The configuration sections the inference path reads: providers (a closed, serde-tagged set,
//! checked when the config loads), routes and circuit breakers, local models and the knowledge
//! base, and typed credentials. `uag-gateway`'s `config` composes them with the server's own
//! sections into `uag.toml` and validates the whole.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Local model runtimes (`uag models list` shows the ids).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Model files; defaults to `<data_dir>/models`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Model ids preferred per kind over the manifest's defaults (e.g. `["whisper-base"]` for
    /// speech in other languages than English). Each must be a known id.
    pub prefer: Vec<String>,
    /// Model ids loaded at start-up rather than on first use (or `["defaults"]` for the
    /// installed default of every kind).
    pub preload: Vec<String>,
    /// Requests waiting per runtime before new ones get 503 with Retry-After.
    pub queue_depth: usize,
    /// whisper.cpp threads per transcription; 0 = all cores.
    pub asr_threads: usize,
    /// ONNX Runtime threads for speech synthesis; 0 = up to 2.
    pub tts_threads: usize,
    /// Largest LLM context (prompt + answer) in tokens; bounds the KV-cache memory.
    pub llm_context: usize,
    /// Longest answer the local LLM writes when the request sets no `max_tokens`.
    pub llm_max_tokens: usize,
    /// Evidence the local LLM gets for a grounded answer: the sentences of the retrieved
    /// passages that answer the question, at most this many sentences and words (fewer
    /// prompt tokens: a faster first word on a small CPU).
    #[serde(alias = "rag_passages")]
    pub rag_evidence_sentences: usize,
    #[serde(alias = "rag_passage_words")]
    pub rag_evidence_words: usize,
    /// Largest audio upload for transcription, in bytes.
    pub max_audio_bytes: usize,
    /// Longest text `/v1/audio/speech` synthesises, in characters (OpenAI's limit is 4096).
    pub max_speech_chars: usize,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            prefer: Vec::new(),
            preload: Vec::new(),
            queue_depth: 8,
            asr_threads: 0,
            tts_threads: 0,
            llm_context: 2048,
            llm_max_tokens: 256,
            rag_evidence_sentences: 6,
            rag_evidence_words: 120,
            max_audio_bytes: 25 * 1024 * 1024,
            max_speech_chars: 4096,
        }
    }
}

/// The in-process GraphRAG engine (provider `local`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphRagConfig {
    /// Folder ingested on start-up when the knowledge base is empty; `""` disables. The
    /// default is the Debian Administrator's Handbook (Debian package `debian-handbook`).
    pub sample_kb: PathBuf,
    /// Passages an answer draws on.
    pub top_k: usize,
    /// Largest document accepted by `POST /v1/documents`.
    pub max_document_bytes: usize,
    /// Who writes the answers of model `graphrag`: `extractive` (the sentences of the
    /// passages that answer the question; the default, chosen on the held-out evaluation in
    /// docs/EVALUATION.md) or `llm` (the installed local LLM writes from those sentences, and
    /// each of its sentences is verified against them before it is sent).
    pub answers: AnswerWriter,
    /// Rank passages by meaning too: every chunk is embedded with the installed embedding
    /// model (MiniLM) at ingest, and the question's nearest chunks are fused with BM25 and
    /// the graph. Without an embedding model, or `false`, BM25 and the graph rank alone.
    pub dense: bool,
}

/// See [`GraphRagConfig::answers`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerWriter {
    #[default]
    Extractive,
    Llm,
}

impl Default for GraphRagConfig {
    fn default() -> Self {
        Self {
            sample_kb: PathBuf::from(DEFAULT_SAMPLE_KB),
            top_k: 5,
            max_document_bytes: 20 * 1024 * 1024,
            answers: AnswerWriter::default(),
            dense: true,
        }
    }
}

/// Where Debian's `debian-handbook` package puts the English HTML.
pub const DEFAULT_SAMPLE_KB: &str = "/usr/share/doc/debian-handbook/html/en-US";

/// One `[[providers]]` entry. A closed set: an unknown `type` fails at load time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProviderConfig {
    #[serde(rename = "openai")]
    OpenAi(RemoteProviderConfig),
    #[serde(rename = "anthropic")]
    Anthropic(RemoteProviderConfig),
    #[serde(rename = "ollama")]
    Ollama(RemoteProviderConfig),
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible(RemoteProviderConfig),
    #[serde(rename = "local")]
    Local(LocalProviderConfig),
}

/// The kinds of provider, for display and capability checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Ollama,
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible,
    Local,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::Local => "local",
        }
    }

    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Ollama => Some("http://127.0.0.1:11434"),
            ProviderKind::OpenAiCompatible | ProviderKind::Local => None,
        }
    }

    pub fn requires_api_key(self) -> bool {
        matches!(self, ProviderKind::OpenAi | ProviderKind::Anthropic)
    }
}

impl ProviderConfig {
    pub fn name(&self) -> &str {
        match self {
            ProviderConfig::OpenAi(c) | ProviderConfig::Anthropic(c) | ProviderConfig::Ollama(c) | ProviderConfig::OpenAiCompatible(c) => {
                &c.name
            }
            ProviderConfig::Local(c) => &c.name,
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::OpenAi(_) => ProviderKind::OpenAi,
            ProviderConfig::Anthropic(_) => ProviderKind::Anthropic,
            ProviderConfig::Ollama(_) => ProviderKind::Ollama,
            ProviderConfig::OpenAiCompatible(_) => ProviderKind::OpenAiCompatible,
            ProviderConfig::Local(_) => ProviderKind::Local,
        }
    }

    pub fn remote(&self) -> Option<&RemoteProviderConfig> {
        match self {
            ProviderConfig::OpenAi(c) | ProviderConfig::Anthropic(c) | ProviderConfig::Ollama(c) | ProviderConfig::OpenAiCompatible(c) => {
                Some(c)
            }
            ProviderConfig::Local(_) => None,
        }
    }
}

/// Settings shared by every provider that talks HTTP to an upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteProviderConfig {
    /// Unique; used in `name/model` and in route chains.
    pub name: String,
    /// Upstream base URL; each type has a default except `openai_compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `env::NAME` or `file::PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Credential>,
    /// Models offered; when empty they are discovered from the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Timeout of one upstream attempt (connect to last byte, or to first event when streaming).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Anthropic only: the `anthropic-version` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    /// Used when a request gives no `max_tokens` and the upstream requires one (Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u32>,
    /// Send the authenticated caller upstream: the OpenAI `user` field (openai,
    /// openai_compatible), the `x-uag-user` header (openai_compatible, ollama).
    #[serde(default = "default_true")]
    pub forward_identity: bool,
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl RemoteProviderConfig {
    /// The base URL with its type's default applied, without a trailing slash.
    pub fn effective_base_url(&self, kind: ProviderKind) -> Option<String> {
        self.base_url.clone().or_else(|| kind.default_base_url().map(str::to_owned)).map(|u| u.trim_end_matches('/').to_owned())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProviderConfig {
    #[serde(default = "local_name")]
    pub name: String,
}

fn local_name() -> String {
    "local".into()
}

impl Default for LocalProviderConfig {
    /// The in-process provider `local`, added when `[[providers]]` names none.
    fn default() -> Self {
        Self { name: local_name() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Ordered fallback chain for requests that name no model; empty means `["local"]`.
    pub default: Vec<String>,
    /// Model alias -> ordered chain of targets (`provider` or `provider/model`).
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Extra attempts on the same target after a transient failure, before moving on.
    pub max_retries: u32,
    /// Base of the exponential backoff between retries (full jitter).
    pub retry_backoff_ms: u64,
    pub circuit_breaker: CircuitBreakerConfig,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            default: Vec::new(),
            aliases: BTreeMap::new(),
            max_retries: 1,
            retry_backoff_ms: 100,
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a provider's circuit.
    pub failure_threshold: u32,
    /// Time an open circuit waits before letting one probe request through.
    pub cooldown_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cooldown_ms: 30_000 }
    }
}

/// A route target as written in config: `provider` or `provider/model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub provider: String,
    pub model: Option<String>,
}

impl TargetSpec {
    pub fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some((provider, model)) if !model.is_empty() => TargetSpec { provider: provider.to_owned(), model: Some(model.to_owned()) },
            _ => TargetSpec { provider: s.trim_end_matches('/').to_owned(), model: None },
        }
    }
}

/// A reference to a secret: `env::NAME` or `file::PATH` (a systemd `LoadCredential` file works).
/// Raw keys are refused so that config files and their backups never hold secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Credential {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

impl TryFrom<String> for Credential {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env::") {
            if name.is_empty() {
                return Err("`env::` needs a variable name, e.g. `env::OPENAI_API_KEY`".into());
            }
            Ok(Credential::Env(name.to_owned()))
        } else if let Some(path) = s.strip_prefix("file::") {
            if path.is_empty() {
                return Err("`file::` needs a path, e.g. `file::/run/credentials/uag.service/openai`".into());
            }
            Ok(Credential::File(PathBuf::from(path)))
        } else {
            Err("expected `env::VARIABLE` or `file::PATH`; raw keys are not accepted in config \
                 (put the key in an environment variable or a credentials file)"
                .into())
        }
    }
}

impl From<Credential> for String {
    fn from(c: Credential) -> String {
        match c {
            Credential::Env(name) => format!("env::{name}"),
            Credential::File(path) => format!("file::{}", path.display()),
        }
    }
}

impl Credential {
    /// Reads the secret. The error says where it looked, never what it found.
    pub fn resolve(&self) -> Result<SecretString, String> {
        let value = match self {
            Credential::Env(name) => std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?,
            Credential::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read credential file {}: {e}", path.display()))?
            }
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(format!("{} is empty", String::from(self.clone())));
        }
        Ok(SecretString(value))
    }
}

/// A secret that never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
