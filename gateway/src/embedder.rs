//! The knowledge base's embedder in the server: the model runtime's embedding worker. MiniLM
//! runs on that worker's own thread (never a tokio worker), and one loaded copy serves both
//! dense retrieval and `/v1/embeddings`.

use std::sync::Arc;

use uag_graphrag::Engine;
use uag_graphrag::dense::TextEmbedder;
use uag_models::manifest::{ModelEntry, ModelKind};
use uag_models::runtime::ModelRuntimes;

pub struct RuntimeEmbedder {
    runtimes: Arc<ModelRuntimes>,
    entry: ModelEntry,
}

impl TextEmbedder for RuntimeEmbedder {
    fn model(&self) -> &str {
        &self.entry.id
    }

    /// Called by the engine on the blocking pool (retrieval, ingest), where waiting is allowed.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let texts = texts.iter().map(|t| (*t).to_owned()).collect();
        self.runtimes.embed_blocking(&self.entry, texts).map(|e| e.vectors).map_err(|e| e.to_string())
    }
}

/// What [`attach`] did, for a CLI to say (the server logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenseRetrieval {
    /// `[graphrag] dense = false`.
    Disabled,
    /// No embedding model file in this models directory.
    NoModel { models_dir: std::path::PathBuf },
    /// On (the model and the number of stored vectors loaded are logged).
    On,
    /// The stored vectors could not be read.
    Unreadable,
}

/// Turns dense retrieval on when `[graphrag] dense` is set and an embedding model is
/// installed. Loads the stored vectors only: the chunks still
/// missing one are embedded in the background ([`crate::http::prepare_knowledge_base`]).
pub fn attach(engine: &Engine, runtimes: &Arc<ModelRuntimes>, enabled: bool) -> DenseRetrieval {
    if !enabled {
        return DenseRetrieval::Disabled;
    }
    let entry = match runtimes.resolve(ModelKind::Embed, None) {
        Ok(entry) if entry.main_path(runtimes.models_dir()).is_file() => entry,
        _ => {
            // The directory is named: `[models] dir` defaults to `<data_dir>/models`, so a data
            // directory moved elsewhere silently lost its models before.
            tracing::info!(
                models_dir = %runtimes.models_dir().display(),
                "no embedding model installed: passages are ranked by BM25 and the graph (`uag models fetch all-minilm-l6-v2` adds meaning)"
            );
            return DenseRetrieval::NoModel { models_dir: runtimes.models_dir().to_path_buf() };
        }
    };
    let id = entry.id.clone();
    match engine.set_embedder(Arc::new(RuntimeEmbedder { runtimes: Arc::clone(runtimes), entry })) {
        Ok(loaded) => {
            tracing::info!(model = %id, vectors = loaded, "dense retrieval on");
            DenseRetrieval::On
        }
        Err(e) => {
            tracing::warn!(error = %e, "stored chunk vectors unreadable; dense retrieval off");
            DenseRetrieval::Unreadable
        }
    }
}
