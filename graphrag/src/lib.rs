//! uag-graphrag: the in-process GraphRAG engine of uag.
//!
//! It builds a knowledge graph from the owner's documents **without an LLM** (seconds on a
//! Raspberry Pi), retrieves with BM25, graph expansion and (when an embedding model is
//! installed) dense vectors, fused, and answers with numbered
//! citations. Plain Rust types only: no HTTP, WebSocket or JSON wire formats (those belong to
//! `uag-gateway`).
//!
//! - [`parse`]: text, Markdown, HTML into sections; [`chunk`]: structure-aware chunks
//! - [`extract`]: entities, aliases, co-occurrences and typed relations, per document
//! - [`store`]: sled, the source of truth, atomic per document
//! - [`dense`]: chunk embeddings (from a [`dense::TextEmbedder`]) and cosine search
//! - [`index`]: tantivy BM25 over chunks (on disk) and entity names (in memory)
//! - [`kg`]: the petgraph knowledge graph, entity linking, personalized PageRank, Louvain
//! - [`engine`]: ingest, delete, retrieve (with progress stages), ask
//! - [`answer`]: extractive synthesis with citations; [`eval`]: retrieval metrics;
//!   [`export`]: DOT and GraphML

pub mod answer;
pub mod chunk;
pub mod dense;
pub mod engine;
pub mod error;
pub mod eval;
pub mod export;
pub mod extract;
pub mod index;
pub mod kg;
pub mod parse;
pub mod store;
pub mod text;
pub mod verify;

pub use engine::{Engine, IngestOutcome, NewDocument, Progress, QueryOptions, RetrievalMode, Stats};
pub use error::EngineError;
