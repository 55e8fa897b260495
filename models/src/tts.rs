//! Piper (VITS) voices on ONNX Runtime (ort, `load-dynamic`: the library comes from the model
//! directory), with espeak-ng phonemes.
//!
//! Text -> sentences ([`split_sentences`]) -> IPA per sentence ([`crate::espeak::phonemize`]) ->
//! phoneme ids (`^ _ p1 _ p2 _ ... $`, as piper-phonemize's `phonemes_to_ids`) -> one model run
//! per sentence -> peak-normalised audio, sentences joined by a short silence.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use serde::Deserialize;

use crate::{ModelError, Result, espeak};

/// Intra-op threads of a voice loaded with [`PiperVoice::load`]. A medium voice already runs
/// ~15x faster than real time on one x86 core; the second thread helps quiet multi-core boards
/// while leaving the remaining cores to the other models of an edge device.
pub const DEFAULT_THREADS: usize = 2;

/// Silence between sentences of one [`PiperVoice::synthesize`] call (Piper's default).
const SENTENCE_SILENCE_S: f32 = 0.2;

#[derive(Debug, Clone, Default)]
pub struct TtsOptions {
    /// Overrides of the voice config's scales.
    pub length_scale: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
}

/// The ONNX Runtime library loaded into this process and its environment. ort loads one library
/// per process and allows one environment, so every voice shares them.
struct OrtRuntime {
    library: PathBuf,
    /// `None` when loading the library worked but creating the environment failed.
    environment: Option<Environment>,
}

static ORT: Mutex<Option<OrtRuntime>> = Mutex::new(None);

fn ort_environment(library: &Path) -> Result<Environment> {
    let canonical = library.canonicalize().map_err(|e| ModelError::io(library, e))?;
    let mut runtime = ORT.lock().unwrap_or_else(PoisonError::into_inner);
    let builder = match runtime.as_ref() {
        Some(loaded) if loaded.library != canonical => {
            return Err(ModelError::load(
                library,
                format!("this process already uses the ONNX Runtime library {}; restart to switch", loaded.library.display()),
            ));
        }
        Some(OrtRuntime { environment: Some(environment), .. }) => return Ok(environment.clone()),
        // Not loaded yet, or loaded with an environment that failed to build: ort keeps the
        // library it loaded first and only hands out a new builder.
        _ => ort::init_from(&canonical).map_err(|e| ModelError::load(library, e))?,
    };
    // ort ignores later init_from paths silently, so remember the library before anything else
    // can fail.
    *runtime = Some(OrtRuntime { library: canonical.clone(), environment: None });
    let environment = builder.with_name("uag-tts").with_telemetry(false).build().map_err(|e| ModelError::load(library, e))?;
    *runtime = Some(OrtRuntime { library: canonical, environment: Some(environment.clone()) });
    Ok(environment)
}

/// The part of a Piper voice's `<model>.onnx.json` that synthesis needs.
#[derive(Debug, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: Option<EspeakConfig>,
    #[serde(default)]
    inference: InferenceConfig,
    #[serde(default = "default_phoneme_type")]
    phoneme_type: String,
    /// Phoneme -> replacement phonemes, applied before the id map.
    #[serde(default)]
    phoneme_map: HashMap<String, Vec<String>>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Debug, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        // Piper's defaults for configs without an `inference` section.
        InferenceConfig { noise_scale: 0.667, length_scale: 1.0, noise_w: 0.8 }
    }
}

fn default_phoneme_type() -> String {
    "espeak".into()
}

pub struct PiperVoice {
    /// `Session::run` needs `&mut`; one sentence at a time per voice.
    session: Mutex<Session>,
    model: PathBuf,
    sample_rate: u32,
    espeak_voice: String,
    inference: InferenceConfig,
    ids: PhonemeIds,
    /// Multi-speaker models take a speaker id (`sid`); speaker 0 is used.
    speaker_input: bool,
}

/// A voice's phoneme -> id mapping.
struct PhonemeIds {
    /// Phoneme -> replacement phonemes, applied before the id map.
    phoneme_map: HashMap<char, Vec<char>>,
    ids: HashMap<char, Vec<i64>>,
    pad: Vec<i64>,
    bos: Vec<i64>,
    eos: Vec<i64>,
}

