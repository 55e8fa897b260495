//! A voice session: the state of one conversation, whatever carries it.
//!
//! A front door (the kiosk WebSocket `/v1/voice`, the OpenAI Realtime socket `/v1/realtime`)
//! turns its wire messages into [`Command`]s and audio samples, and sends what
//! [`VoiceSession::next_out`] yields back in its own framing. The session records utterances,
//! ends them by voice-activity detection or `stop`, runs one turn at a time, lets a new
//! utterance, a typed question or `cancel` interrupt the running turn (barge-in), and keeps the
//! last few turns as conversation memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use uag_core::metrics::VoiceTurnLabels;
use uag_core::pipeline::Caller;
use uag_core::types::{Message, Role};
use uag_models::vad::{EndReason, EndpointConfig, Endpointer, VadEvent};

use crate::speech::Heard;
use crate::turn::{Question, TurnDeps, TurnInput, TurnOutcome, VoiceDeps, VoiceEvent, VoiceOut, run_turn};

/// Sample rates a client may send (browsers capture at 44.1 or 48 kHz; telephony at 8 kHz).
pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 48_000;
/// Audio kept from before speech was detected, so a barge-in's first syllable is not lost.
const PRE_ROLL_MS: u32 = 300;
/// How long [`VoiceSession::close`] waits for the running turn to stop.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Longest typed question, in bytes.
const MAX_TEXT_BYTES: usize = 4096;

/// Who ends an utterance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Endpointing {
    /// Only the client's `stop` (push-to-talk, tap to send) or the length cap: a pause, however
    /// long, never ends the utterance, and audio between utterances is not listened to.
    Client,
    /// Voice-activity detection too (hands-free): a silence after speech ends the utterance, and
    /// speech in audio sent while the server answers starts the next one (barge-in).
    #[default]
    Vad,
}

/// What a client asks of its session, translated from its wire shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Begin an utterance; audio follows.
    Start {
        sample_rate: u32,
        /// Only `pcm_s16le` is accepted.
        encoding: String,
        /// ISO 639-1 code or `auto`; `None`: detect it.
        language: Option<String>,
        /// A voice id or OpenAI alias; `None`: one for the language.
        voice: Option<String>,
        /// Speak the answer (false: text only).
        speak: bool,
        endpointing: Endpointing,
    },
    /// The utterance is over (push-to-talk released).
    Stop,
    /// A typed question instead of speech.
    Text {
        text: String,
        language: Option<String>,
        voice: Option<String>,
        speak: bool,
    },
    /// Stop the running turn (and any utterance being recorded).
    Cancel,
    /// Drop the utterance being recorded, if any; the running turn goes on (a Realtime
    /// client's `input_audio_buffer.clear`).
    DiscardAudio,
    /// Forget the conversation so far.
    Reset,
    Ping,
}

/// The format of the audio being received.
#[derive(Debug, Clone)]
struct AudioFormat {
    sample_rate: u32,
    language: Option<String>,
    voice: Option<String>,
    speak: bool,
    endpointing: Endpointing,
}

/// An utterance being recorded.
struct Recording {
    format: AudioFormat,
    endpointer: Endpointer,
    samples: Vec<i16>,
    speech_reported: bool,
    /// Hands-free, at a pause: is the question finished, or does the speaker go on?
    pause: Option<Pause>,
}

/// A hands-free utterance at a pause of `silence_ms`. What was said so far is being
/// transcribed: a finished question is answered as soon as the transcript is in; one cut short
/// ("... open the") waits for the speaker to go on, up to `max_pause_ms` of silence.
struct Pause {
    /// Hears the speaker go on; ends (no speech) when the pause reaches `max_pause_ms`.
    endpointer: Endpointer,
    /// Audio up to the pause (what is being transcribed).
    samples: usize,
    ended_at: Instant,
    /// The transcript up to the pause, once in, with ms from the end of speech to it.
    heard: Option<(Heard, f64)>,
    /// The transcription; dropped (aborted) when the speaker goes on or the recording ends.
    _check: AbortOnDropHandle<()>,
}

/// The transcript of an utterance up to a pause.
struct PauseCheck {
    /// Which pause it is for (a later pause makes it stale).
    generation: u64,
    result: Result<Heard, uag_core::error::PublicError>,
    at: Instant,
}

