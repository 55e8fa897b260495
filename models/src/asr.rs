//! Speech recognition with whisper.cpp through whisper-rs, on ggml files converted by
//! [`crate::whisper_convert`]. Runs on the caller's thread: [`crate::runtime`] owns the thread.

use std::path::Path;

use crate::Result;

#[derive(Debug, Clone)]
pub struct AsrOptions {
    /// ISO 639-1 code; `None` detects the language (multilingual models only).
    pub language: Option<String>,
    /// whisper.cpp threads.
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_s: f32,
    pub end_s: f32,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    /// Detected or requested language (ISO 639-1), "en" for English-only models.
    pub language: String,
    pub duration_s: f32,
    pub segments: Vec<Segment>,
}

pub struct WhisperModel {
    _private: (),
}

impl WhisperModel {
    pub fn load(ggml_path: &Path) -> Result<Self> {
        Err(crate::ModelError::load(ggml_path, "not implemented yet"))
    }

    pub fn is_multilingual(&self) -> bool {
        false
    }

    /// `pcm` is mono f32 at 16 kHz.
    pub fn transcribe(&self, pcm: &[f32], options: &AsrOptions) -> Result<Transcript> {
        let _ = (pcm, options);
        Err(crate::ModelError::Inference("not implemented yet".into()))
    }
}