impl std::fmt::Debug for PiperVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperVoice")
            .field("model", &self.model)
            .field("sample_rate", &self.sample_rate)
            .field("espeak_voice", &self.espeak_voice)
            .finish_non_exhaustive()
    }
}

impl PiperVoice {
    /// `onnx` is the voice model; its config is `<onnx>.json`. `onnxruntime_lib` is the
    /// ONNX Runtime shared library (initialised once per process).
    pub fn load(onnx: &Path, onnxruntime_lib: &Path) -> Result<Self> {
        Self::load_with_threads(onnx, onnxruntime_lib, DEFAULT_THREADS)
    }

    /// [`Self::load`] with `threads` intra-op threads (0 lets ONNX Runtime use every core).
    pub fn load_with_threads(onnx: &Path, onnxruntime_lib: &Path, threads: usize) -> Result<Self> {
        let started = Instant::now();
        let config_path = config_path(onnx);
        let config_text = std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
        let config: VoiceConfig =
            serde_json::from_str(&config_text).map_err(|e| ModelError::load(&config_path, format!("invalid voice config: {e}")))?;
        let bad = |reason: String| ModelError::load(&config_path, reason);
        if config.phoneme_type != "espeak" {
            return Err(bad(format!("phoneme_type `{}` is not supported (only espeak)", config.phoneme_type)));
        }
        let espeak_voice = config.espeak.map(|e| e.voice).ok_or_else(|| bad("the config names no espeak voice".into()))?;
        if !espeak::has_voice(&espeak_voice) {
            return Err(bad(format!("espeak-ng has no voice `{espeak_voice}` (is espeak-ng-data complete?)")));
        }
        if config.audio.sample_rate == 0 {
            return Err(bad("sample_rate is 0".into()));
        }
        let ids = PhonemeIds::new(config.phoneme_id_map, config.phoneme_map, &espeak_voice).map_err(bad)?;
        if !onnx.is_file() {
            return Err(ModelError::io(onnx, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }

        let environment = ort_environment(onnxruntime_lib)?;
        let session = Session::builder(&environment)
            .map_err(|e| ModelError::load(onnx, e))?
            .with_intra_threads(threads)
            .map_err(|e| ModelError::load(onnx, e))?
            .with_inter_threads(1)
            .map_err(|e| ModelError::load(onnx, e))?
            // Spinning threads keep cores busy between runs, taking them from the other models
            // of an edge device for a gain of a few milliseconds.
            .with_intra_op_spinning(false)
            .map_err(|e| ModelError::load(onnx, e))?
            .commit_from_file(onnx)
            .map_err(|e| ModelError::load(onnx, e))?;

        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input", "input_lengths", "scales"] {
            if !inputs.contains(&required) {
                return Err(ModelError::load(onnx, format!("not a Piper voice: no `{required}` input (inputs: {inputs:?})")));
            }
        }
        let speaker_input = inputs.contains(&"sid");
        if session.outputs().is_empty() {
            return Err(ModelError::load(onnx, "the model has no outputs"));
        }
        tracing::debug!(model = %onnx.display(), threads, elapsed_ms = started.elapsed().as_millis() as u64, "Piper voice loaded");
        Ok(PiperVoice {
            session: Mutex::new(session),
            model: onnx.to_path_buf(),
            sample_rate: config.audio.sample_rate,
            espeak_voice,
            inference: config.inference,
            ids,
            speaker_input,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The espeak voice of the model, e.g. "en-us".
    pub fn espeak_voice(&self) -> &str {
        &self.espeak_voice
    }

    /// Speech for one sentence (or short text): mono f32 at [`Self::sample_rate`]. Longer text
    /// is split with [`split_sentences`]; each sentence is one model run, peak-normalised like
    /// Piper does, with 0.2 s of silence between sentences.
    pub fn synthesize(&self, text: &str, options: &TtsOptions) -> Result<Vec<f32>> {
        if text.trim().is_empty() {
            return Err(ModelError::InvalidInput("input text is empty".into()));
        }
        let scales = [
            options.noise_scale.unwrap_or(self.inference.noise_scale),
            options.length_scale.unwrap_or(self.inference.length_scale),
            options.noise_w.unwrap_or(self.inference.noise_w),
        ];
        if scales.iter().any(|s| !s.is_finite() || *s < 0.0) || scales[1] <= 0.0 {
            return Err(ModelError::InvalidInput(format!(
                "invalid synthesis scales (noise_scale {}, length_scale {}, noise_w {})",
                scales[0], scales[1], scales[2]
            )));
        }
        let silence = (SENTENCE_SILENCE_S * self.sample_rate as f32) as usize;
        let mut audio = Vec::new();
        for sentence in split_sentences(text) {
            // espeak-ng also ends sentences at abbreviations ("Dr.", "e.g."); one run per
            // split_sentences piece keeps those in one utterance, as in Piper's training data.
            let phonemes = espeak::phonemize(&sentence, &self.espeak_voice)?.join(" ");
            let Some(ids) = self.phoneme_ids(&phonemes) else { continue };
            let samples = self.infer(ids, scales)?;
            if !audio.is_empty() {
                audio.resize(audio.len() + silence, 0.0);
            }
            audio.extend(samples);
        }
        if audio.is_empty() {
            return Err(ModelError::InvalidInput("input text has nothing to speak".into()));
        }
        Ok(audio)
    }

    fn phoneme_ids(&self, phonemes: &str) -> Option<Vec<i64>> {
        let (ids, missing) = self.ids.convert(phonemes)?;
        if !missing.is_empty() {
            tracing::debug!(model = %self.model.display(), ?missing, "phonemes without an id in the voice were skipped");
        }
        Some(ids)
    }

    fn infer(&self, ids: Vec<i64>, scales: [f32; 3]) -> Result<Vec<f32>> {
        let err = |e: ort::Error| ModelError::Inference(format!("Piper voice: {e}"));
        let n = ids.len();
        let length = i64::try_from(n).map_err(|_| ModelError::InvalidInput("input text is too long".into()))?;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("input".into(), Tensor::from_array(([1usize, n], ids)).map_err(err)?.into()),
            ("input_lengths".into(), Tensor::from_array(([1usize], vec![length])).map_err(err)?.into()),
            ("scales".into(), Tensor::from_array(([3usize], scales.to_vec())).map_err(err)?.into()),
        ];
        if self.speaker_input {
            inputs.push(("sid".into(), Tensor::from_array(([1usize], vec![0i64])).map_err(err)?.into()));
        }
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(inputs).map_err(err)?;
        let output = outputs.values().next().ok_or_else(|| ModelError::Inference("Piper voice returned no output".into()))?;
        // [1, 1, 1, samples] for Piper voices; any shape holds the samples in order.
        let (_, samples) = output.try_extract_tensor::<f32>().map_err(err)?;
        let mut samples = samples.to_vec();
        if samples.iter().any(|s| !s.is_finite()) {
            return Err(ModelError::Inference("Piper voice produced invalid (NaN/inf) samples".into()));
        }
        // Piper scales every sentence so its peak is full scale (quiet ones are raised too),
        // with a floor that keeps near-silence from being amplified into noise.
        let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let gain = 1.0 / peak.max(0.01);
        for s in &mut samples {
            *s = (*s * gain).clamp(-1.0, 1.0);
        }
        Ok(samples)
    }
}

impl PhonemeIds {
    fn new(id_map: HashMap<String, Vec<i64>>, phoneme_map: HashMap<String, Vec<String>>, espeak_voice: &str) -> Result<Self, String> {
        let mut ids = HashMap::new();
        for (phoneme, mapped) in id_map {
            // Piper's phonemes are single code points; longer keys cannot come out of espeak.
            if let Some(c) = single_char(&phoneme) {
                ids.insert(c, mapped);
            }
        }
        let special = |symbol: char| ids.get(&symbol).cloned().ok_or_else(|| format!("phoneme_id_map has no `{symbol}`"));
        let (pad, bos, eos) = (special('_')?, special('^')?, special('$')?);
        let mut replacements: HashMap<char, Vec<char>> = HashMap::new();
        for (from, to) in phoneme_map {
            if let Some(c) = single_char(&from) {
                replacements.insert(c, to.iter().flat_map(|s| s.chars()).collect());
            }
        }
        if replacements.is_empty() && espeak_voice == "pt-br" {
            // piper-phonemize's built-in map for Brazilian Portuguese voices.
            replacements.insert('c', vec!['k']);
        }
        Ok(PhonemeIds { phoneme_map: replacements, ids, pad, bos, eos })
    }

    /// Ids as piper-phonemize's `phonemes_to_ids` with padding: BOS, pad, then each phoneme
    /// followed by pad, then EOS; phonemes without an id are skipped and counted. `None` when
    /// no letter has an id (nothing to speak).
    fn convert(&self, phonemes: &str) -> Option<(Vec<i64>, BTreeMap<char, usize>)> {
        let mut ids = Vec::with_capacity(self.bos.len() + self.eos.len() + 2 * (phonemes.len() + 1));
        ids.extend_from_slice(&self.bos);
        ids.extend_from_slice(&self.pad);
        let mut missing: BTreeMap<char, usize> = BTreeMap::new();
        let mut spoken = false;
        let mut push = |c: char| match self.ids.get(&c) {
            Some(mapped) => {
                spoken |= c.is_alphabetic();
                ids.extend_from_slice(mapped);
                ids.extend_from_slice(&self.pad);
            }
            None => *missing.entry(c).or_default() += 1,
        };
        for c in phonemes.chars() {
            match self.phoneme_map.get(&c) {
                Some(replacement) => replacement.iter().copied().for_each(&mut push),
                None => push(c),
            }
        }
        ids.extend_from_slice(&self.eos);
        spoken.then_some((ids, missing))
    }
}

fn config_path(onnx: &Path) -> PathBuf {
    let mut path = onnx.as_os_str().to_owned();
    path.push(".json");
    PathBuf::from(path)
}

fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// Characters after a sentence end that still belong to it.
fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '」' | '』' | '）' | '】')
}

fn is_opening(c: char) -> bool {
    matches!(c, '"' | '\'' | '(' | '[' | '{' | '“' | '‘' | '«' | '「' | '『' | '（' | '【')
}

/// Whether a piece has anything to say (not only spaces and punctuation).
fn is_speakable(piece: &str) -> bool {
    piece.chars().any(|c| {
        !(c.is_whitespace()
            || c.is_ascii_punctuation()
            || is_opening(c)
            || is_closing(c)
            || matches!(c, '…' | '。' | '！' | '？' | '，' | '、' | '；' | '：' | '—' | '–' | '·' | '｡'))
    })
}

/// Abbreviations followed by a name or an example, where "." does not end the sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "e.g", "i.e", "cf", "approx", "ca", "mt", "gen", "col", "lt", "sgt", "rev",
    "hon", "fr", "vol", "pp", "z.b", "bzw", "d.h", "u.a", "resp",
];

