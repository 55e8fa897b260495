//! The `local` provider: the in-process GraphRAG engine.
//!
//! The engine (`uag-graphrag`) does not answer yet in this build, so every call fails with a
//! clear `not_installed` error (HTTP 503) instead of pretending; a route chain such as
//! `["local", "openai/gpt-4o-mini"]` moves on to the next target.

use async_trait::async_trait;

use super::{Capabilities, EventStream, Health, HealthStatus, Provider, ProviderCall};
use crate::config::ProviderKind;
use crate::error::ProviderError;
use crate::types::InferenceResponse;

/// The model name the local engine answers to.
pub const LOCAL_MODEL: &str = "graphrag";

#[derive(Debug)]
pub struct LocalProvider {
    name: String,
}

impl LocalProvider {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    fn not_installed() -> ProviderError {
        ProviderError::NotInstalled { what: "the local GraphRAG engine".into(), hint: uag_graphrag::ENGINE_STATUS.into() }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, citations: true, model_discovery: false }
    }

    fn default_model(&self) -> Option<String> {
        Some(LOCAL_MODEL.into())
    }

    async fn infer(&self, _call: ProviderCall) -> Result<InferenceResponse, ProviderError> {
        Err(Self::not_installed())
    }

    async fn stream_infer(&self, _call: ProviderCall) -> Result<EventStream, ProviderError> {
        Err(Self::not_installed())
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec![LOCAL_MODEL.into()])
    }

    async fn health(&self) -> Health {
        Health { status: HealthStatus::NotInstalled, detail: Some(uag_graphrag::ENGINE_STATUS.into()) }
    }
}
