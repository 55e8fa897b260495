//! OpenAI-compatible local model endpoints, so existing SDK code works against the appliance:
//!
//! - `POST /v1/audio/transcriptions` (multipart `file`; `response_format` json, text,
//!   verbose_json, srt, vtt; `language`): whisper on the ASR worker.
//! - `POST /v1/audio/speech` (`input`, `voice`, `response_format` wav or pcm, `speed`): Piper.
//! - `POST /v1/embeddings` (`input` string or list; `encoding_format` float or base64).
//!
//! Inference runs on the model workers; handlers only parse, wait and format. A full worker
//! queue answers 503 with Retry-After, a model that is not installed 503 with the command that
//! installs it.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use uag_models::asr::{AsrOptions, Transcript};
use uag_models::manifest::ModelKind;
use uag_models::runtime::ModelRuntimes;
use uag_models::tts::TtsOptions;

use super::AppState;
use super::extract::JsonBody;
use crate::config::Config;
use crate::error::ApiError;

pub fn routes(config: &Config) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(transcriptions).layer(DefaultBodyLimit::max(super::body_limit(config, Some("/v1/audio/transcriptions")))),
        )
        .route("/v1/audio/speech", post(speech))
        .route("/v1/embeddings", post(embeddings))
}

fn runtimes(state: &AppState) -> Result<Arc<ModelRuntimes>, ApiError> {
    state.models.clone().ok_or_else(|| ApiError::unavailable("models_disabled", "local models are not running in this gateway"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TranscriptFormat {
    Json,
    Text,
    VerboseJson,
    Srt,
    Vtt,
}

impl TranscriptFormat {
    fn parse(s: &str) -> Result<Self, ApiError> {
        Ok(match s {
            "json" => Self::Json,
            "text" => Self::Text,
            "verbose_json" => Self::VerboseJson,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            other => {
                return Err(ApiError::invalid_field(
                    "response_format",
                    format!("unsupported response_format `{other}`; use json, text, verbose_json, srt or vtt"),
                ));
            }
        })
    }
}

/// `POST /v1/audio/transcriptions`.
async fn transcriptions(
    State(state): State<AppState>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    // Not a form at all: the same JSON error shape as everything else, saying what to send.
    let mut multipart = multipart.map_err(|_| {
        ApiError::invalid_request(
            "multipart_required",
            "send the audio as multipart/form-data with a `file` field (and optionally `model`, `language`, `response_format`)",
        )
    })?;
    let models = runtimes(&state)?;
    let mut audio: Option<(Vec<u8>, Option<String>)> = None;
    let mut model = None;
    let mut language = None;
    let mut format = TranscriptFormat::Json;
    let limit = super::body_limit(&state.config, Some("/v1/audio/transcriptions"));
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        // A file over the limit is 413, as every other body over its limit.
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::payload_too_large(limit);
        }
        ApiError::invalid_request("invalid_multipart", format!("the multipart form could not be read: {}", e.body_text()))
    };
    while let Some(field) = multipart.next_field().await.map_err(bad_form)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                let extension =
                    field.file_name().and_then(|n| std::path::Path::new(n).extension()).map(|e| e.to_string_lossy().to_ascii_lowercase());
                let bytes = field.bytes().await.map_err(bad_form)?;
                audio = Some((bytes.to_vec(), extension));
            }
            "model" => model = Some(field.text().await.map_err(bad_form)?),
            "language" => {
                let code = field.text().await.map_err(bad_form)?.trim().to_ascii_lowercase();
                language = (!code.is_empty()).then_some(code);
            }
            "response_format" => format = TranscriptFormat::parse(field.text().await.map_err(bad_form)?.trim())?,
            // Accepted for compatibility; whisper.cpp decoding here is greedy and unprompted.
            "prompt" | "temperature" | "timestamp_granularities[]" | "timestamp_granularities" | "stream" => {
                let _ = field.bytes().await.map_err(bad_form)?;
            }
            other => {
                return Err(ApiError::invalid_field(other.to_owned(), format!("unknown form field `{other}`")));
            }
        }
    }
    let (bytes, extension) = audio.ok_or_else(|| ApiError::invalid_field("file", "the form has no `file` field with the audio"))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid_field("file", "the audio file is empty"));
    }
    let entry = models.resolve(ModelKind::Asr, model.as_deref())?;
    tracing::Span::current().record("provider", "local").record("model", entry.id.as_str());
    let started = std::time::Instant::now();
    let transcript = models.transcribe(&entry, bytes, extension, AsrOptions { language, threads: 0, fit_window: false }).await?;
    state.metrics.observe_asr(&entry.id, transcript.duration_s, started.elapsed());
    Ok(format_transcript(&transcript, format))
}

