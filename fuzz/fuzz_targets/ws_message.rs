//! WebSocket client messages: the text-message parsers of `/v1/inference/stream` and
//! `/v1/voice` (the servers' own `ClientMessage` + `parse_json`), and the voice endpointer on
//! arbitrary PCM. An input whose first byte is >= 0xF0 is PCM: two bytes pick the sample rate
//! (8000..=48000 Hz), one the chunk size and one how often the audio repeats; the rest is
//! little-endian 16-bit samples.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uag_gateway::http::{voice, ws};
use uag_models::vad::{EndReason, EndpointConfig, Endpointer, VadEvent};

/// An accepted message is a JSON object whose `type` is one of the protocol's.
fn check_accepted(data: &[u8], kinds: &[&str], endpoint: &str) {
    let value: Value = serde_json::from_slice(data).unwrap_or_else(|e| panic!("{endpoint} accepted non-JSON: {e}"));
    let kind = value.get("type").and_then(Value::as_str).unwrap_or_else(|| panic!("{endpoint} accepted a message without a type"));
    assert!(kinds.contains(&kind), "{endpoint} accepted type `{kind}`");
}

fn endpointer(data: &[u8]) {
    let [r0, r1, chunk, repeat, pcm @ ..] = data else { return };
    let rate = 8_000 + u32::from(u16::from_le_bytes([*r0, *r1])) % 40_001;
    let samples: Vec<i16> = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let chunk = usize::from(*chunk).max(1);
    let config = EndpointConfig::default();
    let mut ep = Endpointer::new(config, rate);
    let (mut started, mut ended) = (false, false);
    for _ in 0..=(repeat % 8) {
        for piece in samples.chunks(chunk) {
            let events = ep.push(piece);
            assert!(events.len() <= 2, "{events:?}");
            for event in events {
                assert!(!ended, "an event after the end");
                match event {
                    VadEvent::SpeechStarted => {
                        assert!(!started, "speech started twice");
                        started = true;
                        assert!(ep.in_speech());
                    }
                    VadEvent::Ended(EndReason::Silence) => {
                        assert!(started, "silence end before speech");
                        ended = true;
                    }
                    VadEvent::Ended(_) => ended = true,
                }
            }
        }
    }
    // 16 ms frames: the detector never runs past the no-speech plus maximum-utterance limits.
    assert!(ep.elapsed_ms() <= config.no_speech_ms + config.max_utterance_ms + 32, "ran {} ms", ep.elapsed_ms());
    ep.reset();
    assert!(!ep.in_speech());
    assert_eq!(ep.elapsed_ms(), 0);
}

fuzz_target!(|data: &[u8]| {
    if let Some((&first, rest)) = data.split_first()
        && first >= 0xF0
    {
        endpointer(rest);
        return;
    }
    if ws::fuzz_parse_client_message(data) {
        check_accepted(data, &["request", "cancel", "ping"], "/v1/inference/stream");
    }
    if voice::fuzz_parse_client_message(data) {
        check_accepted(data, &["start", "stop", "text", "cancel", "reset", "ping"], "/v1/voice");
    }
});
