//! uag-models: local model runtimes of uag and the manifest of their files.
//!
//! It will hold whisper-rs (ASR), candle (LLM and embeddings) and ort (Piper TTS), each on
//! its own worker threads, never on tokio's, plus the model manifest with checksums. It is
//! the bottom of the dependency chain (models <- graphrag <- gateway <- uag) and knows no
//! wire formats.

/// Where model files live under the data directory when `[models] dir` is not set.
pub const DEFAULT_MODELS_SUBDIR: &str = "models";
