//! One turn: a spoken (or typed) question in, a streamed spoken answer out.
//!
//! A turn runs speech recognition on the utterance, asks the configured route (the local
//! GraphRAG engine with the local LLM by default, so answers cite the knowledge base) with the
//! conversation so far through [`Pipeline::answer`] (the same path as every inference request:
//! limits, cache, plan, policy), and speaks the answer while it is still being written: text
//! deltas go through [`SpeechChunker`], which hands each finished sentence (the first one as
//! early as a clause allows) to the speech task, so sentence 1 is synthesised while the LLM
//! writes sentence 2. The voice follows the detected language: an installed Piper voice for
//! it, else espeak-ng's own synthesiser (and a status event says so). Inference runs on the
//! model runtimes' own threads (ASR, LLM, TTS) or tokio's blocking pool (espeak), never on a
//! worker thread.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uag_core::error::{PublicError, into_event};
use uag_core::metrics::{Metrics, VoiceTurnLabels};
use uag_core::pipeline::{CacheUse, Caller, Pipeline};
use uag_core::types::{Channel, Event, InferenceRequest, Message, Params, Role, Source, language_name};
use uag_models::asr::AsrOptions;
use uag_models::manifest::{ModelEntry, ModelKind};
use uag_models::runtime::ModelRuntimes;

use crate::chunker::{SpeechChunker, speakable};
use crate::config::VoiceConfig;
use crate::speech::Spoken;

/// Milliseconds since the end of speech for each stage of a turn (`None`: the stage did not run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VoiceTimings {
    /// Length of the utterance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_ms: Option<f64>,
    /// Speech recognition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asr_ms: Option<f64>,
    /// End of speech -> retrieval done (the answer starts being written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval_ms: Option<f64>,
    /// End of speech -> first answer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    /// End of speech -> first audio frame sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_audio_ms: Option<f64>,
    /// End of speech -> done.
    pub total_ms: f64,
}

/// Server -> client messages of the voice protocol (docs/PROTOCOL.md). An `audio` message is
/// followed by exactly one binary frame: the sentence's audio as a WAV file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VoiceEvent {
    /// First message on a connection: what the server accepts.
    Ready {
        protocol: u32,
        encodings: Vec<String>,
        min_sample_rate: u32,
        max_sample_rate: u32,
        max_frame_bytes: usize,
        silence_ms: u32,
    },
    /// A stage began: listening, transcribing, searching, expanding, ranking, answering,
    /// synthesizing.
    Status {
        #[serde(skip_serializing_if = "Option::is_none")]
        turn: Option<u32>,
        stage: String,
        message: String,
    },
    /// Voice activity: `started` or `ended` (with the reason: silence, max_length, stop, no_speech).
    Vad {
        turn: u32,
        speech: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// What the user said (or typed), and its language.
    Transcript {
        turn: u32,
        text: String,
        language: String,
    },
    /// The next piece of the answer text.
    Delta {
        turn: u32,
        text: String,
    },
    /// Passages the answer cites.
    Sources {
        turn: u32,
        sources: Vec<Source>,
    },
    /// A sentence's audio follows as one binary WAV frame.
    Audio {
        turn: u32,
        index: u32,
        text: String,
        sample_rate: u32,
        format: String,
        bytes: usize,
        voice: String,
        engine: String,
    },
    /// The turn is over. `reason`: `answered`, `cancelled`, `no_speech`, `error`.
    Done {
        turn: u32,
        reason: String,
        timings: VoiceTimings,
    },
    /// Something went wrong; `turn` is absent for connection-level errors.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        turn: Option<u32>,
        code: String,
        message: String,
    },
    Pong {},
}

/// What a turn sends towards the client.
#[derive(Debug)]
pub enum VoiceOut {
    Event(VoiceEvent),
    /// The WAV bytes announced by the preceding `audio` event.
    Audio(Vec<u8>),
}

/// One question to answer.
#[derive(Debug)]
pub struct TurnInput {
    pub turn: u32,
    pub question: Question,
    /// ISO 639-1 code, or `None` to detect it (multilingual ASR) / assume English.
    pub language: Option<String>,
    /// A voice id (or OpenAI alias); `None` picks one for the language.
    pub voice: Option<String>,
    /// Speak the answer (false: text only).
    pub speak: bool,
    /// Earlier turns, oldest first.
    pub history: Vec<Message>,
    /// When the user stopped speaking (or sent the text): the zero of every timing.
    pub ended_at: Instant,
}

