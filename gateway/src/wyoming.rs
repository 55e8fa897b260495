//! The Wyoming protocol server (`[wyoming]`), so Home Assistant's voice stack (Assist, Voice PE
//! and Wyoming satellites) can use uag's speech recognition, voices and knowledge base.
//!
//! Wire format (the `wyoming` Python package, which Home Assistant uses): each event is one JSON
//! header line `{"type", "data"?, "data_length"?, "payload_length"?, "version"?}`, then
//! `data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload (PCM
//! audio). Programs served:
//!
//! - `describe` -> `info`: an `asr` program (installed speech models and their languages), a
//!   `tts` program (installed Piper voices; espeak-ng speaks other languages) and a `handle`
//!   program (the knowledge-base assistant).
//! - `transcribe`? + `audio-start` / `audio-chunk`* / `audio-stop` -> `transcript`.
//! - `synthesize` -> `audio-start` / `audio-chunk`* / `audio-stop`; streamed text
//!   (`synthesize-start` / `synthesize-chunk`* / `synthesize-stop`) is spoken sentence by
//!   sentence as it arrives, then `synthesize-stopped`.
//! - `transcript` -> `handled` with the grounded answer (the `[voice]` route), or
//!   `not-handled` saying why.
//! - `ping` -> `pong`. Unknown events are ignored, as Wyoming servers do.
//!
//! The steps are uag-voice's ([`uag_voice::speech`]); this module only speaks the wire format.
//! A Wyoming port carries no credentials, so it binds to loopback unless `allow_remote` is set
//! (docs/DEPLOY.md); its callers are anonymous, limited by their address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uag_models::manifest::ModelKind;
use uag_voice::speech::{self, asr_languages};
use uag_voice::{SpeechChunker, VoiceDeps};

use crate::error::PublicError;
use crate::pipeline::Caller;
use crate::policy::Route;
use crate::provider::caller_key;
use crate::ratelimit::RateLimiter;

/// The protocol version written in each header (the `wyoming` package's own numbering).
const PROTOCOL_VERSION: &str = "1.10.2";
/// Longest header line a client may send.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Largest `data` block and payload (an audio chunk is a few KiB).
const MAX_BLOCK_BYTES: usize = 1024 * 1024;
/// Samples per `audio-chunk` sent (what wyoming-piper sends).
const SAMPLES_PER_CHUNK: usize = 1024;
/// Longest text a `synthesize` may carry.
const MAX_TEXT_BYTES: usize = 4096;
/// A silent client is dropped after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How a Wyoming request appears to the policy and in logs.
const ROUTE: Route = Route { path: "wyoming", method: "TCP" };

/// `[wyoming]`: off unless the section is present.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WyomingConfig {
    /// Address of the Wyoming server (Home Assistant's Wyoming integration connects to it).
    pub listen: String,
    /// Accept clients beyond this machine. A Wyoming port carries no credentials: anyone who
    /// reaches it can use the speech models and the knowledge base.
    pub allow_remote: bool,
    /// Longest utterance accepted for transcription, in seconds.
    pub max_audio_seconds: u32,
}

impl Default for WyomingConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:10300".into(), allow_remote: false, max_audio_seconds: 30 }
    }
}

impl WyomingConfig {
    /// Checks what types cannot; the error is (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let addr: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| ("wyoming.listen".to_owned(), format!("`{}` is not an address like 127.0.0.1:10300", self.listen)))?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err((
                "wyoming.listen".to_owned(),
                format!(
                    "`{}` accepts clients beyond this machine, and a Wyoming port carries no credentials; \
                     set `allow_remote = true` to allow that (docs/DEPLOY.md), or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        if !(1..=120).contains(&self.max_audio_seconds) {
            return Err(("wyoming.max_audio_seconds".to_owned(), "must be between 1 and 120".to_owned()));
        }
        Ok(())
    }
}

