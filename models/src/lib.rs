//! uag-models: local model runtimes of uag and the manifest of their files.
//!
//! - [`manifest`] / [`fetch`]: which models exist, where their files come from (a registry
//!   package or an upstream URL), their sha256, and installing them into the model directory;
//!   [`bundle`]: installed models exported into one verified file and imported on a device
//!   that reaches no registry.
//! - [`whisper_convert`]: CTranslate2 Whisper checkpoints -> ggml files for whisper.cpp;
//!   [`gguf_convert`]: GGUF Q4_1 -> Q8_0 (the format candle runs fast).
//! - [`audio`]: decoding (WAV, FLAC, MP3, OGG) and resampling to 16 kHz mono; WAV/PCM output.
//! - [`asr`] (whisper-rs), [`llm`] (candle, quantized GGUF), [`embed`] (candle BERT),
//!   [`tts`] (Piper voices on ONNX Runtime via ort, phonemes from [`espeak`]).
//! - [`runtime`]: each model kind on its own worker thread with a bounded queue, loaded lazily;
//!   async callers get answers through channels and never run inference on tokio's threads.
//!
//! It is the bottom of the dependency chain (models <- graphrag <- gateway <- uag) and knows no
//! wire formats.

pub mod asr;
pub mod audio;
pub mod bundle;
pub mod embed;
pub mod error;
pub mod espeak;
pub mod fetch;
pub mod gguf_convert;
pub mod license;
pub mod llm;
pub mod manifest;
pub mod runtime;
pub mod tts;
pub mod vad;
pub mod whisper_convert;

pub use error::{ModelError, Result};

/// Where model files live under the data directory when `[models] dir` is not set.
pub const DEFAULT_MODELS_SUBDIR: &str = "models";

/// Where the unit tests find real model files: `UAG_MODELS_DIR`, else the default model
/// directory of a user install (`$XDG_STATE_HOME/uag/models` or `~/.local/state/uag/models`), which `scripts/fetch-models.sh`
/// fills. A missing model fails the test with the command that installs it: these tests never
/// skip silently.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    pub(crate) fn models_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("UAG_MODELS_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        // The same default as the server's (`[storage] data_dir`): XDG state dir, else ~/.local/state.
        if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(state).join("uag/models");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".local/state/uag/models")
    }

    /// `<models dir>/<model id>/<file>`, asserting that it exists.
    pub(crate) fn model_file(model_id: &str, file: &str) -> PathBuf {
        let path = models_dir().join(model_id).join(file);
        assert!(path.is_file(), "{} is missing: run `scripts/fetch-models.sh {model_id}` (or set UAG_MODELS_DIR)", path.display());
        path
    }
}