/// Words an English question does not end on: articles, conjunctions, possessives, fillers,
/// and "of"/"to". Verbs ("what does it do?"), prepositions ("which port is it on?") and
/// demonstratives ("what is that?") end questions all the time, so they are not here.
const CONTINUES: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "nor", "because", "if", "whether", "although", "than", "of", "to", "my", "your", "our", "their",
    "his", "its", "um", "uh", "er", "erm",
];

/// Whether a transcript reads like a question or request cut off mid-clause: it trails off
/// ("...", a comma, a dash), or (English) its last word cannot end a clause. Other languages:
/// only the trailing marks count.
pub fn looks_unfinished(text: &str, language: &str) -> bool {
    let text = text.trim();
    if text.is_empty() {
        return true;
    }
    if text.ends_with("...") || text.ends_with('…') || text.ends_with(',') || text.ends_with('-') || text.ends_with('—') {
        return true;
    }
    if language != "en" {
        return false;
    }
    let last =
        text.trim_end_matches(|c: char| !c.is_alphanumeric()).rsplit(|c: char| !c.is_alphanumeric() && c != '\'').next().unwrap_or("");
    CONTINUES.contains(&last.to_lowercase().as_str())
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

/// One conversation. Counted in `uag_voice_sessions` from [`VoiceSession::new`] until dropped.
pub struct VoiceSession {
    deps: VoiceDeps,
    /// The connection's caller: every turn runs with its identity and limits.
    caller: Caller,
    /// Where interrupted turns finish (shutdown waits for them).
    tasks: TaskTracker,
    out_tx: mpsc::Sender<VoiceOut>,
    out_rx: mpsc::Receiver<VoiceOut>,
    turns: u32,
    recording: Option<Recording>,
    running: Option<RunningTurn>,
    listener: Option<Listener>,
    /// The last utterance was ended by the client: audio after it is not listened to.
    push_to_talk: bool,
    history: VecDeque<(String, String)>,
    checks_tx: mpsc::Sender<PauseCheck>,
    checks_rx: mpsc::Receiver<PauseCheck>,
    /// Counts pauses, so a transcript of an earlier one is recognised as stale.
    pauses: u64,
}

impl VoiceSession {
    pub fn new(deps: VoiceDeps, caller: Caller, tasks: TaskTracker) -> Self {
        let (out_tx, out_rx) = mpsc::channel(64);
        let (checks_tx, checks_rx) = mpsc::channel(4);
        deps.metrics.voice_sessions.inc();
        Self {
            deps,
            caller,
            tasks,
            out_tx,
            out_rx,
            turns: 0,
            recording: None,
            running: None,
            listener: None,
            push_to_talk: false,
            history: VecDeque::new(),
            checks_tx,
            checks_rx,
            pauses: 0,
        }
    }

    /// The first event of a session: what it accepts.
    pub fn ready(&self) -> VoiceEvent {
        let config = &self.deps.config;
        VoiceEvent::Ready {
            protocol: 1,
            encodings: vec!["pcm_s16le".into()],
            min_sample_rate: MIN_SAMPLE_RATE,
            max_sample_rate: MAX_SAMPLE_RATE,
            max_frame_bytes: config.max_frame_bytes,
            silence_ms: config.silence_ms,
        }
    }

    /// The next event or audio for the client. Cancel-safe (use it in `select!`): nothing is
    /// lost when the future is dropped. A finished turn is remembered here, so a front door
    /// keeps polling this while the session lives.
    pub async fn next_out(&mut self) -> VoiceOut {
        loop {
            let running = self.running.as_mut().map(|r| &mut r.handle);
            tokio::select! {
                // The session holds a sender, so the queue never closes.
                Some(out) = self.out_rx.recv() => return out,
                Some(check) = self.checks_rx.recv() => self.on_pause_check(check),
                outcome = async {
                    match running {
                        Some(handle) => handle.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.running = None;
                    if let Ok(outcome) = outcome {
                        self.remember(outcome);
                    }
                }
            }
        }
    }

    /// Whatever is queued for the client now, without waiting (to flush before closing).
    pub fn try_next_out(&mut self) -> Option<VoiceOut> {
        self.out_rx.try_recv().ok()
    }

    /// Stops the running turn without waiting for it (the connection is going away).
    pub fn stop(&mut self) {
        if let Some(running) = &self.running {
            running.cancel.cancel();
        }
    }

    /// Ends the session: the running turn stops now and is awaited (up to a grace period), so
    /// nothing it holds (LLM stream, speech task) outlives the connection.
    pub async fn close(mut self) {
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
            let _ = tokio::time::timeout(CLOSE_GRACE, running.handle).await;
        }
    }

    fn reply(&self, event: VoiceEvent) {
        // A full queue means the client is not reading; a dropped status beats a stuck session.
        let _ = self.out_tx.try_send(VoiceOut::Event(event));
    }

    /// Reports a connection-level error (no turn) to the client.
    pub fn error(&self, code: &str, message: impl Into<String>) {
        self.reply(VoiceEvent::Error { turn: None, code: code.to_owned(), message: message.into() });
    }

    fn remember(&mut self, outcome: TurnOutcome) {
        if let (Some(question), true) = (outcome.question, outcome.completed) {
            self.history.push_back((question, outcome.answer));
            while self.history.len() > self.deps.config.history_turns {
                self.history.pop_front();
            }
        }
    }

    pub fn command(&mut self, command: Command) {
        match command {
            Command::Ping => self.reply(VoiceEvent::Pong {}),
            Command::Reset => {
                self.history.clear();
                self.reply(VoiceEvent::Status { turn: None, stage: "reset".into(), message: "Conversation memory cleared".into() });
            }
            Command::Cancel => {
                self.recording = None;
                self.cancel_running();
            }
            Command::DiscardAudio => self.recording = None,
            Command::Start { sample_rate, encoding, language, voice, speak, endpointing } => {
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
                let format = AudioFormat { sample_rate, language, voice, speak, endpointing };
                self.begin_recording(format, Vec::new());
            }
            Command::Stop => match self.recording.take() {
                Some(recording) => self.finish_recording(recording, "stop"),
                None => self.error("not_recording", "`stop` without a `start`: no utterance is being recorded"),
            },
            Command::Text { text, language, voice, speak } => {
                let text = text.trim().to_owned();
                if text.is_empty() || text.len() > MAX_TEXT_BYTES {
                    return self.error("invalid_text", format!("`text` must be 1 to {MAX_TEXT_BYTES} bytes"));
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
        let mut endpointer = Endpointer::new(self.deps.config.endpointing(), format.sample_rate);
        let _ = endpointer.push(&pre_roll);
        self.listener = None;
        self.reply(VoiceEvent::Status { turn: Some(self.turns), stage: "listening".into(), message: "Listening".into() });
        self.recording = Some(Recording { format, endpointer, samples: pre_roll, speech_reported: false, pause: None });
    }

    /// Audio as little-endian 16-bit mono PCM bytes (the `/v1/voice` binary frame).
    pub fn audio_le16(&mut self, bytes: &[u8]) {
        if !bytes.len().is_multiple_of(2) {
            return self.error("invalid_audio", "audio frames must hold whole 16-bit samples (an even number of bytes)");
        }
        let samples: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        self.audio(&samples);
    }

    /// Audio samples at the sample rate of the last `start`.
    pub fn audio(&mut self, samples: &[i16]) {
        if let Some(recording) = &mut self.recording {
            let max_samples = (u64::from(recording.format.sample_rate) * u64::from(self.deps.config.max_utterance_ms) / 1000) as usize;
            let room = max_samples.saturating_sub(recording.samples.len());
            recording.samples.extend_from_slice(&samples[..samples.len().min(room)]);
            if let Some(pause) = &mut recording.pause {
                let events = pause.endpointer.push(samples);
                if events.contains(&VadEvent::SpeechStarted) {
                    // The speaker goes on: the same utterance, ended by the next pause.
                    if let Some(pause) = recording.pause.take() {
                        recording.endpointer = pause.endpointer;
                    }
                    return;
                }
                let capped = events.iter().any(|e| matches!(e, VadEvent::Ended(_)));
                if (capped || room == 0)
                    && let Some(recording) = self.recording.take()
                {
                    let reason = if capped { EndReason::Silence } else { EndReason::MaxLength };
                    self.finish_recording(recording, reason.as_str());
                }
                return;
            }
            let events = recording.endpointer.push(samples);
            let client_ends = recording.format.endpointing == Endpointing::Client;
            let turn = self.turns;
            if events.contains(&VadEvent::SpeechStarted) && !recording.speech_reported {
                recording.speech_reported = true;
                self.reply(VoiceEvent::Vad { turn, speech: "started".into(), reason: None });
            }
            let ended = events.iter().find_map(|e| match e {
                // Push-to-talk: a pause (or a long wait before speaking) is the speaker's own.
                VadEvent::Ended(EndReason::Silence | EndReason::NoSpeech) if client_ends => None,
                VadEvent::Ended(reason) => Some(*reason),
                VadEvent::SpeechStarted => None,
            });
            let ended = ended.or((room == 0).then_some(EndReason::MaxLength));
            if ended == Some(EndReason::Silence) && !client_ends && self.deps.config.holds_unfinished() && self.deps.models.is_some() {
                return self.begin_pause();
            }
            if let Some(reason) = ended
                && let Some(recording) = self.recording.take()
            {
                self.finish_recording(recording, reason.as_str());
            }
            return;
        }
        let Some(listener) = &mut self.listener else {
            if self.push_to_talk {
                // A push-to-talk client's trailing frames after `stop`: nobody is listening.
                return;
            }
            return self.error("audio_before_start", "send a `start` message (sample rate, encoding) before audio frames");
        };
        // Between turns: watch for speech to start the next utterance (and barge in).
        let keep = (listener.format.sample_rate * PRE_ROLL_MS / 1000) as usize;
        listener.pre_roll.extend(samples.iter().copied());
        while listener.pre_roll.len() > keep {
            listener.pre_roll.pop_front();
        }
        let events = listener.endpointer.push(samples);
        if !events.contains(&VadEvent::SpeechStarted) {
            if !events.is_empty() {
                // The no-speech timeout is for utterances; a listener just keeps listening.
                listener.endpointer.reset();
            }
            return;
        }
        let format = listener.format.clone();
        let pre_roll: Vec<i16> = listener.pre_roll.iter().copied().collect();
        self.cancel_running();
        self.begin_recording(format, pre_roll);
        if let Some(recording) = &mut self.recording {
            recording.speech_reported = true;
        }
        self.reply(VoiceEvent::Vad { turn: self.turns, speech: "started".into(), reason: None });
    }

    /// A hands-free utterance reached a pause: transcribe it so far, and keep listening.
    fn begin_pause(&mut self) {
        let Some(recording) = &mut self.recording else { return };
        let config = &self.deps.config;
        self.pauses += 1;
        let generation = self.pauses;
        let (deps, checks, language) = (self.deps.clone(), self.checks_tx.clone(), recording.format.language.clone());
        let (samples, rate) = (recording.samples.clone(), recording.format.sample_rate);
        let check = tokio::spawn(async move {
            let result = match crate::speech::to_16k_off_worker(samples, rate).await {
                Ok(pcm) => crate::speech::transcribe(&deps, pcm, language, None).await,
                Err(e) => Err(uag_core::error::PublicError::new(uag_core::error::ErrorClass::InvalidRequest, "invalid_audio", e)),
            };
            let _ = checks.send(PauseCheck { generation, result, at: Instant::now() }).await;
        });
        // Hears the speaker go on; "no speech" for the rest of `max_pause_ms` ends the wait.
        let wait = EndpointConfig { no_speech_ms: config.max_pause_ms.saturating_sub(config.silence_ms).max(100), ..config.endpointing() };
        recording.pause = Some(Pause {
            endpointer: Endpointer::new(wait, recording.format.sample_rate),
            samples: recording.samples.len(),
            ended_at: Instant::now(),
            heard: None,
            _check: AbortOnDropHandle::new(check),
        });
    }

    /// The transcript up to a pause: a finished question is answered now; one cut short waits.
    fn on_pause_check(&mut self, check: PauseCheck) {
        if check.generation != self.pauses {
            return;
        }
        let Some(pause) = self.recording.as_mut().and_then(|r| r.pause.as_mut()) else { return };
        let asr_ms = check.at.duration_since(pause.ended_at).as_secs_f64() * 1000.0;
        let finished = match check.result {
            Ok(heard) => {
                let unfinished = looks_unfinished(&heard.text, &heard.language);
                tracing::debug!(heard = %heard.text, unfinished, "hands-free pause");
                pause.heard = Some((heard, asr_ms));
                !unfinished
            }
            // The turn transcribes again and reports the failure in its own words.
            Err(_) => true,
        };
        if finished && let Some(recording) = self.recording.take() {
            self.finish_recording(recording, EndReason::Silence.as_str());
        }
    }

    /// Ends the utterance and starts its turn. One that ends at a hands-free pause starts from
    /// the pause: its end of speech, and its transcript when that is in.
    fn finish_recording(&mut self, mut recording: Recording, reason: &str) {
        let turn = self.turns;
        let pause = recording.pause.take();
        let ended_at = pause.as_ref().map_or_else(Instant::now, |p| p.ended_at);
        self.reply(VoiceEvent::Vad { turn, speech: "ended".into(), reason: Some(reason.to_owned()) });
        self.push_to_talk = recording.format.endpointing == Endpointing::Client;
        // Hands-free: audio that keeps coming is watched for the next utterance.
        self.listener = (recording.format.endpointing == Endpointing::Vad).then(|| Listener {
            format: recording.format.clone(),
            endpointer: Endpointer::new(self.deps.config.endpointing(), recording.format.sample_rate),
            pre_roll: VecDeque::new(),
        });
        if reason == EndReason::NoSpeech.as_str() || recording.samples.is_empty() {
            self.reply(VoiceEvent::Done { turn, reason: "no_speech".into(), timings: Default::default() });
            self.deps.metrics.voice_turns.get_or_create(&VoiceTurnLabels { reason: "no_speech".into() }).inc();
            return;
        }
        let format = recording.format;
        if let Some(Pause { samples, heard: Some((heard, asr_ms)), .. }) = pause {
            // What was said is what was transcribed: the audio up to the pause.
            let audio_ms = samples as f64 * 1000.0 / f64::from(format.sample_rate);
            let question = Question::Heard { text: heard.text, language: heard.language, audio_ms, asr_ms };
            let (language, voice, speak) = (format.language, format.voice, format.speak);
            return self.spawn_turn(TurnInput { turn, question, language, voice, speak, history: Vec::new(), ended_at });
        }
        self.spawn_turn(TurnInput {
            turn,
            question: Question::Audio { samples: recording.samples, sample_rate: format.sample_rate },
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
            .flat_map(|(q, a)| [Message::new(Role::User, q.clone()), Message::new(Role::Assistant, a.clone())])
            .collect();
        let cancel = CancellationToken::new();
        let deps = TurnDeps { voice: self.deps.clone(), caller: self.caller.clone() };
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
            self.tasks.spawn(async move {
                let _ = running.handle.await;
            });
        }
    }
}

impl Drop for VoiceSession {
    fn drop(&mut self) {
        // A session dropped without `close` still stops its turn.
        self.stop();
        self.deps.metrics.voice_sessions.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::looks_unfinished;

    #[test]
    fn a_clause_cut_short_looks_unfinished_and_a_question_does_not() {
        for cut in
            ["When does the greenhouse open the", "Where are the kiosk logs and", "How do I, um...", "I want to know,", "Where is the"]
        {
            assert!(looks_unfinished(cut, "en"), "{cut}");
        }
        let questions = [
            "When does the greenhouse open the roof vents?",
            "Where are the kiosk logs?",
            "Reboot it.",
            "What is APT",
            "What does the idle timeout setting do?",
            "Which port is it on?",
            "What is that?",
        ];
        for done in questions {
            assert!(!looks_unfinished(done, "en"), "{done}");
        }
        // Other languages: only trailing marks count.
        assert!(!looks_unfinished("Wann öffnet das Gewächshaus die", "de"));
        assert!(looks_unfinished("Wann öffnet das Gewächshaus...", "de"));
        assert!(looks_unfinished("  ", "en"), "nothing heard yet: wait");
    }
}
