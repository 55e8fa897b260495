//! Typed configuration: `uag.toml`, `UAG__SECTION__KEY` environment overrides, embedded defaults.
//!
//! Loading goes file -> `toml::Value` -> environment overrides -> typed structs (every struct
//! `deny_unknown_fields`) -> [`Config::validate`]. Errors name the file, the key path and what
//! was expected. Credentials stay references (`env::NAME`, `file::PATH`) in this struct; their
//! values are read by [`Credential::resolve`] into a [`SecretString`] when the registry is built.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

// The sections the inference path reads are defined in uag-core; `uag.toml` composes them here.
pub use uag_core::config::*;

/// Environment prefix for overrides: `UAG__SERVER__LISTEN=0.0.0.0:8080`.
pub const ENV_PREFIX: &str = "UAG__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("{origin}: `{key}`: {message}")]
    Invalid { origin: String, key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// Where the loaded configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    EmbeddedDefaults,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(p) => write!(f, "{}", p.display()),
            ConfigOrigin::EmbeddedDefaults => f.write_str("embedded defaults"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub models: ModelsConfig,
    pub log: LogConfig,
    pub graphrag: GraphRagConfig,
    pub providers: Vec<ProviderConfig>,
    pub routes: RoutesConfig,
    /// Who may call the gateway; absent: anonymous everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::AuthConfig>,
    /// Request and token budgets; absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<crate::ratelimit::RateLimitConfig>,
    /// Response cache; absent: nothing is cached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::cache::CacheConfig>,
    /// Authorization with Rego policies; absent: every caller may use everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyConfig>,
    /// The voice WebSocket and the kiosk page.
    pub voice: uag_voice::VoiceConfig,
    /// The Wyoming server for Home Assistant; absent: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wyoming: Option<crate::wyoming::WyomingConfig>,
    /// Where device health (temperatures, throttling, pressure) is read, and `uag doctor`'s limits.
    pub device: crate::device::DeviceConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// How long in-flight HTTP and WebSocket work may take to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Deadline for one inference request, fallbacks and retries included.
    pub request_timeout_ms: u64,
    /// Largest accepted WebSocket message.
    pub ws_max_message_bytes: usize,
    /// Interval of server pings on idle WebSockets; a peer silent for 3 intervals is dropped.
    pub ws_ping_interval_ms: u64,
    /// Requests one WebSocket connection may have in flight at once.
    pub ws_max_in_flight: usize,
    /// A client must send a request's headers within this time (slowloris protection); idle
    /// keep-alive connections close after it too.
    pub header_read_timeout_ms: u64,
    /// Reverse proxies (addresses or blocks, `172.16.0.0/12`) whose `X-Forwarded-For` names the
    /// client, for rate limits and cache scopes; empty: the connecting address is the client.
    pub trusted_proxies: Vec<crate::http::client_address::Cidr>,
    /// HTTP connections open at once (HTTP/1 and HTTP/2, until they close or upgrade to a
    /// WebSocket); one more is closed at accept.
    pub max_connections: usize,
    /// WebSocket messages a client may send per second (voice audio is 50 frames/s); faster
    /// clients are closed with 1008.
    pub ws_max_messages_per_second: u32,
    /// Origins whose pages may call the API from a browser (`http://kiosk.lan:8080`);
    /// empty: same origin only (the kiosk page at `/` needs nothing here).
    pub cors_allowed_origins: Vec<String>,
    /// HTTPS (and optional client certificates); absent: plain HTTP (e.g. behind NGINX).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            shutdown_grace_ms: 10_000,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 120_000,
            ws_max_message_bytes: 1024 * 1024,
            ws_ping_interval_ms: 20_000,
            ws_max_in_flight: 8,
            header_read_timeout_ms: 10_000,
            max_connections: 1024,
            trusted_proxies: Vec::new(),
            ws_max_messages_per_second: 200,
            cors_allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

impl ServerConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Knowledge graph, indexes and caches live here.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: default_state_dir() }
    }
}

