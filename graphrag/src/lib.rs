//! uag-graphrag: the in-process GraphRAG engine of uag.
//!
//! It will hold the knowledge graph (petgraph in memory, sled on disk), tantivy retrieval,
//! graph expansion and ranking, answers with citations, and the voice pipeline. It exposes
//! plain Rust types only: no HTTP, WebSocket or JSON wire formats (those belong to
//! `uag-gateway`). It builds on `uag-models` for local model runtimes.
//!
//! Today the engine is not built yet; [`ENGINE_STATUS`] is what the gateway's `local`
//! provider tells clients.

/// Why the local engine cannot answer in this build, and what to do instead.
pub const ENGINE_STATUS: &str = "this build of uag has no GraphRAG engine yet; \
     route requests to a cloud provider (see [routes] in uag.toml)";

/// Keeps the dependency direction models <- graphrag explicit until the engine uses models.
pub use uag_models as models;