/// One Wyoming event.
#[derive(Debug, Clone, PartialEq)]
pub struct WyEvent {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl WyEvent {
    fn new(kind: &str, data: Value) -> Self {
        let data = match data {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self { kind: kind.to_owned(), data, payload: Vec::new() }
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid event: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    data_length: Option<usize>,
    #[serde(default)]
    payload_length: Option<usize>,
}

/// Reads one event; `Closed` at a clean end of stream.
pub async fn read_event<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<WyEvent, WireError> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(MAX_HEADER_BYTES).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Err(WireError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if read as u64 >= MAX_HEADER_BYTES {
            WireError::Invalid(format!("header line longer than {MAX_HEADER_BYTES} bytes"))
        } else {
            WireError::Closed
        });
    }
    let header: Header = serde_json::from_slice(&line).map_err(|e| WireError::Invalid(format!("header is not valid JSON: {e}")))?;
    let mut data = header.data.unwrap_or_default();
    if let Some(len) = header.data_length.filter(|l| *l > 0) {
        let block = read_block(reader, len).await?;
        let extra: Map<String, Value> =
            serde_json::from_slice(&block).map_err(|e| WireError::Invalid(format!("data is not a JSON object: {e}")))?;
        data.extend(extra);
    }
    let payload = match header.payload_length.filter(|l| *l > 0) {
        Some(len) => read_block(reader, len).await?,
        None => Vec::new(),
    };
    Ok(WyEvent { kind: header.kind, data, payload })
}

async fn read_block<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, len: usize) -> Result<Vec<u8>, WireError> {
    if len > MAX_BLOCK_BYTES {
        return Err(WireError::Invalid(format!("a block of {len} bytes is over the limit of {MAX_BLOCK_BYTES}")));
    }
    let mut block = vec![0; len];
    reader.read_exact(&mut block).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    })?;
    Ok(block)
}

/// Writes one event as the `wyoming` package does: header line, data block, payload.
pub async fn write_event<W: AsyncWrite + Unpin>(writer: &mut W, event: &WyEvent) -> std::io::Result<()> {
    let mut header = Map::new();
    header.insert("type".into(), Value::String(event.kind.clone()));
    header.insert("version".into(), Value::String(PROTOCOL_VERSION.into()));
    let data = if event.data.is_empty() { None } else { Some(serde_json::to_vec(&event.data).unwrap_or_default()) };
    if let Some(data) = &data {
        header.insert("data_length".into(), Value::from(data.len()));
    }
    if !event.payload.is_empty() {
        header.insert("payload_length".into(), Value::from(event.payload.len()));
    }
    let mut bytes = serde_json::to_vec(&header).unwrap_or_default();
    bytes.push(b'\n');
    if let Some(data) = data {
        bytes.extend(data);
    }
    bytes.extend_from_slice(&event.payload);
    writer.write_all(&bytes).await
}

/// Accepts Wyoming clients until `shutdown`; each connection runs on `tasks` (so shutdown
/// waits for it) and ends when the server shuts down.
pub async fn serve(
    listener: TcpListener,
    config: WyomingConfig,
    voice: VoiceDeps,
    limiter: Option<Arc<RateLimiter>>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let Some((stream, peer)) = crate::listener::accept_until_stopped(&listener, &shutdown, "wyoming").await else { return };
        let (voice, limiter, shutdown) = (voice.clone(), limiter.clone(), shutdown.clone());
        let max_audio_seconds = config.max_audio_seconds;
        tasks.spawn(async move {
            // The connection is one request for the caller's limits, as a WebSocket upgrade is;
            // each transcription, synthesis and question on it is one more.
            let limits = match &limiter {
                Some(limiter) => match limiter.admit_request(caller_key(None, Some(peer.ip())), ROUTE.path).await {
                    Ok((limits, _)) => Some(limits),
                    Err(e) => {
                        let e = PublicError::from(&e);
                        let mut stream = stream;
                        let _ = write_event(&mut stream, &error(e.code, &e.message)).await;
                        return;
                    }
                },
                None => None,
            };
            let connection =
                Connection::new(voice, Caller { identity: None, limits, peer: Some(peer.ip()), route: ROUTE }, max_audio_seconds);
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection.run(stream) => {}
            }
        });
    }
}