#[derive(Debug)]
pub enum Question {
    /// Mono 16-bit samples at `sample_rate` (resampled to 16 kHz on the blocking pool).
    Audio {
        samples: Vec<i16>,
        sample_rate: u32,
    },
    Text(String),
    /// Speech the session transcribed already (a hands-free pause, to tell a finished
    /// question from one cut short): the turn does not transcribe it again.
    Heard {
        text: String,
        language: String,
        /// Length of the utterance.
        audio_ms: f64,
        /// End of speech -> transcript.
        asr_ms: f64,
    },
}

/// How a turn ended, for the conversation memory.
#[derive(Debug, Default)]
pub struct TurnOutcome {
    pub question: Option<String>,
    pub answer: String,
    pub completed: bool,
}

/// What every turn of every session needs from the process; built once.
#[derive(Clone, Debug)]
pub struct VoiceDeps {
    pub pipeline: Arc<Pipeline>,
    /// Local ASR and TTS; `None`: text questions, text answers.
    pub models: Option<Arc<ModelRuntimes>>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<VoiceConfig>,
}

/// What one turn needs: the process's parts and the caller's identity for routing and limits.
#[derive(Clone)]
pub struct TurnDeps {
    pub voice: VoiceDeps,
    pub caller: Caller,
}

/// Runs one turn to its `done` event. Cancelling `cancel` stops generation and synthesis at
/// once (the LLM at its next token, speech after the sentence being synthesised) and ends the
/// turn with `done` reason `cancelled`.
pub async fn run_turn(deps: TurnDeps, input: TurnInput, out: mpsc::Sender<VoiceOut>, cancel: CancellationToken) -> TurnOutcome {
    let metrics = Arc::clone(&deps.voice.metrics);
    metrics.voice_turns_active.inc();
    let turn = input.turn;
    let ended_at = input.ended_at;
    let mut timings = VoiceTimings::default();
    let mut outcome = TurnOutcome::default();
    let reason = tokio::select! {
        reason = answer(&deps, input, &out, &mut timings, &mut outcome) => reason,
        () = cancel.cancelled() => "cancelled",
    };
    timings.total_ms = ms_since(ended_at);
    if let Some(first_audio) = timings.first_audio_ms {
        metrics.voice_first_audio_seconds.observe(first_audio / 1000.0);
    }
    metrics.voice_turns.get_or_create(&VoiceTurnLabels { reason: reason.to_owned() }).inc();
    let _ = out.send(VoiceOut::Event(VoiceEvent::Done { turn, reason: reason.to_owned(), timings })).await;
    metrics.voice_turns_active.dec();
    outcome.completed = reason == "answered";
    outcome
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

async fn emit(out: &mpsc::Sender<VoiceOut>, event: VoiceEvent) -> bool {
    out.send(VoiceOut::Event(event)).await.is_ok()
}

fn status(turn: u32, stage: &str, message: impl Into<String>) -> VoiceEvent {
    VoiceEvent::Status { turn: Some(turn), stage: stage.to_owned(), message: message.into() }
}

fn error(turn: u32, code: &str, message: impl Into<String>) -> VoiceEvent {
    VoiceEvent::Error { turn: Some(turn), code: code.to_owned(), message: message.into() }
}

/// Reports a failure as the HTTP routes would word it and ends the turn with `error`.
async fn fail(out: &mpsc::Sender<VoiceOut>, turn: u32, err: impl Into<PublicError>) -> &'static str {
    let err = err.into();
    emit(out, error(turn, err.code, err.message)).await;
    "error"
}

