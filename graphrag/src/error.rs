//! Engine errors, by category. The gateway maps them to HTTP; the CLI prints them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another process (a running `uag serve`, or another CLI command) holds the store.
    #[error(
        "the knowledge base at {} is in use by another uag process; stop `uag serve` first, \
         or send documents to the running server (POST /v1/documents)",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("unsupported file type {found} for `{name}`; supported: {}", crate::parse::SUPPORTED_TYPES)]
    UnsupportedType { name: String, found: String },
    #[error("cannot ingest `{name}`: {reason}")]
    InvalidDocument { name: String, reason: String },
    #[error("no document with id `{0}`")]
    NotFound(String),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("search index error: {0}")]
    Index(String),
    #[error("embedding failed: {0}")]
    Embedding(String),
    #[error("corrupt record `{key}`: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<sled::Error> for EngineError {
    fn from(e: sled::Error) -> Self {
        EngineError::Storage(e.to_string())
    }
}

impl From<tantivy::TantivyError> for EngineError {
    fn from(e: tantivy::TantivyError) -> Self {
        EngineError::Index(e.to_string())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
