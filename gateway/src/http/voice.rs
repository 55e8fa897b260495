//! `GET /v1/voice`: the voice assistant over WebSocket (protocol in docs/PROTOCOL.md).
//!
//! The client sends a JSON `start` (sample rate, `pcm_s16le`, optional language and voice),
//! binary frames of little-endian 16-bit mono PCM, then `stop`, or the server's voice-activity
//! detection ends the utterance. The server answers with [`VoiceEvent`]s as JSON text and each
//! spoken sentence as one binary WAV frame (announced by an `audio` event). One turn runs at a
//! time; `start`, `text`, `cancel`, or speech in audio sent while the server answers
//! (barge-in) stops the running turn at once. The last few turns are kept as conversation
//! memory until `reset` or the connection ends.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uag_models::vad::{EndReason, Endpointer, VadEvent};

use super::AppState;
use crate::types::{Message as ChatTurn, Role};
use crate::voice::{Question, TurnDeps, TurnInput, TurnOutcome, VoiceEvent, VoiceOut, run_turn};

/// Sample rates a client may send (browsers capture at 44.1 or 48 kHz; telephony at 8 kHz).
pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 48_000;
/// Audio kept from before speech was detected, so a barge-in's first syllable is not lost.
const PRE_ROLL_MS: u32 = 300;

/// Messages a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    /// Begin an utterance; audio frames follow.
    Start {
        sample_rate: u32,
        #[serde(default = "default_encoding")]
        encoding: String,
        #[serde(default)]
        language: Option<String>,
        #[serde(default)]
        voice: Option<String>,
        /// Speak the answer (default); false answers in text only.
        #[serde(default = "yes")]
        speak: bool,
    },
    /// The utterance is over (push-to-talk released).
    Stop {},
    /// A typed question instead of speech.
    Text {
        text: String,
        #[serde(default)]
        language: Option<String>,
        #[serde(default)]
        voice: Option<String>,
        #[serde(default = "yes")]
        speak: bool,
    },
    /// Stop the running turn (and any utterance being recorded).
    Cancel {},
    /// Forget the conversation so far.
    Reset {},
    Ping {},
}

/// Parses one client text message as a session does; true when it is well formed. For the
/// fuzz targets in `fuzz/`, not an API.
#[doc(hidden)]
pub fn fuzz_parse_client_message(bytes: &[u8]) -> bool {
    super::extract::parse_json::<ClientMessage>(bytes).is_ok()
}

fn default_encoding() -> String {
    "pcm_s16le".into()
}

fn yes() -> bool {
    true
}

pub async fn upgrade(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match super::accept_upgrade(&state, ws) {
        Ok(ws) => ws,
        Err(refused) => return refused.into_response(),
    };
    let tasks = state.tasks.clone();
    // Binary audio frames are bounded by [voice] max_frame_bytes, JSON messages by the same
    // (they are small); tungstenite closes with 1009 above it.
    let max = state.config.voice.max_frame_bytes.max(4096);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tasks.track_future(VoiceSession::new(state, super::caller(&extensions, crate::voice::ROUTE)).run(socket)))
}

/// The format of the audio being received.
#[derive(Debug, Clone)]
struct AudioFormat {
    sample_rate: u32,
    language: Option<String>,
    voice: Option<String>,
    speak: bool,
}

/// An utterance being recorded.
struct Recording {
    format: AudioFormat,
    endpointer: Endpointer,
    samples: Vec<i16>,
    speech_reported: bool,
}

/// The turn being answered.
struct RunningTurn {
    turn: u32,
    cancel: CancellationToken,
    handle: JoinHandle<TurnOutcome>,
}

/// Watches audio that arrives outside a recording (a hands-free client streaming its
/// microphone): speech in it starts a new utterance, interrupting the answer (barge-in).
struct Listener {
    format: AudioFormat,
    endpointer: Endpointer,
    pre_roll: VecDeque<i16>,
}

