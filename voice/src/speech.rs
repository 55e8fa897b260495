//! Speech recognition, speech synthesis and a spoken-style answer, each on its own, for front
//! doors that ask for one step at a time (Wyoming's `transcribe`, `synthesize` and `handle`
//! programs), with the same model and voice choice as a voice turn.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uag_core::error::{ErrorClass, PublicError};
use uag_core::pipeline::Caller;
use uag_core::types::Source;
use uag_models::asr::AsrOptions;
use uag_models::manifest::ModelKind;
use uag_models::tts::TtsOptions;

use crate::turn::{Question, Speaker, TurnDeps, TurnInput, VoiceDeps, VoiceEvent, VoiceOut, clean_transcript, pick_speaker, run_turn};

/// What speech recognition heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    /// ISO 639-1 code (detected by a multilingual model, else the model's own).
    pub language: String,
    /// The speech model that heard it.
    pub model: String,
}

/// Transcribes mono 16 kHz samples with the installed speech model (`model` picks one by id).
pub async fn transcribe(deps: &VoiceDeps, pcm: Vec<f32>, language: Option<String>, model: Option<&str>) -> Result<Heard, PublicError> {
    let Some(models) = deps.models.as_ref() else {
        return Err(PublicError::new(
            ErrorClass::Unavailable,
            "model_not_installed",
            "speech recognition is not available in this process",
        ));
    };
    let entry = models.resolve(ModelKind::Asr, model)?;
    if !entry.main_path(models.models_dir()).is_file() {
        return Err(PublicError::new(ErrorClass::Unavailable, "model_not_installed", entry.install_hint()));
    }
    let language = language.filter(|l| l != "auto" && !l.is_empty());
    let heard = models.transcribe_pcm(&entry, pcm, AsrOptions { language, threads: 0, fit_window: true }).await?;
    Ok(Heard { text: clean_transcript(&heard.text), language: heard.language, model: entry.id })
}

/// Synthesised speech: mono samples in -1..1.
#[derive(Debug, Clone)]
pub struct Spoken {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// The voice that spoke (`espeak-ng:de` for espeak-ng's own).
    pub voice: String,
    /// `piper` or `espeak-ng`.
    pub engine: &'static str,
}

/// Speaks `text` (citation marks and markdown left out) with the requested voice, else an
/// installed Piper voice for `language` (English when unset), else espeak-ng's voice for it.
pub async fn synthesize(deps: &VoiceDeps, text: &str, voice: Option<&str>, language: Option<&str>) -> Result<Spoken, PublicError> {
    let text = crate::speakable(text);
    if text.is_empty() {
        return Err(PublicError::invalid_field("text", "there is nothing to speak"));
    }
    speak_with(&pick_speaker(deps.models.as_ref(), voice, language.unwrap_or("en")), text).await
}

/// Speaks speakable `text` with `speaker`: Piper on its runtime's own thread, espeak-ng on the
/// blocking pool (never on a worker thread). The one synthesis step of turns and of Wyoming.
pub(crate) async fn speak_with(speaker: &Speaker, text: String) -> Result<Spoken, PublicError> {
    match speaker {
        Speaker::Piper(models, entry) => {
            let speech = models.speak(entry, text, TtsOptions::default()).await?;
            Ok(Spoken { samples: speech.samples, sample_rate: speech.sample_rate, voice: speech.voice, engine: "piper" })
        }
        Speaker::Espeak { voice, .. } => {
            let spoken_by = format!("espeak-ng:{voice}");
            let voice = voice.clone();
            let (samples, sample_rate) =
                tokio::task::spawn_blocking(move || uag_models::espeak::synthesize(&text, &voice)).await.map_err(|e| {
                    tracing::error!(error = %e, "espeak-ng task failed");
                    PublicError::internal()
                })??;
            Ok(Spoken { samples, sample_rate, voice: spoken_by, engine: "espeak-ng" })
        }
        Speaker::Silent(why) => Err(PublicError::new(
            ErrorClass::Unavailable,
            "voice_not_installed",
            why.clone().unwrap_or_else(|| "no voice is installed for this language".to_owned()),
        )),
    }
}

/// A text answer as a voice turn gives it (the `[voice]` route, short, grounded), with the
/// passages it cites.
#[derive(Debug, Clone, Default)]
pub struct TextAnswer {
    pub text: String,
    pub sources: Vec<Source>,
}

/// Why a question was not answered: the public code and message a turn reported.
#[derive(Debug, Clone, PartialEq)]
pub struct NotAnswered {
    pub code: String,
    pub message: String,
}

/// Answers one typed (or already transcribed) question the way a voice turn does: the caller's
/// limits, the `[voice]` route and its short spoken-answer budget, no conversation memory.
pub async fn answer_text(deps: &VoiceDeps, caller: Caller, question: String, language: Option<String>) -> Result<TextAnswer, NotAnswered> {
    let (tx, mut rx) = mpsc::channel::<VoiceOut>(64);
    let input = TurnInput {
        turn: 1,
        question: Question::Text(question),
        language,
        voice: None,
        speak: false,
        history: Vec::new(),
        ended_at: Instant::now(),
    };
    let turn = tokio::spawn(run_turn(TurnDeps { voice: deps.clone(), caller }, input, tx, CancellationToken::new()));
    let mut answer = TextAnswer::default();
    let mut failure = None;
    while let Some(out) = rx.recv().await {
        match out {
            VoiceOut::Event(VoiceEvent::Delta { text, .. }) => answer.text.push_str(&text),
            VoiceOut::Event(VoiceEvent::Sources { sources, .. }) => answer.sources = sources,
            VoiceOut::Event(VoiceEvent::Error { code, message, .. }) => failure = Some(NotAnswered { code, message }),
            _ => {}
        }
    }
    let completed = match turn.await {
        Ok(outcome) => outcome.completed,
        Err(e) => {
            tracing::error!(error = %e, "answer task failed");
            false
        }
    };
    match failure {
        Some(failure) => Err(failure),
        None if !completed => Err(NotAnswered { code: "not_answered".into(), message: "the question was not answered".into() }),
        None => {
            answer.text = answer.text.trim().to_owned();
            Ok(answer)
        }
    }
}

/// Languages an installed speech model understands: `.en` models English only, the others
/// whisper's multilingual set (the ones uag names; whisper knows more).
pub fn asr_languages(model_id: &str) -> Vec<String> {
    if model_id.ends_with(".en") || !model_id.starts_with("whisper") {
        return vec!["en".into()];
    }
    ["en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "da", "no", "fi", "cs", "ru", "uk", "tr", "el", "ja", "zh", "ko", "ar", "hi"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Mono 16 kHz samples for speech recognition. The resampling (an FFT resampler over up to
/// `max_utterance_ms` of audio) runs on the blocking pool, never on a tokio worker.
pub async fn to_16k_off_worker(samples: Vec<i16>, sample_rate: u32) -> Result<Vec<f32>, String> {
    let convert = move || {
        let pcm: Vec<f32> = samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
        if sample_rate == 16_000 {
            return Ok(pcm);
        }
        uag_models::audio::resample_mono(&pcm, sample_rate, 16_000).map_err(|e| format!("cannot resample the audio: {e}"))
    };
    tokio::task::spawn_blocking(convert).await.map_err(|e| format!("resampling failed: {e}"))?
}
