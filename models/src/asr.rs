//! Speech recognition with whisper.cpp through whisper-rs, on ggml files converted by
//! [`crate::whisper_convert`]. Runs on the caller's thread: [`crate::runtime`] owns the thread.
//!
//! whisper.cpp's own logging is routed into whisper-rs's hooks (which, without a log backend
//! feature, drop it) and its printing is switched off, so nothing reaches stdout/stderr.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use crate::audio::WHISPER_SAMPLE_RATE;
use crate::{ModelError, Result};

#[derive(Debug, Clone)]
pub struct AsrOptions {
    /// ISO 639-1 code; `None` detects the language (multilingual models only).
    pub language: Option<String>,
    /// whisper.cpp threads.
    pub threads: usize,
    /// Shrink the encoder's 30 s window to the clip (plus a margin) for clips under 25 s.
    /// Whisper always encodes 30 s, so a 3 s voice command pays for 27 s of padding; with a
    /// fitted window it is several times faster. Off for file transcription, where accuracy
    /// on long audio matters more than latency.
    pub fit_window: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_s: f32,
    pub end_s: f32,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    /// Detected or requested language (ISO 639-1), "en" for English-only models.
    pub language: String,
    pub duration_s: f32,
    pub segments: Vec<Segment>,
}

/// A loaded whisper model. Each [`WhisperModel::transcribe`] call works on its own whisper.cpp
/// state, so the model itself is never mutated (and is `Send + Sync`).
pub struct WhisperModel {
    ctx: WhisperContext,
    multilingual: bool,
}

/// Shorter input is padded with silence to this many samples: whisper.cpp skips input under
/// 100 ms outright and is unreliable on fragments.
const MIN_SAMPLES: usize = WHISPER_SAMPLE_RATE as usize;

impl WhisperModel {
    pub fn load(ggml_path: &Path) -> Result<Self> {
        // whisper.cpp reads a cut-off file as a model without weights instead of failing, so the
        // layout is checked here first.
        check_ggml_layout(ggml_path).map_err(|reason| ModelError::load(ggml_path, reason))?;
        whisper_rs::install_logging_hooks();
        let ctx = WhisperContext::new_with_params(ggml_path, WhisperContextParameters::default())
            .map_err(|e| ModelError::load(ggml_path, format!("whisper.cpp could not load it ({e})")))?;
        let multilingual = ctx.is_multilingual();
        Ok(Self { ctx, multilingual })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// `pcm` is mono f32 at 16 kHz.
    pub fn transcribe(&self, pcm: &[f32], options: &AsrOptions) -> Result<Transcript> {
        if pcm.is_empty() {
            return Err(ModelError::InvalidInput("audio is empty".into()));
        }
        let language = self.resolve_language(options.language.as_deref())?;
        let duration_s = pcm.len() as f32 / WHISPER_SAMPLE_RATE as f32;

        let input = prepare_input(pcm);
        let threads = if options.threads == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { options.threads };

        let mut state = self
            .ctx
            .create_state()
            .map_err(|e| ModelError::Inference(format!("whisper.cpp could not allocate its working memory ({e})")))?;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads.clamp(1, 256) as i32);
        // whisper.cpp's default language is a static "en"; whisper-rs 0.16 leaks the CString
        // that set_language allocates, so it is only called when something else is needed.
        if language != Some("en") {
            params.set_language(language);
        }
        params.set_translate(false);
        params.set_no_context(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        if options.fit_window && duration_s < 25.0 {
            params.set_audio_ctx(fitted_audio_ctx(duration_s));
        }
        state.full(params, &input).map_err(|e| ModelError::Inference(format!("whisper.cpp failed ({e})")))?;

        let language = match language {
            Some(code) => code.to_owned(),
            None => whisper_rs::get_lang_str(state.full_lang_id_from_state())
                .ok_or_else(|| ModelError::Inference("whisper.cpp detected no language".into()))?
                .to_owned(),
        };
        let mut segments = Vec::new();
        for segment in state.as_iter() {
            let text = segment.to_str_lossy().map_err(|e| ModelError::Inference(format!("segment text ({e})")))?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            // whisper.cpp timestamps are in units of 10 ms.
            segments.push(Segment {
                start_s: segment.start_timestamp() as f32 / 100.0,
                end_s: segment.end_timestamp() as f32 / 100.0,
                text: text.to_owned(),
            });
        }
        let text = segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
        Ok(Transcript { text, language, duration_s, segments })
    }

    /// The language to pass to whisper.cpp: `None` asks it to detect one.
    fn resolve_language(&self, requested: Option<&str>) -> Result<Option<&'static str>> {
        let requested = requested.map(str::trim).filter(|l| !l.is_empty() && !l.eq_ignore_ascii_case("auto"));
        let Some(requested) = requested else {
            // English-only models have no language tokens to detect with.
            return Ok(if self.multilingual { None } else { Some("en") });
        };
        let code = language_code(requested).ok_or_else(|| {
            let shown: String = requested.chars().take(40).collect();
            ModelError::InvalidInput(format!("unknown language `{shown}`; expected an ISO 639-1 code such as `en` or `de`"))
        })?;
        if !self.multilingual && code != "en" {
            return Err(ModelError::InvalidInput(format!(
                "this speech model only recognises English; language `{code}` needs a multilingual model"
            )));
        }
        Ok(Some(code))
    }
}