/// systemd's `StateDirectory`, else the XDG state dir, else `./uag-data`.
fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several colon-separated directories; the first is ours.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
        return PathBuf::from(first);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("uag");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/uag");
    }
    PathBuf::from("uag-data")
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `uag_gateway=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

impl Config {
    /// What the provider registry is built from.
    pub fn registry_config(&self) -> uag_core::registry::RegistryConfig<'_> {
        uag_core::registry::RegistryConfig {
            providers: &self.providers,
            circuit_breaker: &self.routes.circuit_breaker,
            graphrag: &self.graphrag,
            models: &self.models,
            local_timeout: self.server.request_timeout(),
        }
    }

    /// Loads `path`, or the embedded defaults when `None`, then applies `UAG__*` overrides from
    /// the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigOrigin), ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with the overrides given explicitly (tests use this).
    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> Result<(Config, ConfigOrigin), ConfigError> {
        let (text, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
                (text, ConfigOrigin::File(p.to_path_buf()))
            }
            None => (String::new(), ConfigOrigin::EmbeddedDefaults),
        };
        let config = Self::from_toml_str(&text, &origin, env)?;
        Ok((config, origin))
    }

    /// Parses, applies overrides and validates `text`.
    pub fn from_toml_str(text: &str, origin: &ConfigOrigin, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let origin_name = origin.to_string();
        let mut value: toml::Value = toml::from_str::<toml::Table>(text)
            .map(toml::Value::Table)
            .map_err(|e| ConfigError::Syntax { path: origin_name.clone(), message: e.to_string().trim().to_owned() })?;
        for (var, raw) in env {
            apply_env_override(&mut value, var, raw)?;
        }
        let snapshot = value.clone();
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = describe_key(&snapshot, &key);
            // toml appends its own "in `a.b`" path, without array indexes; ours is better.
            let message = e.into_inner().to_string();
            let message = message.split("\nin `").next().unwrap_or_default().trim().to_owned();
            ConfigError::Invalid { origin: origin_name.clone(), key, message }
        })?;
        config.apply_implicit_defaults();
        config.validate().map_err(|(key, message)| ConfigError::Invalid { origin: origin_name, key, message })?;
        Ok(config)
    }

    /// The local engine is part of the binary, so it is always a provider; the default chain
    /// is `["local"]` unless configured.
    fn apply_implicit_defaults(&mut self) {
        if !self.providers.iter().any(|p| p.kind() == ProviderKind::Local) {
            self.providers.push(ProviderConfig::Local(LocalProviderConfig::default()));
        }
        if self.routes.default.is_empty() {
            let local = self.providers.iter().find(|p| p.kind() == ProviderKind::Local).map(|p| p.name().to_owned());
            self.routes.default = local.into_iter().collect();
        }
    }

    /// The knowledge base: store, index.
    pub fn graphrag_dir(&self) -> PathBuf {
        self.storage.data_dir.join("graphrag")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models.dir.clone().unwrap_or_else(|| self.storage.data_dir.join("models"))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server.listen.parse().map_err(|_| format!("`{}` is not an address:port", self.server.listen))
    }

    fn validate_models(&self) -> Result<(), (String, String)> {
        let m = &self.models;
        let manifest = uag_models::manifest::Manifest::embedded().map_err(|e| ("models".to_owned(), e.to_string()))?;
        for (key, ids) in [("prefer", &m.prefer), ("preload", &m.preload)] {
            for (i, id) in ids.iter().enumerate() {
                if key == "preload" && id == "defaults" {
                    continue;
                }
                if manifest.get(id).is_none() {
                    let known: Vec<&str> = manifest.models.iter().map(|e| e.id.as_str()).collect();
                    return Err((format!("models.{key}[{i}]"), format!("unknown model `{id}`; known: {}", known.join(", "))));
                }
            }
        }
        let checks: [(&str, usize, usize, usize); 6] = [
            ("queue_depth", m.queue_depth, 1, 1024),
            ("llm_context", m.llm_context, 256, 131_072),
            ("llm_max_tokens", m.llm_max_tokens, 1, 8192),
            ("rag_evidence_sentences", m.rag_evidence_sentences, 1, 20),
            ("rag_evidence_words", m.rag_evidence_words, 20, 1000),
            ("max_speech_chars", m.max_speech_chars, 1, 100_000),
        ];
        for (key, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err((format!("models.{key}"), format!("must be between {min} and {max}")));
            }
        }
        if m.max_audio_bytes < 1024 {
            return Err(("models.max_audio_bytes".into(), "must be at least 1024".into()));
        }
        Ok(())
    }

    /// The runtime settings of the local models.
    pub fn model_runtime_config(&self) -> uag_models::runtime::RuntimeConfig {
        let m = &self.models;
        let mut rc = uag_models::runtime::RuntimeConfig::new(self.models_dir());
        rc.queue_depth = m.queue_depth;
        if m.asr_threads > 0 {
            rc.asr_threads = m.asr_threads;
        }
        if m.tts_threads > 0 {
            rc.tts_threads = m.tts_threads;
        }
        rc.llm_context = m.llm_context;
        rc.preload = m.preload.clone();
        rc.prefer = m.prefer.clone();
        rc
    }

    /// Checks what types cannot; the error is (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.listen_addr().map_err(|m| ("server.listen".to_owned(), m))?;
        if self.server.max_body_bytes < 1024 {
            return Err(("server.max_body_bytes".into(), "must be at least 1024".into()));
        }
        if self.server.ws_max_in_flight == 0 {
            return Err(("server.ws_max_in_flight".into(), "must be at least 1".into()));
        }
        if self.graphrag.top_k == 0 || self.graphrag.top_k > 50 {
            return Err(("graphrag.top_k".into(), "must be between 1 and 50".into()));
        }
        self.validate_models()?;
        self.voice.validate()?;
        if let Some(wyoming) = &self.wyoming {
            wyoming.validate()?;
        }
        if self.server.header_read_timeout_ms < 100 {
            return Err(("server.header_read_timeout_ms".into(), "must be at least 100".into()));
        }
        if self.server.max_connections == 0 {
            return Err(("server.max_connections".into(), "must be at least 1".into()));
        }
        if self.server.ws_max_messages_per_second == 0 {
            return Err(("server.ws_max_messages_per_second".into(), "must be at least 1".into()));
        }
        for (i, origin) in self.server.cors_allowed_origins.iter().enumerate() {
            let ok = url::Url::parse(origin)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && !origin.ends_with('/'));
            if !ok {
                return Err((
                    format!("server.cors_allowed_origins[{i}]"),
                    format!("`{origin}` must be an origin: scheme, host and optional port, no path (e.g. \"http://kiosk.lan:8080\")"),
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            tls.validate()?;
        }
        if self.log.level.trim().is_empty() {
            return Err(("log.level".into(), "must not be empty (e.g. \"info\")".into()));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = |field: &str| format!("providers[{i}].{field} (provider \"{}\")", p.name());
            let name = p.name();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
                return Err((at("name"), "must be non-empty and use only letters, digits, `-`, `_`, `.`".into()));
            }
            if let Some(first) = names.insert(name, i) {
                return Err((at("name"), format!("duplicate provider name; providers[{first}] already uses it")));
            }
            if let Some(remote) = p.remote() {
                let kind = p.kind();
                let Some(base) = remote.effective_base_url(kind) else {
                    return Err((at("base_url"), format!("required for type = \"{}\"", kind.as_str())));
                };
                match url::Url::parse(&base) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(_) => return Err((at("base_url"), format!("`{base}` must be an http:// or https:// URL with a host"))),
                    Err(e) => return Err((at("base_url"), format!("`{base}` is not a valid URL: {e}"))),
                }
                match &remote.api_key {
                    Some(cred) => {
                        cred.resolve().map_err(|m| (at("api_key"), m))?;
                    }
                    None if kind.requires_api_key() => {
                        return Err((
                            at("api_key"),
                            format!("required for type = \"{}\" (e.g. \"env::{}_API_KEY\")", kind.as_str(), kind.as_str().to_uppercase()),
                        ));
                    }
                    None => {}
                }
                if remote.timeout_ms == 0 {
                    return Err((at("timeout_ms"), "must be greater than 0".into()));
                }
                if remote.anthropic_version.is_some() && kind != ProviderKind::Anthropic {
                    return Err((at("anthropic_version"), "only applies to type = \"anthropic\"".into()));
                }
            }
        }
        let check_chain = |key: String, chain: &[String]| -> Result<(), (String, String)> {
            if chain.is_empty() {
                return Err((key, "a route needs at least one target".into()));
            }
            for (j, target) in chain.iter().enumerate() {
                let spec = TargetSpec::parse(target);
                if !names.contains_key(spec.provider.as_str()) {
                    let known: Vec<&str> = names.keys().copied().collect();
                    return Err((format!("{key}[{j}]"), format!("unknown provider `{}` (known: {})", spec.provider, known.join(", "))));
                }
            }
            Ok(())
        };
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        if let Some(limits) = &self.rate_limits {
            limits.validate(names.keys().copied())?;
        }
        if let Some(cache) = &self.cache {
            cache.validate()?;
        }
        if let Some(policy) = &self.policy {
            policy.validate()?;
        }
        check_chain("routes.default".into(), &self.routes.default)?;
        for (alias, chain) in &self.routes.aliases {
            if alias.is_empty() {
                return Err(("routes.aliases".into(), "an alias name must not be empty".into()));
            }
            check_chain(format!("routes.aliases.{alias}"), chain)?;
        }
        Ok(())
    }

    /// The resolved config as TOML. Credentials print as their references (`env::NAME`), so
    /// no secret value can appear.
    pub fn to_redacted_toml(&self) -> String {
        let mut text = toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// Adds the provider's name to a `providers[N]...` key path, so errors name the entry.
fn describe_key(value: &toml::Value, path: &str) -> String {
    let Some(rest) = path.strip_prefix("providers[") else { return path.to_owned() };
    let Some((index, _)) = rest.split_once(']') else { return path.to_owned() };
    let name = index.parse::<usize>().ok().and_then(|i| value.get("providers")?.get(i)?.get("name")?.as_str().map(str::to_owned));
    match name {
        Some(name) => format!("{path} (provider \"{name}\")"),
        None => path.to_owned(),
    }
}

/// `UAG__SERVER__LISTEN=0.0.0.0:80` sets `server.listen`; `UAG__PROVIDERS__0__TIMEOUT_MS=5`
/// indexes arrays. The value is read as a TOML value when it parses as one (numbers, booleans,
/// arrays), else as a string.
fn apply_env_override(root: &mut toml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(path) = var.strip_prefix(ENV_PREFIX) else { return Ok(()) };
    let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::Env { var: var.into(), message: "empty key segment (use UAG__SECTION__KEY)".into() });
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut node = root;
    let (last, parents) = segments.split_last().ok_or_else(|| ConfigError::Env { var: var.into(), message: "no key".into() })?;
    for seg in parents {
        node = match node {
            toml::Value::Table(t) => t.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(a) => {
                let i: usize =
                    seg.parse().map_err(|_| ConfigError::Env { var: var.into(), message: format!("`{seg}` is not an array index") })?;
                a.get_mut(i)
                    .ok_or_else(|| ConfigError::Env { var: var.into(), message: format!("index {i} is past the end of the array") })?
            }
            _ => return Err(ConfigError::Env { var: var.into(), message: format!("`{seg}` is inside a value that is not a table") }),
        };
    }
    match node {
        toml::Value::Table(t) => {
            t.insert(last.clone(), parsed);
        }
        toml::Value::Array(a) => {
            let i: usize =
                last.parse().map_err(|_| ConfigError::Env { var: var.into(), message: format!("`{last}` is not an array index") })?;
            let slot = a
                .get_mut(i)
                .ok_or_else(|| ConfigError::Env { var: var.into(), message: format!("index {i} is past the end of the array") })?;
            *slot = parsed;
        }
        _ => return Err(ConfigError::Env { var: var.into(), message: "the key's parent is not a table".into() }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, &ConfigOrigin::File("uag.toml".into()), &[])
    }

    #[test]
    fn empty_file_gives_working_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.routes.default, vec!["local".to_owned()]);
        assert_eq!(c.providers.len(), 1);
        assert_eq!(c.models_dir(), c.storage.data_dir.join("models"));
    }

    #[test]
    fn unknown_key_names_the_path() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n").unwrap_err().to_string();
        assert!(err.contains("uag.toml"), "{err}");
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse("[server]\nshutdown_grace_ms = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("server.shutdown_grace_ms"), "{err}");
    }

    #[test]
    fn unknown_provider_type_names_the_entry() {
        let err = parse("[[providers]]\nname = \"x\"\ntype = \"gemini\"\n").unwrap_err().to_string();
        assert!(err.contains("providers[0]"), "{err}");
        assert!(err.contains("provider \"x\""), "{err}");
        assert!(err.contains("gemini"), "{err}");
    }

    #[test]
    fn missing_credential_and_bad_url_stop_loading() {
        let err =
            parse("[[providers]]\nname = \"oa\"\ntype = \"openai\"\napi_key = \"env::UAG_TEST_SURELY_UNSET\"\n").unwrap_err().to_string();
        assert!(err.contains("providers[0].api_key (provider \"oa\")"), "{err}");
        assert!(err.contains("UAG_TEST_SURELY_UNSET"), "{err}");
        let err =
            parse("[[providers]]\nname = \"vllm\"\ntype = \"openai_compatible\"\nbase_url = \"not a url\"\n").unwrap_err().to_string();
        assert!(err.contains("base_url"), "{err}");
        let err = parse("[[providers]]\nname = \"oa\"\ntype = \"openai\"\napi_key = \"sk-raw\"\n").unwrap_err().to_string();
        assert!(err.contains("env::VARIABLE"), "{err}");
    }

    #[test]
    fn routes_must_name_known_providers() {
        let err = parse("[routes]\ndefault = [\"local\", \"nope/model\"]\n").unwrap_err().to_string();
        assert!(err.contains("routes.default[1]"), "{err}");
    }

    #[test]
    fn env_overrides_reach_nested_keys_and_arrays() {
        let text = "[[providers]]\nname = \"ol\"\ntype = \"ollama\"\n";
        let env = vec![
            ("UAG__SERVER__LISTEN".to_owned(), "0.0.0.0:9000".to_owned()),
            ("UAG__PROVIDERS__0__TIMEOUT_MS".to_owned(), "1234".to_owned()),
            ("UAG__ROUTES__DEFAULT".to_owned(), "[\"ol\", \"local\"]".to_owned()),
        ];
        let c = Config::from_toml_str(text, &ConfigOrigin::EmbeddedDefaults, &env).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.providers[0].remote().unwrap().timeout_ms, 1234);
        assert_eq!(c.routes.default, vec!["ol".to_owned(), "local".to_owned()]);
    }

    #[test]
    fn secrets_never_print() {
        let s = SecretString::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let c = parse("[[providers]]\nname = \"ol\"\ntype = \"ollama\"\napi_key = \"env::PATH\"\n").unwrap();
        let shown = c.to_redacted_toml();
        assert!(shown.contains("env::PATH"), "{shown}");
        assert!(!shown.contains(&std::env::var("PATH").unwrap()), "{shown}");
    }

    #[test]
    fn the_cache_section_parses_from_toml_and_names_bad_keys() {
        use crate::cache::CacheScope;
        let parse = |text: &str| Config::from_toml_str(text, &ConfigOrigin::File("uag.toml".into()), &[]);
        assert!(parse("").unwrap().cache.is_none(), "no [cache], no cache");
        let c = parse("[cache]\nscope = \"tenant\"\n[cache.semantic]\nenabled = true\nthreshold = 0.8\n").unwrap().cache.unwrap();
        assert!(c.enabled);
        assert_eq!(c.scope, CacheScope::Tenant);
        assert!(c.semantic.enabled && c.semantic.single_turn_only);
        let err = parse("[cache]\nttl = 5\n").unwrap_err().to_string();
        assert!(err.contains("ttl"), "{err}");
        let err = parse("[cache]\nbackend = \"redis\"\n").unwrap_err().to_string();
        assert!(err.contains("cache.redis_url"), "{err}");
        let err = parse("[cache]\nscope = \"team\"\n").unwrap_err().to_string();
        assert!(err.contains("cache.scope"), "{err}");
    }
}
