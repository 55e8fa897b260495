//! Errors of the model runtimes, by category. The gateway maps them to HTTP in one place
//! (`gateway/src/error.rs`); messages here may reach clients, so they name the model or the
//! input problem, never file-system internals beyond the model directory.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model's files are not installed; the message carries the command that installs them.
    #[error("model `{model}` is not installed; install it with `{install_hint}`")]
    NotInstalled { model: String, install_hint: String },
    /// Files are there but do not load (corrupt, wrong format, incompatible runtime).
    #[error("model file {path} could not be loaded: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The caller's input cannot be processed (empty audio, empty text, unknown voice ...).
    #[error("{0}")]
    InvalidInput(String),
    /// Audio in a container or codec we do not decode.
    #[error("unsupported audio: {0}")]
    UnsupportedAudio(String),
    /// The runtime's queue is full; try again after the given number of seconds.
    #[error("the {runtime} runtime is busy; retry in {retry_after_s} s")]
    Busy { runtime: &'static str, retry_after_s: u64 },
    /// The runtime's worker is gone (panicked or shut down).
    #[error("the {0} runtime is not running")]
    Unavailable(&'static str),
    /// Inference itself failed (a runtime error, not the caller's fault).
    #[error("inference failed: {0}")]
    Inference(String),
    /// A model file's checksum does not match the manifest.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },
    /// Fetching, unpacking or converting model files failed.
    #[error("{0}")]
    Fetch(String),
    /// The manifest itself is malformed (a bug in the shipped manifest or a user override).
    #[error("model manifest: {0}")]
    Manifest(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }

    pub fn load(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        ModelError::Load { path: path.into(), reason: reason.to_string() }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