struct VoiceSession {
    state: AppState,
    /// The upgrade request's caller: every turn runs with its identity and limits.
    caller: crate::pipeline::Caller,
    out_tx: mpsc::Sender<VoiceOut>,
    out_rx: mpsc::Receiver<VoiceOut>,
    turns: u32,
    recording: Option<Recording>,
    running: Option<RunningTurn>,
    listener: Option<Listener>,
    history: VecDeque<(String, String)>,
}

enum Flow {
    Continue,
    Close(Option<CloseFrame>),
}

impl VoiceSession {
    fn new(state: AppState, caller: crate::pipeline::Caller) -> Self {
        let (out_tx, out_rx) = mpsc::channel(64);
        Self { state, caller, out_tx, out_rx, turns: 0, recording: None, running: None, listener: None, history: VecDeque::new() }
    }

    async fn run(mut self, socket: WebSocket) {
        let metrics = std::sync::Arc::clone(&self.state.metrics);
        metrics.voice_sessions.inc();
        self.serve(socket).await;
        // Whatever ended the session, the running turn stops now and is awaited, so nothing it
        // holds (LLM stream, speech task) outlives the connection.
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), running.handle).await;
        }
        metrics.voice_sessions.dec();
    }

    fn reply(&self, event: VoiceEvent) {
        // A full queue means the client is not reading; a dropped status beats a stuck session.
        let _ = self.out_tx.try_send(VoiceOut::Event(event));
    }

    fn error(&self, code: &str, message: impl Into<String>) {
        self.reply(VoiceEvent::Error { turn: None, code: code.to_owned(), message: message.into() });
    }

    async fn serve(&mut self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let server = &self.state.config.server;
        let ping_every = Duration::from_millis(server.ws_ping_interval_ms.max(100));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let mut rate = super::MessageRate::new(self.state.config.server.ws_max_messages_per_second);
        let shutdown = self.state.shutdown.clone();
        let voice = &self.state.config.voice;
        let ready = VoiceEvent::Ready {
            protocol: 1,
            encodings: vec!["pcm_s16le".into()],
            min_sample_rate: MIN_SAMPLE_RATE,
            max_sample_rate: MAX_SAMPLE_RATE,
            max_frame_bytes: voice.max_frame_bytes,
            silence_ms: voice.silence_ms,
        };
        if send(&mut sink, VoiceOut::Event(ready)).await.is_err() {
            return;
        }
        let close = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    break Some(CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() });
                }
                Some(out) = self.out_rx.recv() => {
                    if send(&mut sink, out).await.is_err() {
                        break None;
                    }
                }
                outcome = async {
                    match self.running.as_mut() {
                        Some(running) => (&mut running.handle).await,
                        None => std::future::pending().await,
                    }
                }, if self.running.is_some() => {
                    self.running = None;
                    if let Ok(outcome) = outcome {
                        self.remember(outcome);
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 3 {
                        tracing::info!("voice peer silent for three ping intervals; dropping it");
                        break None;
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                }
                message = incoming.next() => {
                    last_heard = Instant::now();
                    match message {
                        None => break None,
                        Some(Err(e)) => break super::read_error_close(&e),
                        Some(Ok(message)) if !rate.allow() => {
                            drop(message);
                            tracing::info!("websocket peer over its message rate; closing");
                            break Some(CloseFrame { code: close_code::POLICY, reason: "message rate exceeded".into() });
                        }
                        Some(Ok(message)) => match self.on_message(message) {
                            Flow::Continue => {}
                            Flow::Close(frame) => break frame,
                        },
                    }
                }
            }
        };
        if let Some(running) = &self.running {
            running.cancel.cancel();
        }
        if let Some(frame) = close {
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    }

    fn remember(&mut self, outcome: TurnOutcome) {
        if let (Some(question), true) = (outcome.question, outcome.completed) {
            self.history.push_back((question, outcome.answer));
            while self.history.len() > self.state.config.voice.history_turns {
                self.history.pop_front();
            }
        }
    }

    fn on_message(&mut self, message: Message) -> Flow {
        match message {
            Message::Binary(bytes) => {
                self.on_audio(&bytes);
                Flow::Continue
            }
            Message::Text(text) => {
                match super::extract::parse_json::<ClientMessage>(text.as_bytes()) {
                    Ok(m) => self.on_command(m),
                    Err(e) => self.error("invalid_message", e.message),
                }
                Flow::Continue
            }
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
            Message::Close(_) => Flow::Close(None),
        }
    }

    fn on_command(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Ping {} => self.reply(VoiceEvent::Pong {}),
            ClientMessage::Reset {} => {
                self.history.clear();
                self.reply(VoiceEvent::Status { turn: None, stage: "reset".into(), message: "Conversation memory cleared".into() });
            }
            ClientMessage::Cancel {} => {
                self.recording = None;
                self.cancel_running();
            }
            ClientMessage::Start { sample_rate, encoding, language, voice, speak } => {
                if encoding != "pcm_s16le" {
                    return self.error("unsupported_encoding", format!("encoding `{encoding}` is not supported; send `pcm_s16le`"));
                }
                if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
                    return self.error(
                        "unsupported_sample_rate",
                        format!("sample_rate {sample_rate} is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"),
                    );
                }
                if let Some(l) = &language
                    && !(l == "auto" || (l.len() == 2 && l.chars().all(|c| c.is_ascii_lowercase())))
                {
                    return self.error("invalid_language", format!("language `{l}` must be an ISO 639-1 code like `en`, or `auto`"));
                }
                // A new utterance interrupts the answer being spoken (barge-in).
                self.cancel_running();
                let format = AudioFormat { sample_rate, language, voice, speak };
                self.begin_recording(format, Vec::new());
            }
            ClientMessage::Stop {} => match self.recording.take() {
                Some(recording) => self.finish_recording(recording, "stop"),
                None => self.error("not_recording", "`stop` without a `start`: no utterance is being recorded"),
            },
            ClientMessage::Text { text, language, voice, speak } => {
                let text = text.trim().to_owned();
                if text.is_empty() || text.len() > 4096 {
                    return self.error("invalid_text", "`text` must be 1 to 4096 bytes");
                }
                self.cancel_running();
                self.recording = None;
                self.turns += 1;
                let turn = self.turns;
                self.spawn_turn(TurnInput {
                    turn,
                    question: Question::Text(text),
                    language,
                    voice,
                    speak,
                    history: Vec::new(),
                    ended_at: Instant::now(),
                });
            }
        }
    }

    fn begin_recording(&mut self, format: AudioFormat, pre_roll: Vec<i16>) {
        self.turns += 1;
        let mut endpointer = Endpointer::new(self.state.config.voice.endpointing(), format.sample_rate);
        let _ = endpointer.push(&pre_roll);
        self.listener = None;
        self.reply(VoiceEvent::Status { turn: Some(self.turns), stage: "listening".into(), message: "Listening".into() });
        self.recording = Some(Recording { format, endpointer, samples: pre_roll, speech_reported: false });
    }

    fn on_audio(&mut self, bytes: &[u8]) {
        if !bytes.len().is_multiple_of(2) {
            return self.error("invalid_audio", "audio frames must hold whole 16-bit samples (an even number of bytes)");
        }
        let samples: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        if let Some(recording) = &mut self.recording {
            let max_samples =
                (u64::from(recording.format.sample_rate) * u64::from(self.state.config.voice.max_utterance_ms) / 1000) as usize;
            let room = max_samples.saturating_sub(recording.samples.len());
            recording.samples.extend_from_slice(&samples[..samples.len().min(room)]);
            let events = recording.endpointer.push(&samples);
            let turn = self.turns;
            if events.contains(&VadEvent::SpeechStarted) && !recording.speech_reported {
                recording.speech_reported = true;
                self.reply(VoiceEvent::Vad { turn, speech: "started".into(), reason: None });
            }
            let ended = events.iter().find_map(|e| match e {
                VadEvent::Ended(reason) => Some(*reason),
                VadEvent::SpeechStarted => None,
            });
            let ended = ended.or((room == 0).then_some(EndReason::MaxLength));
            if let Some(reason) = ended
                && let Some(recording) = self.recording.take()
            {
                self.finish_recording(recording, reason.as_str());
            }
            return;
        }
        let Some(listener) = &mut self.listener else {
            return self.error("audio_before_start", "send a `start` message (sample rate, encoding) before audio frames");
        };
        // Between turns: watch for speech to start the next utterance (and barge in).
        let keep = (listener.format.sample_rate * PRE_ROLL_MS / 1000) as usize;
        listener.pre_roll.extend(samples.iter().copied());
        while listener.pre_roll.len() > keep {
            listener.pre_roll.pop_front();
        }
        let events = listener.endpointer.push(&samples);
        if !events.contains(&VadEvent::SpeechStarted) {
            if !events.is_empty() {
                // The no-speech timeout is for utterances; a listener just keeps listening.
                listener.endpointer.reset();
            }
            return;
        }
        {
            let format = listener.format.clone();
            let pre_roll: Vec<i16> = listener.pre_roll.iter().copied().collect();
            self.cancel_running();
            self.begin_recording(format, pre_roll);
            if let Some(recording) = &mut self.recording {
                recording.speech_reported = true;
            }
            self.reply(VoiceEvent::Vad { turn: self.turns, speech: "started".into(), reason: None });
        }
    }

    fn finish_recording(&mut self, recording: Recording, reason: &str) {
        let turn = self.turns;
        let ended_at = Instant::now();
        self.reply(VoiceEvent::Vad { turn, speech: "ended".into(), reason: Some(reason.to_owned()) });
        // Audio that keeps coming is watched for the next utterance.
        let listener = Endpointer::new(self.state.config.voice.endpointing(), recording.format.sample_rate);
        self.listener = Some(Listener { format: recording.format.clone(), endpointer: listener, pre_roll: VecDeque::new() });
        if reason == EndReason::NoSpeech.as_str() || recording.samples.is_empty() {
            self.reply(VoiceEvent::Done { turn, reason: "no_speech".into(), timings: Default::default() });
            self.state.metrics.voice_turns.get_or_create(&crate::metrics::VoiceTurnLabels { reason: "no_speech".into() }).inc();
            return;
        }
        let pcm: Vec<f32> = recording.samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
        let pcm = if recording.format.sample_rate == 16_000 {
            pcm
        } else {
            match uag_models::audio::resample_mono(&pcm, recording.format.sample_rate, 16_000) {
                Ok(pcm) => pcm,
                Err(e) => {
                    self.error("invalid_audio", format!("cannot resample the audio: {e}"));
                    return;
                }
            }
        };
        let format = recording.format;
        self.spawn_turn(TurnInput {
            turn,
            question: Question::Audio(pcm),
            language: format.language,
            voice: format.voice,
            speak: format.speak,
            history: Vec::new(),
            ended_at,
        });
    }

    fn spawn_turn(&mut self, mut input: TurnInput) {
        input.history = self
            .history
            .iter()
            .flat_map(|(q, a)| [ChatTurn::new(Role::User, q.clone()), ChatTurn::new(Role::Assistant, a.clone())])
            .collect();
        let cancel = CancellationToken::new();
        let deps = TurnDeps { state: self.state.clone(), caller: self.caller.clone() };
        let turn = input.turn;
        let handle = tokio::spawn(run_turn(deps, input, self.out_tx.clone(), cancel.clone()));
        self.running = Some(RunningTurn { turn, cancel, handle });
    }

    fn cancel_running(&mut self) {
        if let Some(running) = self.running.take() {
            tracing::debug!(turn = running.turn, "voice turn interrupted");
            running.cancel.cancel();
            // The turn sends its own `done` (reason `cancelled`) and ends promptly; it is not
            // awaited here so the session keeps reading audio meanwhile.
            let tasks = self.state.tasks.clone();
            tasks.spawn(async move {
                let _ = running.handle.await;
            });
        }
    }
}

async fn send(sink: &mut futures::stream::SplitSink<WebSocket, Message>, out: VoiceOut) -> Result<(), axum::Error> {
    match out {
        VoiceOut::Event(event) => {
            let text = serde_json::to_string(&event).unwrap_or_default();
            sink.send(Message::Text(text.into())).await
        }
        VoiceOut::Audio(bytes) => sink.send(Message::Binary(bytes.into())).await,
    }
}