/// Abbreviations that do not end a sentence when a number follows ("No. 5", "Fig. 3").
const NUMBER_ABBREVIATIONS: &[&str] = &["no", "nr", "fig", "p", "art", "sec", "ch", "tab", "eq"];

/// Whether the "." ending `before` (the text since the piece started) is an abbreviation rather
/// than a sentence end, given the text after it.
fn is_abbreviation(before: &str, after: &str) -> bool {
    let word = before.rsplit(char::is_whitespace).next().unwrap_or("").trim_start_matches(is_opening).to_lowercase();
    let next = after.trim_start().trim_start_matches(is_opening).chars().next();
    if ABBREVIATIONS.contains(&word.as_str()) {
        return true;
    }
    if NUMBER_ABBREVIATIONS.contains(&word.as_str()) && next.is_some_and(|c| c.is_ascii_digit()) {
        return true;
    }
    // An initial ("J. R. R. Tolkien").
    let mut letters = word.chars();
    if let (Some(c), None) = (letters.next(), letters.next())
        && c.is_alphabetic()
        && before.trim_end().ends_with(|b: char| b.is_uppercase())
    {
        return true;
    }
    false
}

/// Splits text into sentences for incremental synthesis: after `.` `!` `?` `…` followed by
/// whitespace (so "3.5" and "example.com" stay whole), after `。` `！` `？` directly, and at blank
/// lines. A "." after a common abbreviation ("e.g.", "Dr.") or an initial, or before a lowercase
/// word, does not end a sentence. Closing quotes and brackets stay with their sentence. Pieces
/// are trimmed; pieces without anything to say are dropped.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        match c {
            '\n' => {
                let mut newlines = 1;
                let mut end = i + 1;
                while let Some(&(j, w)) = iter.peek() {
                    if !w.is_whitespace() {
                        break;
                    }
                    newlines += usize::from(w == '\n');
                    end = j + w.len_utf8();
                    iter.next();
                }
                if newlines >= 2 {
                    pieces.push(&text[start..i]);
                    start = end;
                }
            }
            '.' | '!' | '?' | '…' | '。' | '！' | '？' | '｡' => {
                let cjk = matches!(c, '。' | '！' | '？' | '｡');
                let mut end = i + c.len_utf8();
                let mut single_period = c == '.';
                while let Some(&(j, t)) = iter.peek() {
                    if matches!(t, '.' | '!' | '?' | '…' | '。' | '！' | '？' | '｡') {
                        single_period = false;
                    } else if !is_closing(t) {
                        break;
                    }
                    end = j + t.len_utf8();
                    iter.next();
                }
                let after = &text[end..];
                let ends_here = if cjk {
                    true
                } else {
                    let boundary = after.chars().next().is_none_or(char::is_whitespace);
                    let next_word = after.trim_start().trim_start_matches(is_opening).chars().next();
                    let continues_lowercase = next_word.is_some_and(char::is_lowercase);
                    boundary && !continues_lowercase && !(single_period && is_abbreviation(&text[start..i], after))
                };
                if ends_here {
                    pieces.push(&text[start..end]);
                    start = end;
                }
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces.into_iter().map(str::trim).filter(|p| is_speakable(p)).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::model_file;

    fn joe() -> PathBuf {
        model_file("piper-en_US-joe-medium", "en_US-joe-medium.onnx")
    }

    fn onnxruntime() -> PathBuf {
        model_file("onnxruntime", "libonnxruntime.so.1.31.1")
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
    }

    #[test]
    fn voices_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PiperVoice>();
    }

    #[test]
    fn split_sentences_cases() {
        assert_eq!(split_sentences("Hello there. How are you? Fine!"), ["Hello there.", "How are you?", "Fine!"]);
        assert_eq!(split_sentences("It costs 3.5 dollars. Really."), ["It costs 3.5 dollars.", "Really."]);
        assert_eq!(split_sentences("Ask Dr. Smith, e.g. tomorrow. Then go."), ["Ask Dr. Smith, e.g. tomorrow.", "Then go."]);
        assert_eq!(split_sentences("See Fig. 3 and No. 5. Done"), ["See Fig. 3 and No. 5.", "Done"]);
        assert_eq!(split_sentences("J. R. R. Tolkien wrote it. Yes."), ["J. R. R. Tolkien wrote it.", "Yes."]);
        assert_eq!(split_sentences("He said \"Stop!\" Then he left..."), ["He said \"Stop!\"", "Then he left..."]);
        assert_eq!(split_sentences("Wait... what? Ok?! Sure."), ["Wait... what?", "Ok?!", "Sure."]);
        assert_eq!(split_sentences("Visit example.com today"), ["Visit example.com today"]);
        assert_eq!(split_sentences("First paragraph\n\nSecond one\nstill second"), ["First paragraph", "Second one\nstill second"]);
        assert_eq!(split_sentences("你好。我很好！谢谢？"), ["你好。", "我很好！", "谢谢？"]);
        assert_eq!(split_sentences("  ... \n\n ! "), Vec::<String>::new());
        assert_eq!(split_sentences(""), Vec::<String>::new());
        assert_eq!(split_sentences("No punctuation"), ["No punctuation"]);
        assert_eq!(split_sentences("I said no. Then I left."), ["I said no.", "Then I left."]);
    }

    #[test]
    fn phoneme_ids_follow_piper() {
        let voice = PiperVoice::load(&joe(), &onnxruntime()).unwrap();
        // ^ _ h _ ə _ ˈ _ . _ $, with 'X' (no id) skipped.
        let ids = voice.phoneme_ids("hXəˈ.").unwrap();
        assert_eq!(ids, [1, 0, 20, 0, 59, 0, 120, 0, 10, 0, 2]);
        assert!(voice.phoneme_ids(". ,").is_none());
    }

    #[test]
    fn piper_synthesizes_a_sentence() {
        let started = Instant::now();
        let voice = PiperVoice::load(&joe(), &onnxruntime()).unwrap();
        let load = started.elapsed();
        assert_eq!(voice.sample_rate(), 22_050);
        assert_eq!(voice.espeak_voice(), "en-us");
        let text = "The kitchen lights are on.";
        let started = Instant::now();
        let samples = voice.synthesize(text, &TtsOptions::default()).unwrap();
        let first = started.elapsed();
        let started = Instant::now();
        let again = voice.synthesize(text, &TtsOptions::default()).unwrap();
        let second = started.elapsed();
        let seconds = samples.len() as f32 / 22_050.0;
        eprintln!("load {load:?}, first {first:?}, second {second:?}, audio {seconds:.2} s");
        assert!((1.0..4.0).contains(&seconds), "{seconds} s");
        assert!(samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
        assert!(rms(&samples) > 0.03, "rms {}", rms(&samples));
        // Durations are sampled (noise_w), so a second run differs a little.
        assert!((again.len() as f32 / samples.len() as f32 - 1.0).abs() < 0.3);
    }

    #[test]
    fn piper_rejects_empty_text() {
        let voice = PiperVoice::load(&joe(), &onnxruntime()).unwrap();
        for text in ["", "  \n\t"] {
            let err = voice.synthesize(text, &TtsOptions::default()).unwrap_err();
            assert!(matches!(err, ModelError::InvalidInput(ref m) if m == "input text is empty"), "{err}");
        }
        let err = voice.synthesize("... !", &TtsOptions::default()).unwrap_err();
        assert!(matches!(err, ModelError::InvalidInput(_)), "{err}");
        let bad = TtsOptions { length_scale: Some(0.0), ..TtsOptions::default() };
        assert!(matches!(voice.synthesize("Hello.", &bad), Err(ModelError::InvalidInput(_))));
    }

    #[test]
    fn length_scale_slows_speech() {
        let voice = PiperVoice::load(&joe(), &onnxruntime()).unwrap();
        let text = "Turn off the lights in the living room.";
        // No duration noise, so lengths depend on length_scale alone.
        let options = |length_scale| TtsOptions { length_scale: Some(length_scale), noise_w: Some(0.0), ..TtsOptions::default() };
        let normal = voice.synthesize(text, &options(1.0)).unwrap();
        let slow = voice.synthesize(text, &options(2.0)).unwrap();
        let ratio = slow.len() as f32 / normal.len() as f32;
        assert!(ratio > 1.6, "ratio {ratio}");
    }

    #[test]
    fn sentences_are_joined_with_silence() {
        let voice = PiperVoice::load(&joe(), &onnxruntime()).unwrap();
        // No duration noise, so both sentences come out exactly as long as the single one.
        let options = TtsOptions { noise_w: Some(0.0), ..TtsOptions::default() };
        let one = voice.synthesize("Good morning.", &options).unwrap();
        let two = voice.synthesize("Good morning. Good morning.", &options).unwrap();
        let silence = (SENTENCE_SILENCE_S * 22_050.0) as usize;
        assert_eq!(two.len(), 2 * one.len() + silence);
        assert!(two[one.len()..one.len() + silence].iter().all(|&s| s == 0.0));
    }

    #[test]
    fn ort_is_initialised_once_for_several_voices() {
        let a = PiperVoice::load(&joe(), &onnxruntime()).unwrap();
        let b = PiperVoice::load_with_threads(&joe(), &onnxruntime(), 1).unwrap();
        assert!(!a.synthesize("One.", &TtsOptions::default()).unwrap().is_empty());
        assert!(!b.synthesize("Two.", &TtsOptions::default()).unwrap().is_empty());
        // Another library path in the same process is refused.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("libonnxruntime.so");
        std::fs::copy(onnxruntime(), &other).unwrap();
        let err = PiperVoice::load(&joe(), &other).unwrap_err();
        assert!(matches!(err, ModelError::Load { .. }), "{err}");
    }

    #[test]
    fn missing_model_files_fail_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("none.onnx");
        assert!(matches!(PiperVoice::load(&onnx, &onnxruntime()), Err(ModelError::Io { .. })));
        std::fs::write(config_path(&onnx), "{ not json").unwrap();
        assert!(matches!(PiperVoice::load(&onnx, &onnxruntime()), Err(ModelError::Load { .. })));
        std::fs::copy(config_path(&joe()), config_path(&onnx)).unwrap();
        std::fs::write(&onnx, b"not an onnx model").unwrap();
        assert!(matches!(PiperVoice::load(&onnx, &onnxruntime()), Err(ModelError::Load { .. })));
    }
}
