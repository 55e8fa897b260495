//! The provider registry: typed providers built once from `[[providers]]` at start-up, each
//! with its circuit breaker and attempt timeout. Nothing is looked up by string per request
//! except the provider name a client sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::circuit::CircuitBreaker;
use crate::config::{CircuitBreakerConfig, GraphRagConfig, ModelsConfig, ProviderConfig, ProviderKind};
use crate::provider::anthropic::AnthropicProvider;
use crate::provider::local::LocalProvider;
use crate::provider::ollama::OllamaProvider;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{Provider, upstream};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("providers[{index}] (provider \"{name}\"): {message}")]
    Provider { index: usize, name: String, message: String },
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
}

/// The parts of the configuration a registry is built from (`uag-gateway`'s
/// `Config::registry_config` lends them from `uag.toml`).
#[derive(Debug, Clone, Copy)]
pub struct RegistryConfig<'a> {
    pub providers: &'a [ProviderConfig],
    pub circuit_breaker: &'a CircuitBreakerConfig,
    pub graphrag: &'a GraphRagConfig,
    pub models: &'a ModelsConfig,
    /// Time one attempt of a `local` provider may take (the server's request timeout).
    pub local_timeout: Duration,
}

#[derive(Debug)]
pub struct ProviderEntry {
    pub provider: Arc<dyn Provider>,
    pub breaker: Arc<CircuitBreaker>,
    /// Time one attempt may take.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Registry {
    entries: Vec<ProviderEntry>,
    by_name: HashMap<String, usize>,
}

impl Registry {
    /// Builds every provider, resolving credentials. `config` has been validated, so an error
    /// here is an environment change between validation and start-up (a credential file gone).
    pub fn from_config(
        config: RegistryConfig<'_>,
        engine: Option<Arc<uag_graphrag::Engine>>,
        models: Option<Arc<uag_models::runtime::ModelRuntimes>>,
    ) -> Result<Self, RegistryError> {
        // Built with the first remote provider: it loads the system's CA certificates, which a
        // gateway with only the local provider never needs (memory and start-up on a Pi).
        let mut shared_client: Option<reqwest::Client> = None;
        let breaker = config.circuit_breaker;
        let cooldown = Duration::from_millis(breaker.cooldown_ms);
        let mut entries = Vec::with_capacity(config.providers.len());
        for (index, pc) in config.providers.iter().enumerate() {
            let fail = |message: String| RegistryError::Provider { index, name: pc.name().to_owned(), message };
            let (provider, timeout): (Arc<dyn Provider>, Duration) = match pc {
                ProviderConfig::Local(c) => (
                    Arc::new(LocalProvider::new(&c.name, engine.clone(), models.clone(), config.graphrag, config.models)),
                    config.local_timeout,
                ),
                ProviderConfig::OpenAi(c)
                | ProviderConfig::Anthropic(c)
                | ProviderConfig::Ollama(c)
                | ProviderConfig::OpenAiCompatible(c) => {
                    let kind = pc.kind();
                    let base = c.effective_base_url(kind).ok_or_else(|| fail("base_url is required".into()))?;
                    let client = match &shared_client {
                        Some(client) => client.clone(),
                        None => {
                            let client = upstream::http_client().map_err(|e| RegistryError::Client(e.to_string()))?;
                            shared_client.insert(client).clone()
                        }
                    };
                    let key = c.api_key.as_ref().map(|k| k.resolve()).transpose().map_err(|m| fail(format!("api_key: {m}")))?;
                    let provider: Arc<dyn Provider> = match kind {
                        ProviderKind::Anthropic => {
                            let key = key.ok_or_else(|| fail("api_key is required".into()))?;
                            Arc::new(AnthropicProvider::new(c, base, key, client))
                        }
                        ProviderKind::Ollama => Arc::new(OllamaProvider::new(c, base, key, client)),
                        _ => Arc::new(OpenAiProvider::new(kind, c, base, key, client)),
                    };
                    (provider, c.timeout())
                }
            };
            entries.push(ProviderEntry { provider, breaker: CircuitBreaker::new(breaker.failure_threshold, cooldown), timeout });
        }
        Ok(Self::from_entries(entries))
    }

    /// A registry over ready-made providers (tests plug in their own).
    pub fn from_entries(entries: Vec<ProviderEntry>) -> Self {
        let by_name = entries.iter().enumerate().map(|(i, e)| (e.provider.name().to_owned(), i)).collect();
        Self { entries, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&ProviderEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[ProviderEntry] {
        &self.entries
    }
}
