//! `GET /v1/realtime`: the OpenAI Realtime API's WebSocket protocol, the part a voice client
//! needs, onto the same [`VoiceSession`] as the kiosk socket (docs/PROTOCOL.md, "Realtime").
//!
//! A client streams `pcm16` audio at 24 kHz (`input_audio_buffer.append`, base64) and either
//! lets the server's voice-activity detection end each utterance (`turn_detection` server VAD,
//! the default) or commits the buffer itself (`turn_detection: null`, then `commit`). Typed
//! questions come as `conversation.item.create` + `response.create`. The answer is the grounded
//! voice answer of the `[voice]` route: its text as transcript deltas and its speech as `pcm16`
//! at 24 kHz. `?model=` takes OpenAI's realtime model names (and `uag-voice`): all select the
//! local voice pipeline.
//!
//! Both dialects are spoken: a client that sends `OpenAI-Beta: realtime=v1` (the beta SDKs)
//! gets the beta event names (`response.audio.delta`, `conversation.item.created`), every other
//! client the current ones (`response.output_audio.delta`, `conversation.item.added`); both
//! shapes of `session.update` are read either way.

use std::collections::{HashMap, VecDeque};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use uag_voice::{Command, Endpointing, VoiceEvent, VoiceOut, VoiceSession};

use super::AppState;
use super::socket::{Flow, OnShutdown, Outgoing, SocketSession, accept_upgrade, drive};
use crate::error::ApiError;
use crate::policy::Route;

const ROUTE: Route = Route { path: "/v1/realtime", method: "GET" };
/// The one audio format of the protocol this socket speaks: 16-bit mono PCM at 24 kHz.
const RATE: u32 = 24_000;
/// The model name reported when the client named none.
const DEFAULT_MODEL: &str = "uag-voice";

#[derive(Debug, Deserialize)]
pub struct RealtimeQuery {
    model: Option<String>,
}

/// Whether `model` names the local voice pipeline: OpenAI's realtime models
/// (`gpt-realtime`, `gpt-4o-realtime-preview`, `gpt-4o-mini-realtime-preview-2024-12-17` ...)
/// or `uag-voice`.
fn is_realtime_model(model: &str) -> bool {
    model == DEFAULT_MODEL || (model.starts_with("gpt-") && model.contains("realtime"))
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<RealtimeQuery>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let model = query.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    if !is_realtime_model(&model) {
        return ApiError::not_found(
            "model_not_found",
            format!("model `{model}` is not a realtime model here; use `gpt-realtime` (or any OpenAI realtime name) or `uag-voice`"),
        )
        .into_response();
    }
    let ws = match accept_upgrade(&state, ws) {
        Ok(ws) => ws,
        Err(refused) => return refused.into_response(),
    };
    let beta = headers.get_all("openai-beta").iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("realtime=v1"));
    let tasks = state.tasks.clone();
    let caller = super::caller(&extensions, ROUTE);
    // A base64 append of 100 ms at 24 kHz is 6.4 KB; allow what the voice socket allows for one
    // binary frame, in base64, plus the JSON around it.
    let max = (state.config.voice.max_frame_bytes.max(4096) * 4 / 3) + 4096;
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| {
        let session_tasks = tasks.clone();
        tasks.track_future(async move {
            let session = VoiceSession::new(state.voice.clone(), caller, session_tasks);
            let mut socket_session = RealtimeSocket::new(session, model, beta);
            drive(socket, &state.config.server, state.shutdown.clone(), &mut socket_session).await;
            socket_session.voice.close().await;
        })
    })
}

/// The event names that differ between the beta protocol and the current one.
#[derive(Debug, Clone, Copy)]
struct Names {
    item_created: &'static str,
    audio_delta: &'static str,
    audio_done: &'static str,
    transcript_delta: &'static str,
    transcript_done: &'static str,
    text_delta: &'static str,
    text_done: &'static str,
}

const BETA: Names = Names {
    item_created: "conversation.item.created",
    audio_delta: "response.audio.delta",
    audio_done: "response.audio.done",
    transcript_delta: "response.audio_transcript.delta",
    transcript_done: "response.audio_transcript.done",
    text_delta: "response.text.delta",
    text_done: "response.text.done",
};