fn format_transcript(t: &Transcript, format: TranscriptFormat) -> Response {
    match format {
        TranscriptFormat::Json => axum::Json(json!({ "text": t.text })).into_response(),
        TranscriptFormat::Text => text_response(format!("{}\n", t.text), "text/plain; charset=utf-8"),
        TranscriptFormat::VerboseJson => {
            let segments: Vec<Value> = t
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| json!({ "id": i, "start": s.start_s, "end": s.end_s, "text": s.text }))
                .collect();
            axum::Json(json!({
                "task": "transcribe",
                "language": t.language,
                "duration": t.duration_s,
                "text": t.text,
                "segments": segments,
            }))
            .into_response()
        }
        TranscriptFormat::Srt => {
            let mut out = String::new();
            for (i, s) in t.segments.iter().enumerate() {
                let _ = write!(out, "{}\n{} --> {}\n{}\n\n", i + 1, timestamp(s.start_s, ','), timestamp(s.end_s, ','), s.text.trim());
            }
            text_response(out, "application/x-subrip; charset=utf-8")
        }
        TranscriptFormat::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in &t.segments {
                let _ = write!(out, "{} --> {}\n{}\n\n", timestamp(s.start_s, '.'), timestamp(s.end_s, '.'), s.text.trim());
            }
            text_response(out, "text/vtt; charset=utf-8")
        }
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn timestamp(seconds: f32, separator: char) -> String {
    let ms = (f64::from(seconds.max(0.0)) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{separator}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn text_response(body: String, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeechRequest {
    #[serde(default)]
    model: Option<String>,
    input: String,
    #[serde(default)]
    voice: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
    /// 0.25 to 4.0, as OpenAI's; Piper's length scale is its inverse.
    #[serde(default)]
    speed: Option<f32>,
    /// Accepted for compatibility (gpt-4o-mini-tts style prompts); Piper has no instructions.
    #[serde(default)]
    #[allow(dead_code)]
    instructions: Option<String>,
}

/// `POST /v1/audio/speech`.
async fn speech(State(state): State<AppState>, JsonBody(request): JsonBody<SpeechRequest>) -> Result<Response, ApiError> {
    let models = runtimes(&state)?;
    let input = request.input.trim();
    if input.is_empty() {
        return Err(ApiError::invalid_field("input", "`input` is empty: give the text to speak"));
    }
    let limit = state.config.models.max_speech_chars;
    if input.chars().count() > limit {
        return Err(ApiError::invalid_field("input", format!("`input` is longer than {limit} characters; split it")));
    }
    let pcm = match request.response_format.as_deref().unwrap_or("wav") {
        "wav" => false,
        "pcm" => true,
        other => {
            return Err(ApiError::invalid_field(
                "response_format",
                format!("unsupported response_format `{other}`; this gateway produces wav or pcm (16-bit mono)"),
            ));
        }
    };
    let mut options = TtsOptions::default();
    if let Some(speed) = request.speed {
        if !(0.25..=4.0).contains(&speed) {
            return Err(ApiError::invalid_field("speed", "`speed` must be between 0.25 and 4.0"));
        }
        options.length_scale = Some(1.0 / speed);
    }
    if let Some(model) = request.model.as_deref().filter(|m| !m.trim().is_empty()) {
        // The model names the TTS engine; the voice picks the speaker. Both must be known.
        models.resolve(ModelKind::Tts, Some(model)).or_else(|e| models.resolve_voice(Some(model)).map_err(|_| e))?;
    }
    let voice = models.resolve_voice(request.voice.as_deref())?;
    tracing::Span::current().record("provider", "local").record("model", voice.id.as_str());
    let speech = models.speak(&voice, input.to_owned(), options).await?;
    let rate = speech.sample_rate.to_string();
    let (body, content_type) = if pcm {
        (uag_models::audio::to_pcm16le(&speech.samples), "audio/pcm")
    } else {
        (uag_models::audio::encode_wav_pcm16(&speech.samples, speech.sample_rate), "audio/wav")
    };
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response();
    if let Ok(value) = HeaderValue::from_str(&rate) {
        // Raw PCM carries no header: clients need the rate to play it.
        response.headers_mut().insert("x-sample-rate", value);
    }
    if let Ok(value) = HeaderValue::from_str(&speech.voice) {
        response.headers_mut().insert("x-uag-voice", value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    input: EmbeddingInput,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Inputs per request: bounds the time one request holds the embeddings worker.
const MAX_EMBEDDING_INPUTS: usize = 256;

/// `POST /v1/embeddings`.
async fn embeddings(State(state): State<AppState>, JsonBody(request): JsonBody<EmbeddingsRequest>) -> Result<Response, ApiError> {
    let models = runtimes(&state)?;
    let texts = match request.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
    };
    if texts.is_empty() {
        return Err(ApiError::invalid_field("input", "`input` is an empty list"));
    }
    if texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid_field("input", format!("at most {MAX_EMBEDDING_INPUTS} inputs per request")));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid_field(format!("input[{i}]"), format!("input[{i}] is empty")));
    }
    let base64 = match request.encoding_format.as_deref().unwrap_or("float") {
        "float" => false,
        "base64" => true,
        other => {
            return Err(ApiError::invalid_field("encoding_format", format!("unsupported encoding_format `{other}`; use float or base64")));
        }
    };
    let entry = models.resolve(ModelKind::Embed, request.model.as_deref())?;
    tracing::Span::current().record("provider", "local").record("model", entry.id.as_str());
    let result = models.embed(&entry, texts).await?;
    let dims = result.vectors.first().map_or(0, Vec::len);
    if let Some(wanted) = request.dimensions
        && wanted != dims
    {
        return Err(ApiError::invalid_field("dimensions", format!("model `{}` produces {dims} dimensions, not {wanted}", entry.id)));
    }
    let data: Vec<Value> = result
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": { "prompt_tokens": result.tokens, "total_tokens": result.tokens },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtitle_timestamps() {
        assert_eq!(timestamp(0.0, ','), "00:00:00,000");
        assert_eq!(timestamp(3661.5, '.'), "01:01:01.500");
        assert_eq!(timestamp(-1.0, ','), "00:00:00,000");
    }

    #[test]
    fn srt_and_vtt_render_segments() {
        let t = Transcript {
            text: "Hello there. General Kenobi.".into(),
            language: "en".into(),
            duration_s: 3.0,
            segments: vec![
                uag_models::asr::Segment { start_s: 0.0, end_s: 1.2, text: " Hello there.".into() },
                uag_models::asr::Segment { start_s: 1.2, end_s: 3.0, text: " General Kenobi.".into() },
            ],
        };
        let srt = format_transcript(&t, TranscriptFormat::Srt);
        assert_eq!(srt.headers()[header::CONTENT_TYPE], "application/x-subrip; charset=utf-8");
        assert!(TranscriptFormat::parse("mp3").is_err());
        assert_eq!(TranscriptFormat::parse("vtt").ok(), Some(TranscriptFormat::Vtt));
    }
}
