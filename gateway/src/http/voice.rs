//! `GET /v1/voice`: the voice assistant over WebSocket (protocol in docs/PROTOCOL.md).
//!
//! The client sends a JSON `start` (sample rate, `pcm_s16le`, optional language and voice),
//! binary frames of little-endian 16-bit mono PCM, then `stop`, or the server's voice-activity
//! detection ends the utterance. The server answers with [`VoiceEvent`]s as JSON text and each
//! spoken sentence as one binary WAV frame (announced by an `audio` event). What a session
//! does with them (turns, barge-in, memory) is `uag-voice`'s [`VoiceSession`]; this module
//! only translates the wire shape, and [`drive`] runs the socket.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uag_voice::{Command, Endpointing, VoiceEvent, VoiceOut, VoiceSession};

use super::AppState;
use super::socket::{Flow, OnShutdown, Outgoing, SocketSession, accept_upgrade, drive};
use crate::policy::Route;

/// The voice socket as the policy sees it; each turn is decided as inference on this route.
const ROUTE: Route = Route { path: "/v1/voice", method: "GET" };

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
        /// `client`: only `stop` ends the utterance (push-to-talk); `vad` (default): a pause
        /// after speech ends it too (hands-free).
        #[serde(default)]
        endpointing: EndpointingMode,
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

/// `start`'s `endpointing`, as the wire spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EndpointingMode {
    Client,
    #[default]
    Vad,
}

impl From<ClientMessage> for Command {
    fn from(message: ClientMessage) -> Self {
        match message {
            ClientMessage::Start { sample_rate, encoding, language, voice, speak, endpointing } => {
                let endpointing = match endpointing {
                    EndpointingMode::Client => Endpointing::Client,
                    EndpointingMode::Vad => Endpointing::Vad,
                };
                Command::Start { sample_rate, encoding, language, voice, speak, endpointing }
            }
            ClientMessage::Stop {} => Command::Stop,
            ClientMessage::Text { text, language, voice, speak } => Command::Text { text, language, voice, speak },
            ClientMessage::Cancel {} => Command::Cancel,
            ClientMessage::Reset {} => Command::Reset,
            ClientMessage::Ping {} => Command::Ping,
        }
    }
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
    let ws = match accept_upgrade(&state, ws) {
        Ok(ws) => ws,
        Err(refused) => return refused.into_response(),
    };
    let tasks = state.tasks.clone();
    let caller = super::caller(&extensions, ROUTE);
    // Binary audio frames are bounded by [voice] max_frame_bytes, JSON messages by the same
    // (they are small); tungstenite closes with 1009 above it.
    let max = state.config.voice.max_frame_bytes.max(4096);
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| {
        let session_tasks = tasks.clone();
        tasks.track_future(async move {
            let mut session = VoiceSocket(VoiceSession::new(state.voice.clone(), caller, session_tasks));
            drive(socket, &state.config.server, state.shutdown.clone(), &mut session).await;
            session.0.close().await;
        })
    })
}

/// A [`VoiceSession`] on the WebSocket: JSON text for events, one binary frame per WAV.
struct VoiceSocket(VoiceSession);

fn frame(out: VoiceOut) -> Outgoing {
    match out {
        VoiceOut::Event(event) => Outgoing::Text(encode(&event)),
        VoiceOut::Audio(wav) => Outgoing::Binary(wav),
    }
}

fn encode(event: &VoiceEvent) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

impl SocketSession for VoiceSocket {
    fn greeting(&self) -> Option<Outgoing> {
        Some(Outgoing::Text(encode(&self.0.ready())))
    }

    async fn next_out(&mut self) -> Option<Outgoing> {
        Some(frame(self.0.next_out().await))
    }

    fn try_next_out(&mut self) -> Option<Outgoing> {
        self.0.try_next_out().map(frame)
    }

    fn on_text(&mut self, text: &str) -> Flow {
        match super::extract::parse_json::<ClientMessage>(text.as_bytes()) {
            Ok(message) => self.0.command(message.into()),
            Err(e) => self.0.error("invalid_message", e.message),
        }
        Flow::Continue
    }

    fn on_binary(&mut self, bytes: &[u8]) -> Flow {
        self.0.audio_le16(bytes);
        Flow::Continue
    }

    /// A spoken answer is not worth holding shutdown for.
    fn on_shutdown(&mut self) -> OnShutdown {
        OnShutdown::CloseNow
    }

    fn stop(&mut self) {
        self.0.stop();
    }
}
