//! The voice pipeline: one spoken (or typed) question in, a streamed spoken answer out.
//!
//! A turn runs speech recognition on the utterance, asks the configured route (the local
//! GraphRAG engine with the local LLM by default, so answers cite the knowledge base) with the
//! conversation so far, and speaks the answer while it is still being written: text deltas go
//! through [`SpeechChunker`], which hands each finished sentence (the first one as early as a
//! clause allows) to the speech task, so sentence 1 is synthesised while the LLM writes
//! sentence 2. The voice follows the detected language: an installed Piper voice for it, else
//! espeak-ng's own synthesiser (and a status event says so).
//!
//! Everything here is wire-neutral apart from the serde shapes of [`VoiceEvent`];
//! [`crate::http::voice`] frames them on the WebSocket. Inference runs on the model runtimes'
//! own threads (ASR, LLM, TTS) or tokio's blocking pool (espeak), never on a worker thread.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uag_models::asr::AsrOptions;
use uag_models::manifest::{ModelEntry, ModelKind};
use uag_models::runtime::ModelRuntimes;
use uag_models::tts::TtsOptions;

use crate::error::ApiError;
use crate::error::into_event;
use crate::http::AppState;
use crate::types::{Channel, Event, InferenceRequest, Message, Params, Role, Source, language_name};

/// `[voice]`: the voice WebSocket (`/v1/voice`) and the kiosk page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    /// Serve `/v1/voice` and the kiosk page at `/`.
    pub enabled: bool,
    /// Route (alias or model) answers come from; `graphrag` answers from the knowledge base.
    pub model: String,
    /// Provider for the answers; unset: the route decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Longest spoken answer, in LLM tokens (spoken answers should be short).
    pub max_answer_tokens: u32,
    /// Earlier question/answer pairs kept per connection as conversation memory.
    pub history_turns: usize,
    /// Voice-activity score (0..1) at or above which a 16 ms frame counts as speech.
    pub vad_threshold: f32,
    /// Silence after speech that ends the utterance, in ms.
    pub silence_ms: u32,
    /// Speech needed before an utterance counts as started (clicks are shorter), in ms.
    pub min_speech_ms: u32,
    /// Longest utterance, in ms; the turn starts when it is reached.
    pub max_utterance_ms: u32,
    /// With no speech at all for this long after `start`, the turn ends as `no_speech`.
    pub no_speech_ms: u32,
    /// Largest binary audio frame, in bytes; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Words the first spoken chunk may end at a comma after (speaks sooner than waiting for
    /// the full first sentence); 0 waits for the sentence.
    pub first_chunk_words: usize,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        let vad = uag_models::vad::EndpointConfig::default();
        Self {
            enabled: true,
            model: crate::provider::local::LOCAL_MODEL.to_owned(),
            provider: None,
            max_answer_tokens: 96,
            history_turns: 4,
            vad_threshold: vad.threshold,
            silence_ms: vad.silence_ms,
            min_speech_ms: vad.min_speech_ms,
            max_utterance_ms: vad.max_utterance_ms,
            no_speech_ms: vad.no_speech_ms,
            max_frame_bytes: 64 * 1024,
            first_chunk_words: 6,
        }
    }
}

impl VoiceConfig {
    /// Checks what types cannot; the error is (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("voice.{k}"), m.to_owned()));
        if !(0.0..=1.0).contains(&self.vad_threshold) {
            return err("vad_threshold", "must be between 0 and 1");
        }
        if self.silence_ms < 100 || self.silence_ms > 10_000 {
            return err("silence_ms", "must be between 100 and 10000");
        }
        if self.max_utterance_ms < 1_000 || self.max_utterance_ms > 120_000 {
            return err("max_utterance_ms", "must be between 1000 and 120000");
        }
        if self.no_speech_ms < 500 {
            return err("no_speech_ms", "must be at least 500");
        }
        if self.max_frame_bytes < 320 {
            return err("max_frame_bytes", "must be at least 320 (10 ms at 16 kHz)");
        }
        if self.model.trim().is_empty() {
            return err("model", "must name a route or model (e.g. \"graphrag\")");
        }
        if self.max_answer_tokens == 0 {
            return err("max_answer_tokens", "must be at least 1");
        }
        Ok(())
    }

    pub fn endpointing(&self) -> uag_models::vad::EndpointConfig {
        uag_models::vad::EndpointConfig {
            threshold: self.vad_threshold,
            min_speech_ms: self.min_speech_ms,
            silence_ms: self.silence_ms,
            max_utterance_ms: self.max_utterance_ms,
            no_speech_ms: self.no_speech_ms,
        }
    }
}

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
    /// Mono samples at 16 kHz.
    Audio(Vec<f32>),
    Text(String),
}

