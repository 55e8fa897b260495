//! Voice-activity detection and endpointing: when did the speaker start, when are they done.
//!
//! [`Endpointer`] takes PCM at the client's rate in pieces of any size, resamples it on the fly
//! to 16 kHz for the detector (earshot's network scores 16 ms frames of 256 samples), and
//! reports [`VadEvent`]s: speech started, then the end of the utterance after a configured
//! stretch of silence, at the maximum utterance length, or when nobody spoke at all.
//!
//! It is cheap (about 3,600x real time on one core), so the voice session calls it inline on
//! its own task; it never needs a model worker thread.

use earshot::Detector;

/// Samples per detector frame (16 ms at 16 kHz).
const FRAME: usize = 256;
/// Milliseconds per detector frame.
const FRAME_MS: u32 = 16;

/// Endpointing settings; all durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointConfig {
    /// Detector score at or above which a frame counts as speech (0..1).
    pub threshold: f32,
    /// Speech this long (within the recent frames) starts an utterance; shorter clicks and
    /// pops are ignored.
    pub min_speech_ms: u32,
    /// Silence this long after speech ends the utterance.
    pub silence_ms: u32,
    /// An utterance ends at this length even if the speaker goes on.
    pub max_utterance_ms: u32,
    /// With no speech at all for this long, the turn ends as "no speech".
    pub no_speech_ms: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self { threshold: 0.5, min_speech_ms: 96, silence_ms: 700, max_utterance_ms: 15_000, no_speech_ms: 8_000 }
    }
}

/// Why an utterance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The configured silence followed speech.
    Silence,
    /// The utterance reached its maximum length.
    MaxLength,
    /// Nobody spoke before the no-speech timeout.
    NoSpeech,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Silence => "silence",
            EndReason::MaxLength => "max_length",
            EndReason::NoSpeech => "no_speech",
        }
    }
}

/// What the endpointer noticed in the audio just pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStarted,
    Ended(EndReason),
}

/// Streaming endpointer for one utterance at a time; [`Endpointer::reset`] starts the next.
pub struct Endpointer {
    config: EndpointConfig,
    detector: Box<Detector>,
    resampler: LinearResampler,
    /// 16 kHz samples waiting to fill a frame.
    pending: Vec<i16>,
    /// Scores of the most recent frames (for the speech-start window).
    recent_speech: std::collections::VecDeque<bool>,
    frames: u32,
    speech_started_at: Option<u32>,
    silent_run: u32,
    ended: bool,
}

impl std::fmt::Debug for Endpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpointer").field("config", &self.config).field("frames", &self.frames).finish_non_exhaustive()
    }
}

impl Endpointer {
    /// An endpointer for audio at `sample_rate` Hz (any rate; 16 kHz needs no resampling).
    pub fn new(config: EndpointConfig, sample_rate: u32) -> Self {
        Self {
            config,
            detector: Detector::default_boxed(),
            resampler: LinearResampler::new(sample_rate, 16_000),
            pending: Vec::with_capacity(FRAME * 2),
            recent_speech: std::collections::VecDeque::new(),
            frames: 0,
            speech_started_at: None,
            silent_run: 0,
            ended: false,
        }
    }