const CURRENT: Names = Names {
    item_created: "conversation.item.added",
    audio_delta: "response.output_audio.delta",
    audio_done: "response.output_audio.done",
    transcript_delta: "response.output_audio_transcript.delta",
    transcript_done: "response.output_audio_transcript.done",
    text_delta: "response.output_text.delta",
    text_done: "response.output_text.done",
};

/// What the client configured with `session.update`.
#[derive(Debug, Clone)]
struct SessionConfig {
    /// Speak the answers (`audio` among the output modalities).
    speak: bool,
    voice: Option<String>,
    instructions: String,
    endpointing: Endpointing,
    silence_ms: u32,
    transcription: Option<String>,
}

/// The response to one turn, from its first output to `response.done`.
#[derive(Debug)]
struct ResponseState {
    id: String,
    item_id: String,
    text: String,
    speak: bool,
}

/// What this socket knows of one turn of the session.
#[derive(Debug, Default)]
struct TurnState {
    /// The user's audio item (absent for typed questions).
    user_item: Option<String>,
    response: Option<ResponseState>,
}

struct RealtimeSocket {
    voice: VoiceSession,
    model: String,
    names: Names,
    beta: bool,
    config: SessionConfig,
    session_id: String,
    /// Whether the session is recording the appended audio (a `start` was given for it).
    started: bool,
    /// Audio appended so far, in ms (for `audio_start_ms` / `audio_end_ms`).
    audio_ms: u64,
    /// Typed user messages waiting for `response.create`.
    pending_text: Vec<String>,
    /// A committed utterance is being answered already: the client's `response.create` for it
    /// asks for what is coming anyway.
    answering_commit: bool,
    last_item: Option<String>,
    turns: HashMap<u32, TurnState>,
    /// The turn and sample rate of the WAV that the session sends next (announced by `audio`).
    pending_audio: Option<(u32, u32)>,
    /// The sentence being converted to 24 kHz PCM, for its turn.
    converting: Option<(u32, tokio::task::JoinHandle<Option<Vec<u8>>>)>,
    queue: VecDeque<Outgoing>,
    counter: u64,
}