/// whisper.cpp's code for a language given as an ISO 639-1 code, a regional tag (`en-US`) or
/// an English name (`german`).
fn language_code(requested: &str) -> Option<&'static str> {
    let primary = requested.split(['-', '_']).next().unwrap_or(requested).to_ascii_lowercase();
    // get_lang_id panics on interior NUL bytes; real language names are short and alphabetic.
    if primary.is_empty() || primary.len() > 32 || !primary.bytes().all(|b| b.is_ascii_alphabetic() || b == b' ') {
        return None;
    }
    whisper_rs::get_lang_id(&primary).and_then(whisper_rs::get_lang_str)
}

/// Pads short input with silence and replaces non-finite samples, copying only when needed.
fn prepare_input(pcm: &[f32]) -> Cow<'_, [f32]> {
    if pcm.len() >= MIN_SAMPLES && pcm.iter().all(|s| s.is_finite()) {
        return Cow::Borrowed(pcm);
    }
    let mut input: Vec<f32> = pcm.iter().map(|s| if s.is_finite() { *s } else { 0.0 }).collect();
    if input.len() < MIN_SAMPLES {
        input.resize(MIN_SAMPLES, 0.0);
    }
    Cow::Owned(input)
}

/// Walks a ggml whisper file (header, filters, vocabulary, tensor headers) and checks that it is
/// complete, without reading the weights. Quantized files are only checked up to the vocabulary
/// (their tensor sizes depend on ggml's block layouts).
fn check_ggml_layout(path: &Path) -> std::result::Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::new(file);
    let mut pos = 0u64;
    let i32_at = |r: &mut BufReader<File>, pos: &mut u64| -> std::result::Result<i64, String> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| "the file is truncated".to_string())?;
        *pos += 4;
        Ok(i64::from(i32::from_le_bytes(b)))
    };
    let skip = |r: &mut BufReader<File>, pos: &mut u64, n: i64| -> std::result::Result<(), String> {
        if n < 0 || *pos + n as u64 > len {
            return Err("the file is truncated".into());
        }
        r.seek_relative(n).map_err(|e| e.to_string())?;
        *pos += n as u64;
        Ok(())
    };
    if i32_at(&mut r, &mut pos)? as u32 != 0x6767_6d6c {
        return Err("not a ggml whisper model (bad magic)".into());
    }
    let mut hp = [0i64; 11];
    for v in &mut hp {
        *v = i32_at(&mut r, &mut pos)?;
    }
    let [
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head,
        n_text_layer,
        n_mels,
        ftype,
    ] = hp;
    let positive =
        [n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels];
    if positive.iter().any(|v| *v <= 0 || *v > 1 << 20) || n_audio_state != n_text_state || ftype < 0 {
        return Err(format!("implausible whisper hyperparameters {hp:?}"));
    }
    let (n_mel, n_fft) = (i32_at(&mut r, &mut pos)?, i32_at(&mut r, &mut pos)?);
    if !(1..=1024).contains(&n_mel) || !(1..=4096).contains(&n_fft) {
        return Err("implausible mel filterbank size".into());
    }
    skip(&mut r, &mut pos, n_mel * n_fft * 4)?;
    let n_words = i32_at(&mut r, &mut pos)?;
    if !(0..=n_vocab).contains(&n_words) {
        return Err("implausible vocabulary size".into());
    }
    for _ in 0..n_words {
        let word_len = i32_at(&mut r, &mut pos)?;
        if !(0..=1024).contains(&word_len) {
            return Err("implausible vocabulary entry".into());
        }
        skip(&mut r, &mut pos, word_len)?;
    }
    if ftype % 1000 > 1 {
        return Ok(());
    }
    let mut tensors = 0;
    while pos < len {
        let (n_dims, name_len, ttype) = (i32_at(&mut r, &mut pos)?, i32_at(&mut r, &mut pos)?, i32_at(&mut r, &mut pos)?);
        if !(1..=4).contains(&n_dims) || !(1..=256).contains(&name_len) || !(0..=1).contains(&ttype) {
            return Err(format!("malformed tensor header after {tensors} tensors"));
        }
        let mut elements = 1i64;
        for _ in 0..n_dims {
            let ne = i32_at(&mut r, &mut pos)?;
            if !(1..=1 << 28).contains(&ne) {
                return Err(format!("malformed tensor shape after {tensors} tensors"));
            }
            elements = elements.saturating_mul(ne);
        }
        skip(&mut r, &mut pos, name_len)?;
        skip(&mut r, &mut pos, elements.saturating_mul(if ttype == 1 { 2 } else { 4 }))?;
        tensors += 1;
    }
    if tensors == 0 {
        return Err("the file has no weights".into());
    }
    Ok(())
}