    /// Forgets the utterance so far; the next push starts a new one.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.resampler.reset();
        self.pending.clear();
        self.recent_speech.clear();
        self.frames = 0;
        self.speech_started_at = None;
        self.silent_run = 0;
        self.ended = false;
    }

    /// Whether speech has started in the current utterance.
    pub fn in_speech(&self) -> bool {
        self.speech_started_at.is_some()
    }

    /// Milliseconds of audio seen in the current utterance.
    pub fn elapsed_ms(&self) -> u32 {
        self.frames * FRAME_MS
    }

    /// Feeds PCM (mono, the rate given to [`Endpointer::new`]). Returns the events these
    /// samples caused, in order: at most `SpeechStarted` then `Ended` (one long frame can hold
    /// both). After `Ended` it returns nothing until [`Endpointer::reset`].
    pub fn push(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        if self.ended {
            return events;
        }
        self.resampler.process(samples, &mut self.pending);
        let mut consumed = 0;
        while self.pending.len() - consumed >= FRAME && !self.ended {
            let frame = &self.pending[consumed..consumed + FRAME];
            consumed += FRAME;
            let score = self.detector.predict_i16(frame);
            if let Some(event) = self.on_frame(score >= self.config.threshold) {
                events.push(event);
            }
        }
        self.pending.drain(..consumed);
        events
    }

    fn on_frame(&mut self, speech: bool) -> Option<VadEvent> {
        self.frames += 1;
        let ms = |frames: u32| frames * FRAME_MS;
        match self.speech_started_at {
            None => {
                // Speech starts once most of a short window is voiced: one loud frame is a click.
                let window = (self.config.min_speech_ms / FRAME_MS).max(1) as usize;
                self.recent_speech.push_back(speech);
                if self.recent_speech.len() > window {
                    self.recent_speech.pop_front();
                }
                let voiced = self.recent_speech.iter().filter(|s| **s).count();
                if self.recent_speech.len() == window && voiced * 4 >= window * 3 {
                    self.speech_started_at = Some(self.frames);
                    return Some(VadEvent::SpeechStarted);
                }
                if ms(self.frames) >= self.config.no_speech_ms {
                    self.ended = true;
                    return Some(VadEvent::Ended(EndReason::NoSpeech));
                }
                None
            }
            Some(start) => {
                self.silent_run = if speech { 0 } else { self.silent_run + 1 };
                if ms(self.silent_run) >= self.config.silence_ms {
                    self.ended = true;
                    Some(VadEvent::Ended(EndReason::Silence))
                } else if ms(self.frames - start) >= self.config.max_utterance_ms {
                    self.ended = true;
                    Some(VadEvent::Ended(EndReason::MaxLength))
                } else {
                    None
                }
            }
        }
    }
}

/// A streaming linear-interpolation resampler: good enough for a detector that looks at band
/// energies (the utterance itself goes to ASR through the FFT resampler in [`crate::audio`]).
#[derive(Debug, Clone)]
struct LinearResampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output sample, relative to `previous` (index -1 is `previous`).
    position: f64,
    previous: Option<i16>,
}

impl LinearResampler {
    fn new(from: u32, to: u32) -> Self {
        Self { step: f64::from(from.max(1)) / f64::from(to.max(1)), position: 0.0, previous: None }
    }

    fn reset(&mut self) {
        self.position = 0.0;
        self.previous = None;
    }

    fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if (self.step - 1.0).abs() < f64::EPSILON {
            out.extend_from_slice(input);
            return;
        }
        // Samples are indexed with `previous` at -1 and input[0] at 0.
        let at = |i: isize, previous: Option<i16>| -> f64 {
            if i < 0 { f64::from(previous.unwrap_or(input[0])) } else { f64::from(input[i as usize]) }
        };
        if input.is_empty() {
            return;
        }
        let last = input.len() as f64 - 1.0;
        while self.position <= last {
            let base = self.position.floor();
            let frac = self.position - base;
            let i = base as isize;
            let a = at(i, self.previous);
            let b = if (i + 1) as f64 <= last { at(i + 1, self.previous) } else { a };
            out.push((a + (b - a) * frac).round().clamp(-32768.0, 32767.0) as i16);
            self.position += self.step;
        }
        self.position -= input.len() as f64;
        self.previous = input.last().copied();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(ms: u32, rate: u32) -> Vec<i16> {
        vec![0; (rate * ms / 1000) as usize]
    }