/// The turn's work; returns the `done` reason. Dropped mid-way when the turn is cancelled,
/// which drops the LLM stream and the speech channel and so stops both.
async fn answer(
    deps: &TurnDeps,
    input: TurnInput,
    out: &mpsc::Sender<VoiceOut>,
    timings: &mut VoiceTimings,
    outcome: &mut TurnOutcome,
) -> &'static str {
    let turn = input.turn;
    let voice = &deps.voice;
    let voice_config = &voice.config;

    // 0. Each turn is one request for the caller's limits, refused before whisper runs.
    if let Err(e) = voice.pipeline.admit(&deps.caller).await {
        return fail(out, turn, e).await;
    }

    // 1. What was asked, in which language.
    let (question, language) = match input.question {
        Question::Text(text) => (text, input.language.clone().unwrap_or_else(|| "en".to_owned())),
        Question::Heard { text, language, audio_ms, asr_ms } => {
            timings.audio_ms = Some(audio_ms);
            timings.asr_ms = Some(asr_ms);
            // The same stages as every spoken turn, for clients that show them.
            if !emit(out, status(turn, "transcribing", "Transcribed while listening")).await {
                return "cancelled";
            }
            (text, language)
        }
        Question::Audio { samples, sample_rate } => {
            let pcm = match crate::speech::to_16k_off_worker(samples, sample_rate).await {
                Ok(pcm) => pcm,
                Err(message) => {
                    emit(out, error(turn, "invalid_audio", message)).await;
                    return "error";
                }
            };
            timings.audio_ms = Some(pcm.len() as f64 / 16.0);
            let Some(models) = voice.models.clone() else {
                emit(out, error(turn, "model_not_installed", "speech recognition is not available in this process")).await;
                return "error";
            };
            let entry = match models.resolve(ModelKind::Asr, None) {
                Ok(e) if e.main_path(models.models_dir()).is_file() => e,
                Ok(e) => {
                    emit(out, error(turn, "model_not_installed", e.install_hint())).await;
                    return "error";
                }
                Err(e) => return fail(out, turn, e).await,
            };
            if !emit(out, status(turn, "transcribing", format!("Transcribing with {}", entry.id))).await {
                return "cancelled";
            }
            let language = input.language.clone().filter(|l| l != "auto");
            match models.transcribe_pcm(&entry, pcm, AsrOptions { language, threads: 0, fit_window: true }).await {
                Ok(t) => {
                    timings.asr_ms = Some(ms_since(input.ended_at));
                    (clean_transcript(&t.text), t.language)
                }
                Err(e) => return fail(out, turn, e).await,
            }
        }
    };
    if !emit(out, VoiceEvent::Transcript { turn, text: question.clone(), language: language.clone() }).await {
        return "cancelled";
    }
    if question.is_empty() {
        return "no_speech";
    }
    outcome.question = Some(question.clone());

    // 2. Who speaks the answer.
    let speaker = if input.speak { pick_speaker(voice.models.as_ref(), input.voice.as_deref(), &language) } else { Speaker::Silent(None) };
    match &speaker {
        Speaker::Silent(Some(why)) | Speaker::Espeak { note: why, .. } => {
            emit(out, status(turn, "synthesizing", why.clone())).await;
        }
        _ => {}
    }

    // 3. The answer, spoken sentence by sentence while it is written.
    let mut messages = input.history;
    messages.push(Message::new(Role::User, question));
    let mut request = InferenceRequest {
        id: None,
        provider: voice_config.provider.clone(),
        model: Some(voice_config.model.clone()),
        messages,
        input: None,
        params: Params { max_tokens: Some(voice_config.max_answer_tokens), ..Params::default() },
        stream: true,
        metadata: serde_json::Map::new(),
        tools: Vec::new(),
        tool_choice: None,
    };
    // A spoken answer is short: the local provider caps it at two sentences.
    request.set_channel(Channel::Voice);
    if language != "en" {
        request.set_language(&language);
    }
    let request_id = format!("voice-{}", uuid::Uuid::new_v4());
    let ctx = voice.pipeline.context(request_id, &deps.caller);
    // Dropping this guard (turn cancelled or finished) cancels the provider's work.
    let _cancel_guard = ctx.cancel.clone().drop_guard();
    // The same path as every inference request: cached, planned, and authorized per target.
    let mut events = match voice.pipeline.answer(request, &deps.caller, ctx, CacheUse::Allowed).await.answer {
        Ok(answer) => answer.into_events(),
        Err(e) => return fail(out, turn, e).await,
    };

    let (sentence_tx, sentence_rx) = mpsc::channel::<String>(16);
    let speech = match speaker {
        Speaker::Silent(_) => None,
        // Aborted when this future is dropped (turn cancelled): no sentence is spoken after that.
        speaker => {
            Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(speak(speaker, sentence_rx, out.clone(), turn, input.ended_at))))
        }
    };
    let mut chunker = SpeechChunker::new(voice_config.first_chunk_words);
    let mut reason = "answered";
    while let Some(item) = events.next().await {
        let event = match into_event(item) {
            Event::Status { stage, message } => {
                let stage = match stage.as_str() {
                    // The provider's "synthesizing" is the answer being written; ours is speech.
                    "synthesizing" => {
                        timings.retrieval_ms.get_or_insert_with(|| ms_since(input.ended_at));
                        "answering".to_owned()
                    }
                    _ => stage,
                };
                status(turn, &stage, message)
            }
            Event::Delta { text } => {
                timings.retrieval_ms.get_or_insert_with(|| ms_since(input.ended_at));
                timings.first_token_ms.get_or_insert_with(|| ms_since(input.ended_at));
                outcome.answer.push_str(&text);
                for sentence in chunker.push(&text) {
                    let _ = sentence_tx.send(sentence).await;
                }
                VoiceEvent::Delta { turn, text }
            }
            Event::Sources { sources } => VoiceEvent::Sources { turn, sources },
            // A voice turn offers no tools, so no provider calls one.
            Event::ToolCallStart { .. } | Event::ToolCallDelta { .. } => continue,
            Event::Done { .. } => break,
            Event::Error { code, message } => {
                reason = "error";
                error(turn, &code, message)
            }
        };
        if !emit(out, event).await {
            return "cancelled";
        }
        if reason == "error" {
            break;
        }
    }
    if let Some(rest) = chunker.finish() {
        let _ = sentence_tx.send(rest).await;
    }
    drop(sentence_tx);
    if let Some(speech) = speech {
        // The speech task owns a clone of `out`; wait for its last sentence.
        if let Ok(first_audio) = speech.await {
            timings.first_audio_ms = first_audio;
        }
    }
    reason
}