/// Encoder frames (50 per second, 1500 for the full 30 s) for a clip of `duration_s`: the clip
/// plus one second of margin, rounded up to a multiple of 64, at least 384 (shorter windows
/// make the small models repeat themselves).
fn fitted_audio_ctx(duration_s: f32) -> i32 {
    let frames = ((duration_s + 1.0) * 50.0).ceil() as i32;
    (((frames + 63) / 64) * 64).clamp(384, 1500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::decode_to_mono_16k;
    use crate::audio::test_audio::espeak_wav;
    use std::path::PathBuf;
    use std::time::Instant;

    /// Word error rate: word-level edit distance over the reference length, on lowercased words
    /// without punctuation.
    fn wer(reference: &str, hypothesis: &str) -> f32 {
        let words = |s: &str| -> Vec<String> {
            s.to_lowercase()
                .chars()
                .map(|c| if c.is_alphanumeric() || c == '\'' || c.is_whitespace() { c } else { ' ' })
                .collect::<String>()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let (r, h) = (words(reference), words(hypothesis));
        let mut prev: Vec<usize> = (0..=h.len()).collect();
        for (i, rw) in r.iter().enumerate() {
            let mut cur = vec![i + 1; h.len() + 1];
            for (j, hw) in h.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(rw != hw)).min(prev[j + 1] + 1).min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[h.len()] as f32 / r.len().max(1) as f32
    }

    /// Converts the CTranslate2 model `model_id` into `dir` and loads it.
    fn converted(model_id: &str, dir: &Path) -> (WhisperModel, PathBuf) {
        let ct2 = crate::test_support::model_file(model_id, "model.bin").parent().unwrap().to_owned();
        let out = dir.join(format!("ggml-{model_id}.bin"));
        crate::whisper_convert::convert_ct2_to_ggml(&ct2, &out).unwrap();
        (WhisperModel::load(&out).unwrap(), out)
    }

    fn options(language: Option<&str>) -> AsrOptions {
        AsrOptions { language: language.map(str::to_owned), threads: 1, fit_window: false }
    }

    /// Transcribes espeak speech, printing the real-time factor.
    fn transcribe_speech(model: &WhisperModel, dir: &Path, voice: &str, text: &str, language: Option<&str>) -> Transcript {
        let pcm = decode_to_mono_16k(&espeak_wav(dir, voice, text), Some("wav")).unwrap();
        let started = Instant::now();
        let transcript = model.transcribe(&pcm, &options(language)).unwrap();
        let seconds = started.elapsed().as_secs_f32();
        println!(
            "[{voice}] {:.2} s audio in {seconds:.2} s (RTF {:.2}, 1 thread): {:?} -> {:?} ({})",
            transcript.duration_s,
            seconds / transcript.duration_s,
            text,
            transcript.text,
            transcript.language
        );
        transcript
    }

    #[test]
    fn wer_counts_word_edits() {
        assert_eq!(wer("The quick brown fox.", "the quick brown fox"), 0.0);
        assert_eq!(wer("turn on the lights", "turn off the lights"), 0.25);
        assert_eq!(wer("turn on the lights", "turn the lights now"), 0.5);
        assert_eq!(wer("a b", ""), 1.0);
    }

    #[test]
    fn language_codes_are_normalised() {
        assert_eq!(language_code("de"), Some("de"));
        assert_eq!(language_code("EN-us"), Some("en"));
        assert_eq!(language_code("german"), Some("de"));
        assert_eq!(language_code("xx"), None);
        assert_eq!(language_code("e\0n"), None);
        assert_eq!(language_code(""), None);
    }

    #[test]
    fn tiny_en_transcribes_english_speech() {
        let dir = tempfile::tempdir().unwrap();
        let (model, _) = converted("whisper-tiny.en", dir.path());
        println!("whisper.cpp {}: {}", whisper_rs::get_whisper_version(), whisper_rs::print_system_info());
        assert!(!model.is_multilingual());
        for text in ["The quick brown fox jumps over the lazy dog.", "Turn on the kitchen lights."] {
            let t = transcribe_speech(&model, dir.path(), "en-us", text, None);
            assert_eq!(t.language, "en");
            assert!(wer(text, &t.text) <= 0.35, "WER {} for {:?}", wer(text, &t.text), t.text);
            assert!(!t.segments.is_empty());
            assert_eq!(t.text, t.segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" "));
            for s in &t.segments {
                assert!(s.start_s >= 0.0 && s.start_s < s.end_s && s.end_s <= t.duration_s + 1.0, "{s:?}");
            }
        }
    }

    /// The voice pipeline's fitted encoder window: short commands stay accurate.
    #[test]
    fn fitted_window_keeps_short_commands_accurate() {
        assert_eq!(fitted_audio_ctx(0.5), 384);
        assert_eq!(fitted_audio_ctx(7.0), 448);
        assert_eq!(fitted_audio_ctx(24.9), 1344);
        assert_eq!(fitted_audio_ctx(40.0), 1500);
        let dir = tempfile::tempdir().unwrap();
        let (model, _) = converted("whisper-tiny.en", dir.path());
        for text in ["Turn on the kitchen lights.", "Where is the nearest first aid kit?", "What time does the museum close today?"] {
            let pcm = decode_to_mono_16k(&espeak_wav(dir.path(), "en-us", text), Some("wav")).unwrap();
            let options = AsrOptions { fit_window: true, ..options(None) };
            let started = Instant::now();
            let fitted = model.transcribe(&pcm, &options).unwrap();
            println!("fitted window: {:?} in {:?}", fitted.text, started.elapsed());
            assert!(wer(text, &fitted.text) <= 0.35, "WER {} for {:?}", wer(text, &fitted.text), fitted.text);
        }
    }

    #[test]
    fn tiny_en_options_and_odd_input() {
        let dir = tempfile::tempdir().unwrap();
        let (model, path) = converted("whisper-tiny.en", dir.path());
        let pcm = decode_to_mono_16k(&espeak_wav(dir.path(), "en-us", "Hello world"), Some("wav")).unwrap();

        for language in [Some("en"), Some("EN-us"), Some("english"), Some("auto"), Some(""), None] {
            assert_eq!(model.resolve_language(language).unwrap(), Some("en"), "{language:?}");
        }
        assert_eq!(model.transcribe(&pcm, &options(Some("en-US"))).unwrap().language, "en");
        for language in ["de", "xx", "en\0"] {
            let err = model.transcribe(&pcm, &options(Some(language))).unwrap_err();
            assert!(matches!(err, ModelError::InvalidInput(_)), "{language}: {err}");
        }
        assert!(matches!(model.transcribe(&[], &options(None)), Err(ModelError::InvalidInput(_))));

        // Under a second (here 0.3 s, and a single sample) is padded, not refused.
        let short = &pcm[..pcm.len().min(4800)];
        let t = model.transcribe(short, &options(None)).unwrap();
        assert!((t.duration_s - short.len() as f32 / 16_000.0).abs() < 1e-6);
        assert!(model.transcribe(&[0.0], &options(None)).is_ok());
        // Non-finite samples are silenced rather than poisoning the mel spectrogram.
        let mut noisy = pcm.clone();
        noisy[100] = f32::NAN;
        noisy[200] = f32::INFINITY;
        let mut zeroed = pcm.clone();
        (zeroed[100], zeroed[200]) = (0.0, 0.0);
        let t = model.transcribe(&noisy, &options(None)).unwrap();
        assert_eq!(t.text, model.transcribe(&zeroed, &options(None)).unwrap().text);

        // Files that are not (complete) ggml models fail to load instead of loading empty.
        let ct2 = crate::test_support::model_file("whisper-tiny.en", "model.bin");
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.bin");
        for bad in [dir.path().join("missing.bin"), ct2] {
            assert!(matches!(WhisperModel::load(&bad), Err(ModelError::Load { .. })), "{}", bad.display());
        }
        for len in [0, 3, 48, 64_000, 400_000, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            assert!(matches!(WhisperModel::load(&cut), Err(ModelError::Load { .. })), "cut at {len}");
        }
    }

    #[test]
    fn base_detects_german_and_english() {
        let dir = tempfile::tempdir().unwrap();
        let (model, _) = converted("whisper-base", dir.path());
        assert!(model.is_multilingual());
        let german = "Guten Morgen. Heute ist das Wetter sehr schön, und ich möchte in den Park gehen.";
        let t = transcribe_speech(&model, dir.path(), "de", german, None);
        assert_eq!(t.language, "de", "{:?}", t.text);
        let english = "The quick brown fox jumps over the lazy dog.";
        let t = transcribe_speech(&model, dir.path(), "en-us", english, None);
        assert_eq!(t.language, "en");
        assert!(wer(english, &t.text) <= 0.35, "{:?}", t.text);
        let t = transcribe_speech(&model, dir.path(), "de", german, Some("de"));
        assert_eq!(t.language, "de");
        assert!(wer(german, &t.text) <= 0.6, "WER {} for {:?}", wer(german, &t.text), t.text);
        assert!(matches!(model.transcribe(&[0.0; 100], &options(Some("klingon"))), Err(ModelError::InvalidInput(_))));
    }
}