impl RealtimeSocket {
    fn new(voice: VoiceSession, model: String, beta: bool) -> Self {
        let silence_ms = match voice.ready() {
            VoiceEvent::Ready { silence_ms, .. } => silence_ms,
            _ => 700,
        };
        let mut socket = Self {
            voice,
            model,
            names: if beta { BETA } else { CURRENT },
            beta,
            config: SessionConfig {
                speak: true,
                voice: None,
                instructions: String::new(),
                endpointing: Endpointing::Vad,
                silence_ms,
                transcription: Some("whisper-1".into()),
            },
            session_id: String::new(),
            started: false,
            audio_ms: 0,
            pending_text: Vec::new(),
            answering_commit: false,
            last_item: None,
            turns: HashMap::new(),
            pending_audio: None,
            converting: None,
            queue: VecDeque::new(),
            counter: 0,
        };
        socket.session_id = socket.id("sess");
        socket
    }

    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_uag{:06}", self.counter)
    }

    fn emit(&mut self, kind: &str, mut body: Value) {
        let event_id = self.id("event");
        if let Value::Object(map) = &mut body {
            map.insert("type".into(), kind.into());
            map.insert("event_id".into(), event_id.into());
        }
        self.queue.push_back(Outgoing::Text(body.to_string()));
    }

    fn error(&mut self, code: &str, message: impl Into<String>) {
        let message = message.into();
        self.emit("error", json!({"error": {"type": "invalid_request_error", "code": code, "message": message, "param": null}}));
    }

    fn session_object(&self) -> Value {
        let turn_detection = match self.config.endpointing {
            Endpointing::Vad => json!({"type": "server_vad", "silence_duration_ms": self.config.silence_ms, "create_response": true}),
            Endpointing::Client => Value::Null,
        };
        let transcription = self.config.transcription.as_ref().map_or(Value::Null, |m| json!({"model": m}));
        let voice = self.config.voice.clone().unwrap_or_else(|| "alloy".into());
        let modalities: Vec<&str> = if self.config.speak { vec!["audio"] } else { vec!["text"] };
        if self.beta {
            let modalities: Vec<&str> = if self.config.speak { vec!["audio", "text"] } else { vec!["text"] };
            json!({
                "id": self.session_id, "object": "realtime.session", "model": self.model,
                "modalities": modalities, "instructions": self.config.instructions, "voice": voice,
                "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                "input_audio_transcription": transcription, "turn_detection": turn_detection, "tools": [],
            })
        } else {
            json!({
                "type": "realtime", "id": self.session_id, "object": "realtime.session", "model": self.model,
                "output_modalities": modalities, "instructions": self.config.instructions,
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": RATE}, "transcription": transcription, "turn_detection": turn_detection},
                    "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": voice},
                },
                "tools": [],
            })
        }
    }

    fn on_client_event(&mut self, event: Value) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        match kind.as_str() {
            "session.update" => self.session_update(event.get("session").unwrap_or(&Value::Null)),
            "input_audio_buffer.append" => self.append(&event),
            "input_audio_buffer.commit" => self.commit(),
            "input_audio_buffer.clear" => {
                self.voice.command(Command::DiscardAudio);
                self.started = false;
                self.emit("input_audio_buffer.cleared", json!({}));
            }
            "conversation.item.create" => self.item_create(event.get("item").unwrap_or(&Value::Null)),
            "response.create" => self.response_create(),
            "response.cancel" => self.voice.command(Command::Cancel),
            "" => self.error("invalid_event", "every client event needs a `type`"),
            other => self.error(
                "unsupported_event",
                format!(
                    "`{other}` is not supported here; this socket takes session.update, input_audio_buffer.append/commit/clear, \
                     conversation.item.create, response.create and response.cancel"
                ),
            ),
        }
    }

    /// Reads both shapes: the beta one (`modalities`, `voice`, `turn_detection`,
    /// `input_audio_format`) and the current one (`output_modalities`, `audio.input/output`).
    fn session_update(&mut self, session: &Value) {
        let mut config = self.config.clone();
        let input = session.pointer("/audio/input");
        let output = session.pointer("/audio/output");
        if let Some(modalities) = session.get("output_modalities").or_else(|| session.get("modalities")).and_then(Value::as_array) {
            config.speak = modalities.iter().any(|m| m == "audio");
        }
        if let Some(voice) = output.and_then(|o| o.get("voice")).or_else(|| session.get("voice")).and_then(Value::as_str) {
            config.voice = Some(voice.to_owned());
        }
        if let Some(instructions) = session.get("instructions").and_then(Value::as_str) {
            config.instructions = instructions.to_owned();
        }
        let detection = input.and_then(|i| i.get("turn_detection")).or_else(|| session.get("turn_detection"));
        match detection {
            None => {}
            Some(Value::Null) => config.endpointing = Endpointing::Client,
            Some(d) => match d.get("type").and_then(Value::as_str) {
                Some("server_vad" | "semantic_vad") | None => config.endpointing = Endpointing::Vad,
                Some(other) => {
                    return self
                        .error("invalid_value", format!("turn_detection type `{other}` is not supported; use `server_vad` or null"));
                }
            },
        }
        let transcription = input.and_then(|i| i.get("transcription")).or_else(|| session.get("input_audio_transcription"));
        match transcription {
            None => {}
            Some(Value::Null) => config.transcription = None,
            Some(t) => config.transcription = Some(t.get("model").and_then(Value::as_str).unwrap_or("whisper-1").to_owned()),
        }
        for format in [input.and_then(|i| i.get("format")), output.and_then(|o| o.get("format"))].into_iter().flatten() {
            let kind = format.get("type").and_then(Value::as_str).unwrap_or("audio/pcm");
            let rate = format.get("rate").and_then(Value::as_u64).unwrap_or(u64::from(RATE));
            if kind != "audio/pcm" || rate != u64::from(RATE) {
                return self
                    .error("invalid_value", format!("audio format {kind} at {rate} Hz is not supported; use audio/pcm at 24000 Hz"));
            }
        }
        for key in ["input_audio_format", "output_audio_format"] {
            if let Some(f) = session.get(key).and_then(Value::as_str)
                && f != "pcm16"
            {
                return self.error("invalid_value", format!("{key} `{f}` is not supported; use pcm16"));
            }
        }
        if session.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
            return self.error("invalid_value", "tools are not supported by the local voice pipeline");
        }
        if config.endpointing != self.config.endpointing && self.started {
            // The utterance being recorded was started under the other mode.
            self.voice.command(Command::DiscardAudio);
            self.started = false;
        }
        self.config = config;
        let session = self.session_object();
        self.emit("session.updated", json!({"session": session}));
    }

    fn append(&mut self, event: &Value) {
        let Some(audio) = event.get("audio").and_then(Value::as_str) else {
            return self.error("missing_required_parameter", "input_audio_buffer.append needs `audio` (base64 pcm16)");
        };
        let bytes = match BASE64.decode(audio) {
            Ok(bytes) => bytes,
            Err(e) => return self.error("invalid_value", format!("`audio` is not valid base64: {e}")),
        };
        if !self.started {
            self.started = true;
            self.voice.command(Command::Start {
                sample_rate: RATE,
                encoding: "pcm_s16le".into(),
                language: None,
                voice: self.config.voice.clone(),
                speak: self.config.speak,
                endpointing: self.config.endpointing,
            });
        }
        self.audio_ms += bytes.len() as u64 * 1000 / (u64::from(RATE) * 2);
        self.voice.audio_le16(&bytes);
    }

    fn commit(&mut self) {
        if !self.started {
            return self.error("input_audio_buffer_commit_empty", "the input audio buffer is empty; append audio before committing");
        }
        if self.config.endpointing == Endpointing::Client {
            // Push-to-talk: the next append starts a new utterance.
            self.started = false;
        }
        self.answering_commit = true;
        self.voice.command(Command::Stop);
    }

    fn item_create(&mut self, item: &Value) {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
        if kind != "message" || role != "user" {
            return self.error("invalid_value", "only user messages with input_text content can be added to the conversation here");
        }
        let texts: Vec<&str> = item
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("input_text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect();
        if texts.is_empty() {
            return self.error("invalid_value", "the message needs at least one `input_text` content part");
        }
        let text = texts.join(" ");
        let id = item.get("id").and_then(Value::as_str).map_or_else(|| self.id("item"), str::to_owned);
        self.pending_text.push(text.clone());
        let previous = self.last_item.replace(id.clone());
        let item = json!({"id": id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                          "content": [{"type": "input_text", "text": text}]});
        self.emit(self.names.item_created, json!({"previous_item_id": previous, "item": item}));
        if !self.beta {
            self.emit("conversation.item.done", json!({"previous_item_id": previous, "item": item}));
        }
    }

    fn response_create(&mut self) {
        if !self.pending_text.is_empty() {
            let text = std::mem::take(&mut self.pending_text).join("\n");
            self.voice.command(Command::Text { text, language: None, voice: self.config.voice.clone(), speak: self.config.speak });
        } else if std::mem::take(&mut self.answering_commit) {
            // The committed utterance is already being answered.
        } else {
            self.error("no_input", "nothing to respond to: add a user message or commit audio first");
        }
    }

    fn turn(&mut self, turn: u32) -> &mut TurnState {
        self.turns.entry(turn).or_default()
    }

    /// The id of `turn`'s user audio item, made when first needed.
    fn user_item(&mut self, turn: u32) -> String {
        if let Some(id) = &self.turn(turn).user_item {
            return id.clone();
        }
        let id = self.id("item");
        self.turn(turn).user_item = Some(id.clone());
        id
    }

    /// Opens the response of `turn` (its first output): `response.created`, the assistant item
    /// and its content part.
    fn begin_response(&mut self, turn: u32) {
        if self.turns.get(&turn).is_some_and(|t| t.response.is_some()) {
            return;
        }
        self.answering_commit = false;
        let (id, item_id, speak) = (self.id("resp"), self.id("item"), self.config.speak);
        let response = json!({"id": id, "object": "realtime.response", "status": "in_progress", "output": []});
        self.emit("response.created", json!({"response": response}));
        let previous = self.last_item.replace(item_id.clone());
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress", "content": []});
        self.emit("response.output_item.added", json!({"response_id": id, "output_index": 0, "item": item}));
        if !self.beta {
            self.emit(self.names.item_created, json!({"previous_item_id": previous, "item": item}));
        }
        let part = if speak { json!({"type": "audio", "transcript": ""}) } else { json!({"type": "text", "text": ""}) };
        self.emit(
            "response.content_part.added",
            json!({"response_id": id, "item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
        );
        self.turn(turn).response = Some(ResponseState { id, item_id, text: String::new(), speak });
    }

    /// Closes a response: the `.done` events and `response.done` with the turn's outcome.
    fn end_response(&mut self, response: ResponseState, reason: &str) {
        let ResponseState { id, item_id, text, speak } = response;
        let at = json!({"response_id": id, "item_id": item_id, "output_index": 0, "content_index": 0});
        let with = |mut v: Value, key: &str, value: Value| {
            if let Value::Object(map) = &mut v {
                map.insert(key.into(), value);
            }
            v
        };
        let part = if speak {
            self.emit(self.names.audio_done, at.clone());
            self.emit(self.names.transcript_done, with(at.clone(), "transcript", text.clone().into()));
            json!({"type": "audio", "transcript": text})
        } else {
            self.emit(self.names.text_done, with(at.clone(), "text", text.clone().into()));
            json!({"type": "text", "text": text})
        };
        self.emit("response.content_part.done", with(at, "part", part.clone()));
        let status = match reason {
            "answered" => "completed",
            "cancelled" => "cancelled",
            _ => "failed",
        };
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                          "status": if status == "completed" { "completed" } else { "incomplete" }, "content": [part]});
        self.emit("response.output_item.done", json!({"response_id": id, "output_index": 0, "item": item}));
        let response = json!({"id": id, "object": "realtime.response", "status": status, "output": [item]});
        self.emit("response.done", json!({"response": response}));
    }

    /// Translates one event of the session into the protocol's events (queued).
    fn on_voice_event(&mut self, event: VoiceEvent) {
        match event {
            VoiceEvent::Vad { turn, speech, reason } => match (speech.as_str(), reason.as_deref()) {
                ("started", _) => {
                    let item_id = self.user_item(turn);
                    self.emit("input_audio_buffer.speech_started", json!({"audio_start_ms": self.audio_ms, "item_id": item_id}));
                }
                (_, Some("no_speech")) => {}
                (_, reason) => {
                    let item_id = self.user_item(turn);
                    if reason != Some("stop") {
                        self.emit("input_audio_buffer.speech_stopped", json!({"audio_end_ms": self.audio_ms, "item_id": item_id}));
                    }
                    let previous = self.last_item.replace(item_id.clone());
                    self.emit("input_audio_buffer.committed", json!({"previous_item_id": previous, "item_id": item_id}));
                    let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                                      "content": [{"type": "input_audio", "transcript": null}]});
                    self.emit(self.names.item_created, json!({"previous_item_id": previous, "item": item}));
                }
            },
            VoiceEvent::Transcript { turn, text, .. } => {
                if let Some(item_id) = self.turns.get(&turn).and_then(|t| t.user_item.clone())
                    && self.config.transcription.is_some()
                {
                    self.emit(
                        "conversation.item.input_audio_transcription.completed",
                        json!({"item_id": item_id, "content_index": 0, "transcript": text}),
                    );
                }
            }
            VoiceEvent::Delta { turn, text } => {
                self.begin_response(turn);
                let Some(response) = self.turns.get_mut(&turn).and_then(|t| t.response.as_mut()) else { return };
                response.text.push_str(&text);
                let kind = if response.speak { self.names.transcript_delta } else { self.names.text_delta };
                let body =
                    json!({"response_id": response.id, "item_id": response.item_id, "output_index": 0, "content_index": 0, "delta": text});
                self.emit(kind, body);
            }
            VoiceEvent::Audio { turn, sample_rate, .. } => {
                self.begin_response(turn);
                self.pending_audio = Some((turn, sample_rate));
            }
            VoiceEvent::Done { turn, reason, .. } => {
                if reason == "answered" {
                    self.begin_response(turn);
                }
                if let Some(response) = self.turns.remove(&turn).and_then(|t| t.response) {
                    self.end_response(response, &reason);
                }
            }
            VoiceEvent::Error { code, message, .. } => self.error(&code, message),
            VoiceEvent::Status { .. } | VoiceEvent::Sources { .. } | VoiceEvent::Ready { .. } | VoiceEvent::Pong {} => {}
        }
    }
}

