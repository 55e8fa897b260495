//! `[voice]` in `uag.toml`: the answer route, conversation memory and endpointing.

use serde::{Deserialize, Serialize};

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
    /// Hands-free: the longest pause, in ms, that a question cut short may take before it is
    /// answered anyway. At a `silence_ms` pause the utterance so far is transcribed; a finished
    /// question is answered at once, one that stops mid-clause ("... open the") waits for the
    /// speaker to go on, up to this long. 0 (or anything up to `silence_ms`): every pause of
    /// `silence_ms` ends the utterance.
    pub max_pause_ms: u32,
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
            model: uag_core::provider::local::LOCAL_MODEL.to_owned(),
            provider: None,
            max_answer_tokens: 96,
            history_turns: 4,
            vad_threshold: vad.threshold,
            silence_ms: vad.silence_ms,
            max_pause_ms: 2_000,
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
        if self.max_pause_ms > 10_000 {
            return err("max_pause_ms", "must be at most 10000 (0 turns the wait for unfinished questions off)");
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

    /// Whether a hands-free pause waits for an unfinished question to go on.
    pub fn holds_unfinished(&self) -> bool {
        self.max_pause_ms > self.silence_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_ranges() {
        assert!(VoiceConfig::default().validate().is_ok());
        let bad = VoiceConfig { vad_threshold: 1.5, ..VoiceConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "voice.vad_threshold");
        let bad = VoiceConfig { max_frame_bytes: 10, ..VoiceConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "voice.max_frame_bytes");
    }
}
