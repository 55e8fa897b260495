//! uag-voice: the voice assistant of uag, without a wire format.
//!
//! A [`VoiceSession`] is one conversation: it takes [`Command`]s and audio samples, ends
//! utterances by voice-activity detection (or the client's `stop`), and runs one turn at a time
//! ([`run_turn`]): speech recognition, the grounded answer through `uag-core`'s one inference
//! path, and speech synthesis sentence by sentence while the answer is written
//! ([`SpeechChunker`]). It yields [`VoiceOut`]: events and WAV audio.
//!
//! Front doors translate: the kiosk WebSocket `/v1/voice` in `uag-gateway` today, Wyoming and
//! the OpenAI Realtime socket next. Cargo keeps axum, tower-http and hyper out of this crate
//! (`scripts/check-layers.sh`): `models, graphrag <- core <- voice <- gateway`.
//!
//! - [`config`]: `[voice]` in `uag.toml`
//! - [`session`]: recording, endpointing, barge-in, conversation memory
//! - [`turn`]: one question to one spoken answer, and the events it sends
//! - [`speech`]: recognition, synthesis and a spoken-style answer one step at a time (Wyoming)
//! - [`chunker`]: streamed text cut into speakable pieces

pub mod chunker;
pub mod config;
pub mod session;
pub mod speech;
pub mod turn;

pub use chunker::{SpeechChunker, speakable};
pub use config::VoiceConfig;
pub use session::{Command, Endpointing, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, VoiceSession};
pub use turn::{Question, TurnDeps, TurnInput, TurnOutcome, VoiceDeps, VoiceEvent, VoiceOut, VoiceTimings, run_turn};