/// 16-bit mono PCM at 24 kHz from one of the session's WAV sentences (its canonical 44-byte
/// header, at `rate`). Resampling runs on the blocking pool, never on a tokio worker.
fn wav_to_pcm24k(wav: &[u8], rate: u32) -> Option<Vec<u8>> {
    let samples = uag_models::audio::pcm16le_to_f32(wav.get(44..)?);
    let resampled = uag_models::audio::resample_mono(&samples, rate, RATE).ok()?;
    Some(uag_models::audio::to_pcm16le(&resampled))
}

impl RealtimeSocket {
    /// The audio delta of `turn`'s response carrying `pcm`.
    fn audio_delta(&mut self, turn: u32, pcm: &[u8]) {
        let Some(response) = self.turns.get(&turn).and_then(|t| t.response.as_ref()) else { return };
        let body = json!({"response_id": response.id, "item_id": response.item_id, "output_index": 0, "content_index": 0,
                          "delta": BASE64.encode(pcm)});
        self.emit(self.names.audio_delta, body);
    }
}

impl SocketSession for RealtimeSocket {
    fn greeting(&self) -> Option<Outgoing> {
        let event = json!({"type": "session.created", "event_id": "event_uag000000", "session": self.session_object()});
        Some(Outgoing::Text(event.to_string()))
    }