/// Whisper marks non-speech with bracketed tags (`[BLANK_AUDIO]`, `(music)`); those are not a
/// question.
pub(crate) fn clean_transcript(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Who speaks a turn's answer.
#[derive(Debug)]
pub(crate) enum Speaker {
    Piper(Arc<ModelRuntimes>, ModelEntry),
    /// espeak-ng's own synthesiser for a language no installed Piper voice speaks.
    Espeak {
        voice: String,
        note: String,
    },
    /// Text only, with the reason when the client asked for speech.
    Silent(Option<String>),
}

/// Picks the voice: the requested one; else an installed Piper voice for the language (the
/// manifest's default first); else espeak-ng's voice for the language.
pub(crate) fn pick_speaker(models: Option<&Arc<ModelRuntimes>>, requested: Option<&str>, language: &str) -> Speaker {
    let Some(models) = models else { return Speaker::Silent(Some("No speech synthesis in this process; answering in text".into())) };
    let dir = models.models_dir();
    if let Some(requested) = requested
        && let Ok(entry) = models.resolve_voice(Some(requested))
        && entry.main_path(dir).is_file()
    {
        return Speaker::Piper(Arc::clone(models), entry);
    }
    let mut voices: Vec<&ModelEntry> = models
        .manifest()
        .models
        .iter()
        .filter(|m| m.kind == ModelKind::Tts && m.language.as_deref().unwrap_or("en") == language && m.main_path(dir).is_file())
        .collect();
    voices.sort_by_key(|m| !m.default);
    if let Some(entry) = voices.first() {
        return Speaker::Piper(Arc::clone(models), (*entry).clone());
    }
    let espeak_voice = if language == "en" { "en-us".to_owned() } else { language.to_owned() };
    if uag_models::espeak::has_voice(&espeak_voice) {
        let note = format!("No Piper voice for {} is installed; speaking with espeak-ng", language_name(language));
        return Speaker::Espeak { voice: espeak_voice, note };
    }
    Speaker::Silent(Some(format!("No voice for {} is installed; answering in text", language_name(language))))
}

/// The speech task: synthesises each sentence in order and sends it as `audio` + WAV frame.
/// Returns ms from the end of speech to the first audio frame.
async fn speak(
    speaker: Speaker,
    mut sentences: mpsc::Receiver<String>,
    out: mpsc::Sender<VoiceOut>,
    turn: u32,
    ended_at: Instant,
) -> Option<f64> {
    let mut first_audio = None;
    let mut index = 0u32;
    let mut announced = false;
    while let Some(sentence) = sentences.recv().await {
        let text = speakable(&sentence);
        if text.is_empty() {
            continue;
        }
        if !announced {
            announced = true;
            let _ = out.send(VoiceOut::Event(status(turn, "synthesizing", "Synthesizing speech"))).await;
        }
        if matches!(speaker, Speaker::Silent(_)) {
            return first_audio;
        }
        let Spoken { samples, sample_rate, voice, engine } = match crate::speech::speak_with(&speaker, text.clone()).await {
            Ok(spoken) => spoken,
            Err(e) => {
                tracing::warn!(code = e.code, error = %e.message, "speech synthesis failed");
                let _ =
                    out.send(VoiceOut::Event(error(turn, "synthesis_failed", "speech synthesis failed; the answer is in the text"))).await;
                return first_audio;
            }
        };
        let wav = uag_models::audio::encode_wav_pcm16(&samples, sample_rate);
        let header =
            VoiceEvent::Audio { turn, index, text, sample_rate, format: "wav".into(), bytes: wav.len(), voice, engine: engine.into() };
        if out.send(VoiceOut::Event(header)).await.is_err() || out.send(VoiceOut::Audio(wav)).await.is_err() {
            return first_audio;
        }
        first_audio.get_or_insert_with(|| ms_since(ended_at));
        index += 1;
    }
    first_audio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_lose_whisper_tags() {
        assert_eq!(clean_transcript(" [BLANK_AUDIO] "), "");
        assert_eq!(clean_transcript("(music) What is APT?"), "What is APT?");
    }
}