/// Audio being received for transcription.
struct Incoming {
    rate: u32,
    channels: u16,
    samples: Vec<i16>,
}

/// Streamed synthesis in progress (`synthesize-start` .. `synthesize-stop`).
struct Streaming {
    chunker: SpeechChunker,
    voice: Option<String>,
    language: Option<String>,
    /// The `audio-start` was sent (on the first spoken sentence).
    started: bool,
}

struct Connection {
    voice: VoiceDeps,
    caller: Caller,
    language: Option<String>,
    asr_model: Option<String>,
    audio: Option<Incoming>,
    streaming: Option<Streaming>,
    max_audio_seconds: u32,
}

impl Connection {
    fn new(voice: VoiceDeps, caller: Caller, max_audio_seconds: u32) -> Self {
        Self { voice, caller, language: None, asr_model: None, audio: None, streaming: None, max_audio_seconds }
    }

    async fn run(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        loop {
            let event = match tokio::time::timeout(IDLE_TIMEOUT, read_event(&mut reader)).await {
                Err(_) | Ok(Err(WireError::Closed)) => return,
                Ok(Err(WireError::Invalid(why))) => {
                    let _ = write_event(&mut write, &error("invalid_event", &why)).await;
                    return;
                }
                Ok(Err(WireError::Io(e))) => {
                    tracing::debug!(error = %e, "wyoming read failed");
                    return;
                }
                Ok(Ok(event)) => event,
            };
            for reply in self.handle(event).await {
                if write_event(&mut write, &reply).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, event: WyEvent) -> Vec<WyEvent> {
        match event.kind.as_str() {
            "describe" => vec![self.info()],
            "ping" => vec![WyEvent::new("pong", json!({"text": event.str("text")}))],
            "transcribe" => {
                self.language = event.str("language").map(str::to_owned);
                self.asr_model = event.str("name").filter(|n| *n != "uag-asr").map(str::to_owned);
                Vec::new()
            }
            "audio-start" => match audio_format(&event) {
                Ok((rate, channels)) => {
                    self.audio = Some(Incoming { rate, channels, samples: Vec::new() });
                    Vec::new()
                }
                Err(why) => vec![error("unsupported_audio_format", &why)],
            },
            "audio-chunk" => self.audio_chunk(&event),
            "audio-stop" => match self.admit().await {
                Ok(()) => self.transcribe().await,
                Err(refused) => {
                    self.audio = None;
                    vec![refused]
                }
            },
            "synthesize" if self.streaming.is_none() => match self.admit().await {
                Ok(()) => self.synthesize(&event).await,
                Err(refused) => vec![refused],
            },
            // A streaming client sends `synthesize` too, for older servers; the stream is spoken.
            "synthesize" => Vec::new(),
            "synthesize-start" => {
                if let Err(refused) = self.admit().await {
                    return vec![refused];
                }
                let (voice, language) = requested_voice(&event);
                self.streaming = Some(Streaming { chunker: SpeechChunker::new(0), voice, language, started: false });
                Vec::new()
            }
            "synthesize-chunk" => {
                let text = event.str("text").unwrap_or_default().to_owned();
                let sentences = match &mut self.streaming {
                    Some(streaming) => streaming.chunker.push(&text),
                    None => return vec![error("not_streaming", "`synthesize-chunk` without `synthesize-start`")],
                };
                self.speak_stream(sentences, false).await
            }
            "synthesize-stop" => {
                let rest = match &mut self.streaming {
                    Some(streaming) => streaming.chunker.finish(),
                    None => return vec![error("not_streaming", "`synthesize-stop` without `synthesize-start`")],
                };
                self.speak_stream(rest.into_iter().collect(), true).await
            }
            "transcript" => self.answer(&event).await,
            other => {
                tracing::debug!(event = other, "wyoming event ignored");
                Vec::new()
            }
        }
    }

    /// Counts one request against the caller's limits; the refusal as an `error` event.
    async fn admit(&self) -> Result<(), WyEvent> {
        self.voice.pipeline.admit(&self.caller).await.map_err(|e| {
            let e = PublicError::from(e);
            error(e.code, &e.message)
        })
    }

    fn audio_chunk(&mut self, event: &WyEvent) -> Vec<WyEvent> {
        if self.audio.is_none() {
            // Chunks without `audio-start` say their format in every chunk.
            match audio_format(event) {
                Ok((rate, channels)) => self.audio = Some(Incoming { rate, channels, samples: Vec::new() }),
                Err(why) => return vec![error("unsupported_audio_format", &why)],
            }
        }
        let max_seconds = self.max_audio_seconds;
        let Some(audio) = &mut self.audio else { return Vec::new() };
        let room = (audio.rate as usize * max_seconds as usize).saturating_sub(audio.samples.len());
        let frame = 2 * usize::from(audio.channels);
        // Mono: the first channel of each frame.
        audio.samples.extend(event.payload.chunks_exact(frame).take(room).map(|f| i16::from_le_bytes([f[0], f[1]])));
        Vec::new()
    }

    async fn transcribe(&mut self) -> Vec<WyEvent> {
        let Some(audio) = self.audio.take() else { return vec![error("no_audio", "`audio-stop` without audio")] };
        // Up to `max_audio_seconds` of audio: resampled on the blocking pool, not this worker.
        let pcm = match speech::to_16k_off_worker(audio.samples, audio.rate).await {
            Ok(pcm) => pcm,
            Err(e) => return vec![error("unsupported_audio_format", &e)],
        };
        let language = self.language.take();
        match speech::transcribe(&self.voice, pcm, language, self.asr_model.as_deref()).await {
            Ok(heard) => vec![WyEvent::new("transcript", json!({"text": heard.text, "language": heard.language}))],
            Err(e) => vec![error(e.code, &e.message)],
        }
    }

    async fn synthesize(&mut self, event: &WyEvent) -> Vec<WyEvent> {
        let text = event.str("text").unwrap_or_default();
        if text.len() > MAX_TEXT_BYTES {
            return vec![error("text_too_long", &format!("`text` is longer than {MAX_TEXT_BYTES} bytes; stream it"))];
        }
        let (voice, language) = requested_voice(event);
        match speech::synthesize(&self.voice, text, voice.as_deref(), language.as_deref()).await {
            Ok(spoken) => {
                let mut out = vec![audio_start(spoken.sample_rate)];
                out.extend(audio_chunks(&spoken.samples, spoken.sample_rate));
                out.push(WyEvent::new("audio-stop", json!({})));
                out
            }
            Err(e) => vec![error(e.code, &e.message)],
        }
    }

    /// Speaks the sentences of a stream; at its end, closes the audio and says so.
    async fn speak_stream(&mut self, sentences: Vec<String>, last: bool) -> Vec<WyEvent> {
        let mut out = Vec::new();
        let Some(streaming) = &mut self.streaming else { return out };
        for sentence in sentences {
            match speech::synthesize(&self.voice, &sentence, streaming.voice.as_deref(), streaming.language.as_deref()).await {
                Ok(spoken) => {
                    if !streaming.started {
                        streaming.started = true;
                        out.push(audio_start(spoken.sample_rate));
                    }
                    out.extend(audio_chunks(&spoken.samples, spoken.sample_rate));
                }
                // A sentence with nothing to say (a bare citation mark) is skipped.
                Err(e) if e.code == "invalid_request" => {}
                Err(e) => out.push(error(e.code, &e.message)),
            }
        }
        if last {
            if streaming.started {
                out.push(WyEvent::new("audio-stop", json!({})));
            }
            out.push(WyEvent::new("synthesize-stopped", json!({})));
            self.streaming = None;
        }
        out
    }

    async fn answer(&mut self, event: &WyEvent) -> Vec<WyEvent> {
        let question = event.str("text").unwrap_or_default().trim().to_owned();
        if question.is_empty() {
            return vec![WyEvent::new("not-handled", json!({"text": "I did not hear a question."}))];
        }
        let language = event.str("language").map(str::to_owned);
        match speech::answer_text(&self.voice, self.caller.clone(), question, language).await {
            Ok(answer) if !answer.text.is_empty() => vec![WyEvent::new("handled", json!({"text": uag_voice::speakable(&answer.text)}))],
            Ok(_) => vec![WyEvent::new("not-handled", json!({"text": "The knowledge base has no answer to that."}))],
            Err(why) => {
                tracing::info!(code = %why.code, "wyoming question not answered");
                vec![WyEvent::new("not-handled", json!({"text": why.message}))]
            }
        }
    }

    /// `info`: what this server offers, from the installed models.
    fn info(&self) -> WyEvent {
        let attribution = json!({"name": "uag", "url": "https://example.invalid/uag"});
        let version = env!("CARGO_PKG_VERSION");
        let (mut asr_models, mut voices) = (Vec::new(), Vec::new());
        if let Some(models) = &self.voice.models {
            let dir = models.models_dir();
            for entry in models.manifest().models.iter().filter(|m| m.main_path(dir).is_file()) {
                let artifact = |languages: Vec<String>| {
                    json!({
                        "name": entry.id, "attribution": attribution, "installed": true,
                        "description": entry.description, "version": version, "languages": languages,
                    })
                };
                match entry.kind {
                    ModelKind::Asr => asr_models.push(artifact(asr_languages(&entry.id))),
                    ModelKind::Tts => voices.push(artifact(vec![entry.language.clone().unwrap_or_else(|| "en".into())])),
                    _ => {}
                }
            }
        }
        let program = |name: &str, description: &str| json!({"name": name, "attribution": attribution, "installed": true, "description": description, "version": version});
        let mut asr = program("uag-asr", "uag speech recognition (whisper.cpp)");
        asr["models"] = Value::Array(asr_models);
        asr["supports_transcript_streaming"] = Value::Bool(false);
        let mut tts = program("uag-tts", "uag speech synthesis (Piper; espeak-ng for other languages)");
        tts["voices"] = Value::Array(voices);
        tts["supports_synthesize_streaming"] = Value::Bool(true);
        let mut handle = program("uag-knowledge-base", "answers from the appliance's knowledge base, with its sources checked");
        let languages = if self.voice.models.is_some() { vec!["en".to_owned()] } else { Vec::new() };
        handle["models"] = json!([{
            "name": self.voice.config.model, "attribution": attribution, "installed": true,
            "description": "grounded answers from the knowledge base", "version": version, "languages": languages,
        }]);
        handle["supports_handled_streaming"] = Value::Bool(false);
        WyEvent::new("info", json!({"asr": [asr], "tts": [tts], "handle": [handle], "intent": [], "wake": [], "mic": [], "snd": []}))
    }
}

fn error(code: &str, text: &str) -> WyEvent {
    WyEvent::new("error", json!({"text": text, "code": code}))
}

/// `(rate, channels)` of an `audio-start` or `audio-chunk`; only 16-bit samples are accepted.
fn audio_format(event: &WyEvent) -> Result<(u32, u16), String> {
    let number = |key: &str| event.data.get(key).and_then(Value::as_u64);
    let (Some(rate), Some(width), Some(channels)) = (number("rate"), number("width"), number("channels")) else {
        return Err("audio needs `rate`, `width` and `channels`".into());
    };
    if width != 2 {
        return Err(format!("width {width} is not supported; send 16-bit samples (width 2)"));
    }
    if !(8_000..=48_000).contains(&rate) || !(1..=8).contains(&channels) {
        return Err(format!("{rate} Hz with {channels} channels is not supported (8000-48000 Hz, 1-8 channels)"));
    }
    Ok((rate as u32, channels as u16))
}

/// The voice (name) and language a `synthesize` or `synthesize-start` asks for.
fn requested_voice(event: &WyEvent) -> (Option<String>, Option<String>) {
    let voice = event.data.get("voice");
    let field = |key: &str| voice.and_then(|v| v.get(key)).and_then(Value::as_str).map(str::to_owned);
    (field("name").filter(|n| n != "uag-tts"), field("language").map(|l| l.split(['-', '_']).next().unwrap_or_default().to_owned()))
}

fn audio_start(rate: u32) -> WyEvent {
    WyEvent::new("audio-start", json!({"rate": rate, "width": 2, "channels": 1}))
}

fn audio_chunks(samples: &[f32], rate: u32) -> Vec<WyEvent> {
    samples
        .chunks(SAMPLES_PER_CHUNK)
        .map(|chunk| {
            let mut event = WyEvent::new("audio-chunk", json!({"rate": rate, "width": 2, "channels": 1}));
            event.payload = uag_models::audio::to_pcm16le(chunk);
            event
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_round_trip_with_data_and_payload() {
        let mut event = WyEvent::new("audio-chunk", json!({"rate": 16000, "width": 2, "channels": 1}));
        event.payload = vec![1, 2, 3, 4];
        let mut bytes = Vec::new();
        write_event(&mut bytes, &event).await.unwrap();
        write_event(&mut bytes, &WyEvent::new("describe", json!({}))).await.unwrap();
        let mut reader = BufReader::new(bytes.as_slice());
        assert_eq!(read_event(&mut reader).await.unwrap(), event);
        assert_eq!(read_event(&mut reader).await.unwrap().kind, "describe");
        assert!(matches!(read_event(&mut reader).await, Err(WireError::Closed)));
    }

    #[tokio::test]
    async fn inline_data_merges_with_the_data_block() {
        let bytes = b"{\"type\":\"transcribe\",\"data\":{\"language\":\"en\"},\"data_length\":15}\n{\"name\":\"tiny\"}";
        let event = read_event(&mut BufReader::new(&bytes[..])).await.unwrap();
        assert_eq!((event.str("language"), event.str("name")), (Some("en"), Some("tiny")));
    }

    #[tokio::test]
    async fn bad_headers_and_oversized_blocks_are_refused() {
        let bytes = b"not json\n";
        assert!(matches!(read_event(&mut BufReader::new(&bytes[..])).await, Err(WireError::Invalid(_))));
        let bytes = b"{\"type\":\"audio-chunk\",\"payload_length\":999999999}\n";
        assert!(matches!(read_event(&mut BufReader::new(&bytes[..])).await, Err(WireError::Invalid(_))));
        // A stream cut inside a payload is a closed connection, not a panic.
        let bytes = b"{\"type\":\"audio-chunk\",\"payload_length\":10}\n1234";
        assert!(matches!(read_event(&mut BufReader::new(&bytes[..])).await, Err(WireError::Closed)));
    }

    #[test]
    fn remote_listening_is_an_explicit_choice() {
        assert!(WyomingConfig::default().validate().is_ok());
        let lan = WyomingConfig { listen: "0.0.0.0:10300".into(), ..WyomingConfig::default() };
        assert!(lan.validate().unwrap_err().1.contains("allow_remote"));
        assert!(WyomingConfig { allow_remote: true, ..lan }.validate().is_ok());
        assert!(WyomingConfig { listen: "nowhere".into(), ..WyomingConfig::default() }.validate().is_err());
    }

    #[test]
    fn audio_formats_other_than_16_bit_are_refused() {
        let event = WyEvent::new("audio-start", json!({"rate": 16000, "width": 4, "channels": 1}));
        assert!(audio_format(&event).unwrap_err().contains("width 2"));
        let event = WyEvent::new("audio-start", json!({"rate": 22050, "width": 2, "channels": 2}));
        assert_eq!(audio_format(&event), Ok((22050, 2)));
    }
}