    async fn next_out(&mut self) -> Option<Outgoing> {
        if let Some(out) = self.queue.pop_front() {
            return Some(out);
        }
        // A sentence being converted goes out before anything the session says after it. The
        // conversion is a task held here, so a poll dropped by the driver loses nothing.
        if let Some((_, conversion)) = &mut self.converting {
            let pcm = conversion.await.ok().flatten();
            let (turn, _) = self.converting.take()?;
            match pcm {
                Some(pcm) => self.audio_delta(turn, &pcm),
                None => tracing::warn!("a spoken sentence could not be converted to 24 kHz PCM; it is left out"),
            }
            return self.queue.pop_front();
        }
        match self.voice.next_out().await {
            VoiceOut::Event(event) => self.on_voice_event(event),
            VoiceOut::Audio(wav) => {
                if let Some((turn, rate)) = self.pending_audio.take() {
                    self.converting = Some((turn, tokio::task::spawn_blocking(move || wav_to_pcm24k(&wav, rate))));
                }
            }
        }
        self.queue.pop_front()
    }

    fn try_next_out(&mut self) -> Option<Outgoing> {
        if let Some(out) = self.queue.pop_front() {
            return Some(out);
        }
        // Closing: events are flushed, audio not (it would need resampling).
        while let Some(out) = self.voice.try_next_out() {
            if let VoiceOut::Event(event) = out {
                self.on_voice_event(event);
            }
            if let Some(out) = self.queue.pop_front() {
                return Some(out);
            }
        }
        None
    }

    fn on_text(&mut self, text: &str) -> Flow {
        match serde_json::from_str::<Value>(text) {
            Ok(event @ Value::Object(_)) => self.on_client_event(event),
            Ok(_) => self.error("invalid_event", "a client event is a JSON object with a `type`"),
            Err(e) => self.error("invalid_event", format!("not JSON: {e}")),
        }
        Flow::Continue
    }

    fn on_binary(&mut self, _bytes: &[u8]) -> Flow {
        self.error("invalid_event", "this protocol sends audio as base64 in `input_audio_buffer.append`, not as binary frames");
        Flow::Continue
    }

    fn on_shutdown(&mut self) -> OnShutdown {
        OnShutdown::CloseNow
    }

    fn stop(&mut self) {
        self.voice.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_realtime_names_select_the_local_pipeline() {
        for model in ["gpt-realtime", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview-2024-12-17", "uag-voice"] {
            assert!(is_realtime_model(model), "{model}");
        }
        for model in ["gpt-4o", "whisper-1", "realtime"] {
            assert!(!is_realtime_model(model), "{model}");
        }
    }
}