/// How a turn ended, for the conversation memory.
#[derive(Debug, Default)]
pub struct TurnOutcome {
    pub question: Option<String>,
    pub answer: String,
    pub completed: bool,
}

/// The voice socket as the policy sees it; each turn is decided as inference on this route.
pub const ROUTE: crate::policy::Route = crate::policy::Route { path: "/v1/voice", method: "GET" };

/// Everything a turn needs from the server, plus the caller's identity for routing and limits.
#[derive(Clone)]
pub struct TurnDeps {
    pub state: AppState,
    pub caller: crate::pipeline::Caller,
}

/// Runs one turn to its `done` event. Cancelling `cancel` stops generation and synthesis at
/// once (the LLM at its next token, speech after the sentence being synthesised) and ends the
/// turn with `done` reason `cancelled`.
pub async fn run_turn(deps: TurnDeps, input: TurnInput, out: mpsc::Sender<VoiceOut>, cancel: CancellationToken) -> TurnOutcome {
    let metrics = Arc::clone(&deps.state.metrics);
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
    metrics.voice_turns.get_or_create(&crate::metrics::VoiceTurnLabels { reason: reason.to_owned() }).inc();
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
    let state = &deps.state;
    let voice_config = &state.config.voice;

    // 0. Each turn is one request for the caller's limits, refused before whisper runs.
    if let Err(e) = state.pipeline.admit(&deps.caller).await {
        let api = ApiError::from(e);
        emit(out, error(turn, api.code, api.message)).await;
        return "error";
    }

    // 1. What was asked, in which language.
    let (question, language) = match input.question {
        Question::Text(text) => (text, input.language.clone().unwrap_or_else(|| "en".to_owned())),
        Question::Audio(pcm) => {
            timings.audio_ms = Some(pcm.len() as f64 / 16.0);
            let Some(models) = state.models.clone() else {
                emit(out, error(turn, "model_not_installed", "speech recognition is not available in this process")).await;
                return "error";
            };
            let entry = match models.resolve(ModelKind::Asr, None) {
                Ok(e) if e.main_path(models.models_dir()).is_file() => e,
                Ok(e) => {
                    emit(out, error(turn, "model_not_installed", e.install_hint())).await;
                    return "error";
                }
                Err(e) => {
                    let api = ApiError::from(crate::error::ProviderError::from(e));
                    emit(out, error(turn, api.code, api.message)).await;
                    return "error";
                }
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
                Err(e) => {
                    let api = ApiError::from(crate::error::ProviderError::from(e));
                    emit(out, error(turn, api.code, api.message)).await;
                    return "error";
                }
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
    let speaker = if input.speak { pick_speaker(state.models.as_ref(), input.voice.as_deref(), &language) } else { Speaker::Silent(None) };
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
    };
    // A spoken answer is short: the local provider caps it at two sentences.
    request.set_channel(Channel::Voice);
    if language != "en" {
        request.set_language(&language);
    }
    let request_id = format!("voice-{}", uuid::Uuid::new_v4());
    let ctx = state.pipeline.context(request_id, &deps.caller);
    // Dropping this guard (turn cancelled or finished) cancels the provider's work.
    let _cancel_guard = ctx.cancel.clone().drop_guard();
    // The same path as every inference request: cached, planned, and authorized per target.
    let mut events = match state.pipeline.answer(request, &deps.caller, ctx, crate::pipeline::CacheUse::Allowed).await.answer {
        Ok(answer) => answer.into_events(),
        Err(e) => {
            let api = ApiError::from(e);
            emit(out, error(turn, api.code, api.message)).await;
            return "error";
        }
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
fn clean_transcript(text: &str) -> String {
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
enum Speaker {
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
fn pick_speaker(models: Option<&Arc<ModelRuntimes>>, requested: Option<&str>, language: &str) -> Speaker {
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
        let result = match &speaker {
            Speaker::Piper(models, entry) => models
                .speak(entry, text.clone(), TtsOptions::default())
                .await
                .map(|s| (s.samples, s.sample_rate, s.voice, "piper"))
                .map_err(|e| e.to_string()),
            Speaker::Espeak { voice, .. } => {
                let (voice, text) = (voice.clone(), text.clone());
                match tokio::task::spawn_blocking(move || uag_models::espeak::synthesize(&text, &voice).map(|(s, r)| (s, r, voice))).await {
                    Ok(Ok((samples, rate, voice))) => Ok((samples, rate, format!("espeak-ng:{voice}"), "espeak-ng")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Speaker::Silent(_) => return first_audio,
        };
        let (samples, sample_rate, voice, engine) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "speech synthesis failed");
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

/// What a synthesiser should read: without citation marks (`[1]`) or markdown emphasis.
fn speakable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            // Skip `[1]`, `[1, 2]`; keep other brackets' contents.
            let rest: String = chars.clone().take_while(|c| *c != ']').collect();
            if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') {
                for _ in 0..=rest.chars().count() {
                    chars.next();
                }
                continue;
            }
        }
        if matches!(c, '*' | '_' | '#' | '`') {
            continue;
        }
        out.push(c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ").replace(" .", ".").replace(" ,", ",")
}

/// Cuts streamed answer text into pieces to speak: whole sentences, and for the very first
/// piece a clause ending in a comma (or similar) once it has enough words, so the first audio
/// does not wait for a long first sentence.
#[derive(Debug)]
pub struct SpeechChunker {
    buffer: String,
    first_chunk_words: usize,
    emitted: usize,
}

impl SpeechChunker {
    pub fn new(first_chunk_words: usize) -> Self {
        Self { buffer: String::new(), first_chunk_words, emitted: 0 }
    }

    /// Adds text; returns the pieces now complete.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buffer.push_str(text);
        let mut ready = Vec::new();
        loop {
            let sentences = uag_models::tts::split_sentences(&self.buffer);
            // The last piece may still grow; earlier ones are complete only if followed by
            // more text (split_sentences needs the next word to rule out "Dr." and "3.5").
            if sentences.len() >= 2 {
                let first = sentences[0].clone();
                if let Some(pos) = self.buffer.find(first.trim_start()) {
                    self.buffer.drain(..pos + first.trim_start().len());
                    self.emitted += 1;
                    ready.push(first);
                    continue;
                }
            }
            break;
        }
        if self.emitted == 0
            && self.first_chunk_words > 0
            && let Some(cut) = clause_end(&self.buffer, self.first_chunk_words)
        {
            let clause: String = self.buffer.drain(..cut).collect();
            self.emitted += 1;
            ready.push(clause.trim().to_owned());
        }
        ready
    }

    /// The rest, at the end of the answer.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// Byte offset just after a clause mark (`,` `;` `:` `—`) followed by a space, with at least
/// `min_words` words before it.
fn clause_end(text: &str, min_words: usize) -> Option<usize> {
    let mut words = 0usize;
    let mut in_word = false;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
        }
        if matches!(c, ',' | ';' | ':' | '—') && words >= min_words && iter.peek().is_some_and(|(_, n)| n.is_whitespace()) {
            return Some(i + c.len_utf8());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_speaks_sentences_as_they_complete() {
        let mut c = SpeechChunker::new(0);
        assert!(c.push("Debian uses APT").is_empty());
        assert!(c.push(".").is_empty(), "a sentence is complete only once the next one begins");
        assert_eq!(c.push(" It installs"), ["Debian uses APT."]);
        assert!(c.push(" packages from Dr. Smith's").is_empty());
        assert_eq!(c.push(" mirror. Done"), ["It installs packages from Dr. Smith's mirror."]);
        assert_eq!(c.finish().as_deref(), Some("Done"));
        assert_eq!(c.finish(), None);
    }

    #[test]
    fn chunker_speaks_an_early_first_clause() {
        let mut c = SpeechChunker::new(4);
        assert!(c.push("Yes, it").is_empty(), "too few words for an early cut");
        assert_eq!(c.push(" can be done with apt-get, which"), ["Yes, it can be done with apt-get,"]);
        // Only the first piece is cut early; later ones wait for the sentence.
        assert!(c.push(" needs root, as usual").is_empty());
        assert_eq!(c.push(". Then"), ["which needs root, as usual."]);
        assert!(c.push(" reboot.").is_empty());
        assert_eq!(c.finish().as_deref(), Some("Then reboot."));
    }

    #[test]
    fn speakable_drops_citations_and_markup() {
        assert_eq!(speakable("APT installs packages [1]. It is **fast** [2, 3]."), "APT installs packages. It is fast.");
        assert_eq!(speakable("See [the manual] for `apt`."), "See [the manual] for apt.");
    }

    #[test]
    fn transcripts_lose_whisper_tags() {
        assert_eq!(clean_transcript(" [BLANK_AUDIO] "), "");
        assert_eq!(clean_transcript("(music) What is APT?"), "What is APT?");
    }

    #[test]
    fn config_checks_ranges() {
        assert!(VoiceConfig::default().validate().is_ok());
        let bad = VoiceConfig { vad_threshold: 1.5, ..VoiceConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "voice.vad_threshold");
        let bad = VoiceConfig { max_frame_bytes: 10, ..VoiceConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "voice.max_frame_bytes");
    }
}