    /// A vowel-like buzz: a 140 Hz pulse train through a few formant-ish partials, with a
    /// syllable-rate envelope. Pure tones are not speech to the detector; this sits closer.
    fn buzz(ms: u32, rate: u32) -> Vec<i16> {
        let n = (rate * ms / 1000) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let f0 = 140.0 + 20.0 * (t * 3.0).sin();
                let mut v = 0.0;
                for (h, amp) in [(1.0, 0.6), (2.0, 0.5), (3.0, 0.4), (5.0, 0.25), (8.0, 0.15), (13.0, 0.08)] {
                    v += amp * (std::f32::consts::TAU * f0 * h * t).sin();
                }
                let envelope = 0.55 + 0.45 * (std::f32::consts::TAU * 4.0 * t).sin().abs();
                (v * envelope * 6000.0) as i16
            })
            .collect()
    }

    #[test]
    fn silence_alone_ends_as_no_speech() {
        let config = EndpointConfig { no_speech_ms: 1000, ..EndpointConfig::default() };
        let mut vad = Endpointer::new(config, 16_000);
        assert_eq!(vad.push(&silence(900, 16_000)), []);
        assert_eq!(vad.push(&silence(200, 16_000)), [VadEvent::Ended(EndReason::NoSpeech)]);
        assert_eq!(vad.push(&silence(200, 16_000)), [], "nothing after the end until reset");
        vad.reset();
        assert_eq!(vad.elapsed_ms(), 0);
    }

    #[test]
    fn resampler_keeps_duration_across_odd_chunks() {
        for (from, to) in [(48_000, 16_000), (44_100, 16_000), (8_000, 16_000), (22_050, 16_000)] {
            let mut r = LinearResampler::new(from, to);
            let input: Vec<i16> = (0..from).map(|i| ((i as f32 * 0.01).sin() * 1000.0) as i16).collect();
            let mut out = Vec::new();
            for chunk in input.chunks(333) {
                r.process(chunk, &mut out);
            }
            let expected = to as i64;
            assert!((out.len() as i64 - expected).abs() <= 2, "{from}->{to}: {} samples", out.len());
        }
    }

    #[test]
    fn frames_of_any_size_are_accepted() {
        let mut vad = Endpointer::new(EndpointConfig::default(), 48_000);
        for size in [1usize, 7, 255, 256, 257, 4096] {
            let _ = vad.push(&vec![0; size]);
        }
        assert!(vad.elapsed_ms() > 0);
    }

    /// Real speech (Piper) with silence around it, at 22.05 kHz as Piper makes it: the
    /// endpointer must find the start near the speech onset and the end one silence window
    /// after the speech stops.
    #[test]
    fn real_speech_is_endpointed() {
        use crate::test_support::model_file;
        use crate::tts::{PiperVoice, TtsOptions};
        let voice = PiperVoice::load(
            &model_file("piper-en_US-joe-medium", "en_US-joe-medium.onnx"),
            &model_file("onnxruntime", "libonnxruntime.so.1.31.1"),
        )
        .unwrap();
        let rate = voice.sample_rate();
        let speech: Vec<i16> =
            crate::audio::to_pcm16le(&voice.synthesize("Where is the nearest first aid kit?", &TtsOptions::default()).unwrap())
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
        let speech_ms = (speech.len() as u64 * 1000 / u64::from(rate)) as u32;
        let mut audio = silence(1000, rate);
        audio.extend_from_slice(&speech);
        audio.extend(silence(2000, rate));
        let config = EndpointConfig::default();
        let mut vad = Endpointer::new(config, rate);
        let mut events = Vec::new();
        let chunk = (rate / 50) as usize; // 20 ms, as a browser sends
        for (i, piece) in audio.chunks(chunk).enumerate() {
            for event in vad.push(piece) {
                events.push((event, (i as u32 + 1) * 20));
            }
        }
        assert_eq!(events.len(), 2, "{events:?}");
        let (started, start_ms) = events[0];
        let (ended, end_ms) = events[1];
        assert_eq!(started, VadEvent::SpeechStarted);
        assert!((1000..1500).contains(&start_ms), "speech detected at {start_ms} ms, onset at 1000 ms");
        assert_eq!(ended, VadEvent::Ended(EndReason::Silence));
        // Piper's trailing silence and the detector's context blur the exact end a little.
        let expected = 1000 + speech_ms + config.silence_ms;
        assert!(end_ms + 400 >= expected && end_ms <= expected + 400, "ended at {end_ms} ms, expected about {expected} ms");
    }

    #[test]
    fn max_length_cuts_a_speaker_who_goes_on() {
        // A detector that always hears speech: threshold 0.
        let config = EndpointConfig { threshold: 0.0, max_utterance_ms: 1000, ..EndpointConfig::default() };
        let mut vad = Endpointer::new(config, 16_000);
        let mut events = Vec::new();
        for chunk in buzz(3000, 16_000).chunks(1600) {
            events.extend(vad.push(chunk));
        }
        assert_eq!(events, vec![VadEvent::SpeechStarted, VadEvent::Ended(EndReason::MaxLength)]);
    }

    /// One long frame that holds the start and the end of the speech reports both.
    #[test]
    fn one_frame_can_start_and_end_an_utterance() {
        let config = EndpointConfig { threshold: 0.0, max_utterance_ms: 1000, ..EndpointConfig::default() };
        let mut vad = Endpointer::new(config, 16_000);
        assert_eq!(vad.push(&buzz(3000, 16_000)), [VadEvent::SpeechStarted, VadEvent::Ended(EndReason::MaxLength)]);
    }
}
