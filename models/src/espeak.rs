//! libespeak-ng through FFI: IPA phonemes for Piper voices, and espeak-ng's own synthesiser for
//! languages without a Piper voice. espeak-ng keeps global state and is not thread-safe, so one
//! process-wide lock guards every call.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_short, c_uint, c_void};
use std::path::PathBuf;
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{ModelError, Result};

// Values from /usr/include/espeak-ng/speak_lib.h (espeak-ng 1.51; stable since 1.49).
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;
const POS_CHARACTER: c_int = 1;
const EE_OK: c_int = 0;

/// `espeak_VOICE`; only read, from the list espeak_ListVoices returns.
#[repr(C)]
struct EspeakVoice {
    name: *const c_char,
    /// Pairs of (priority byte, NUL-terminated language), ended by an extra NUL.
    languages: *const c_char,
    identifier: *const c_char,
    gender: u8,
    age: u8,
    variant: u8,
    xx1: u8,
    score: c_int,
    spare: *mut c_void,
}

/// `t_espeak_callback`; the event list is not read, so it stays opaque.
type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;

type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type InfoFn = unsafe extern "C" fn(*mut *const c_char) -> *const c_char;
type SetVoiceByNameFn = unsafe extern "C" fn(*const c_char) -> c_int;
type ListVoicesFn = unsafe extern "C" fn(*mut EspeakVoice) -> *mut *const EspeakVoice;
type TextToPhonemesFn = unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char;
type SetSynthCallbackFn = unsafe extern "C" fn(Option<SynthCallback>);
type SynthFn = unsafe extern "C" fn(*const c_void, usize, c_uint, c_int, c_uint, c_uint, *mut c_uint, *mut c_void) -> c_int;

/// libespeak-ng, opened at run time rather than linked: the binary starts (and everything but
/// speech works) on a device without espeak-ng, and cross builds need no arm64 copy of it.
struct Api {
    initialize: InitializeFn,
    info: InfoFn,
    set_voice_by_name: SetVoiceByNameFn,
    list_voices: ListVoicesFn,
    text_to_phonemes: TextToPhonemesFn,
    set_synth_callback: SetSynthCallbackFn,
    synth: SynthFn,
    /// Keeps the function pointers above valid for the life of the process.
    _library: libloading::Library,
}

static API: std::sync::OnceLock<std::result::Result<Api, String>> = std::sync::OnceLock::new();

/// Debian's SONAME first, then the development symlink.
const LIBRARY_NAMES: [&str; 2] = ["libespeak-ng.so.1", "libespeak-ng.so"];

fn load_api() -> std::result::Result<Api, String> {
    let mut last_error = String::new();
    for name in LIBRARY_NAMES {
        // SAFETY: libespeak-ng's initialisers only set up static data; loading it runs no code
        // that could conflict with ours.
        let library = match unsafe { libloading::Library::new(name) } {
            Ok(library) => library,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        // SAFETY: each symbol is looked up with the signature speak_lib.h declares for it.
        let api = unsafe {
            let get = |symbol: &[u8]| -> std::result::Result<*mut c_void, String> {
                library.get::<*mut c_void>(symbol).map(|s| *s).map_err(|e| e.to_string())
            };
            Api {
                initialize: std::mem::transmute::<*mut c_void, InitializeFn>(get(b"espeak_Initialize\0")?),
                info: std::mem::transmute::<*mut c_void, InfoFn>(get(b"espeak_Info\0")?),
                set_voice_by_name: std::mem::transmute::<*mut c_void, SetVoiceByNameFn>(get(b"espeak_SetVoiceByName\0")?),
                list_voices: std::mem::transmute::<*mut c_void, ListVoicesFn>(get(b"espeak_ListVoices\0")?),
                text_to_phonemes: std::mem::transmute::<*mut c_void, TextToPhonemesFn>(get(b"espeak_TextToPhonemes\0")?),
                set_synth_callback: std::mem::transmute::<*mut c_void, SetSynthCallbackFn>(get(b"espeak_SetSynthCallback\0")?),
                synth: std::mem::transmute::<*mut c_void, SynthFn>(get(b"espeak_Synth\0")?),
                _library: library,
            }
        };
        return Ok(api);
    }
    Err(last_error)
}

/// The loaded library, or a "not installed" error that says which package provides it.
fn api() -> Result<&'static Api> {
    API.get_or_init(load_api).as_ref().map_err(|e| {
        tracing::warn!(error = %e, "libespeak-ng could not be loaded");
        ModelError::NotInstalled {
            model: "espeak-ng".into(),
            install_hint: "apt install espeak-ng (Debian/Raspberry Pi OS: package espeak-ng)".into(),
        }
    })
}

// Thin forwarders with espeak-ng's own names, so the call sites read like the C API. Each is
// only reached after `initialize` loaded the library; before that they fail like espeak does.
#[allow(non_snake_case)]
unsafe fn espeak_Initialize(output: c_int, buflength: c_int, path: *const c_char, options: c_int) -> c_int {
    match API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        Some(Ok(api)) => unsafe { (api.initialize)(output, buflength, path, options) },
        _ => -1,
    }
}
#[allow(non_snake_case)]
unsafe fn espeak_Info(path_data: *mut *const c_char) -> *const c_char {
    match API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        Some(Ok(api)) => unsafe { (api.info)(path_data) },
        _ => ptr::null(),
    }
}
#[allow(non_snake_case)]
unsafe fn espeak_SetVoiceByName(name: *const c_char) -> c_int {
    match API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        Some(Ok(api)) => unsafe { (api.set_voice_by_name)(name) },
        _ => -1,
    }
}
#[allow(non_snake_case)]
unsafe fn espeak_ListVoices(voice_spec: *mut EspeakVoice) -> *mut *const EspeakVoice {
    match API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        Some(Ok(api)) => unsafe { (api.list_voices)(voice_spec) },
        _ => ptr::null_mut(),
    }
}
#[allow(non_snake_case)]
unsafe fn espeak_TextToPhonemes(textptr: *mut *const c_void, textmode: c_int, phonememode: c_int) -> *const c_char {
    match API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        Some(Ok(api)) => unsafe { (api.text_to_phonemes)(textptr, textmode, phonememode) },
        _ => ptr::null(),
    }
}
#[allow(non_snake_case)]
unsafe fn espeak_SetSynthCallback(callback: Option<SynthCallback>) {
    if let Some(Ok(api)) = API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { (api.set_synth_callback)(callback) }
    }
}
#[allow(non_snake_case, clippy::too_many_arguments)]
unsafe fn espeak_Synth(
    text: *const c_void,
    size: usize,
    position: c_uint,
    position_type: c_int,
    end_position: c_uint,
    flags: c_uint,
    unique_identifier: *mut c_uint,
    user_data: *mut c_void,
) -> c_int {
    match API.get() {
        // SAFETY: forwarded with the caller's guarantees.
        Some(Ok(api)) => unsafe { (api.synth)(text, size, position, position_type, end_position, flags, unique_identifier, user_data) },
        _ => -1,
    }
}

struct Engine {
    sample_rate: u32,
    /// The voice espeak-ng currently has loaded; switching reloads its dictionary, so calls with
    /// the same voice skip it.
    voice: Option<String>,
}

/// espeak-ng's global state; `None` until the first successful initialisation.
static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

/// Samples of the running espeak_Synth call. Separate from ENGINE because the callback runs while
/// ENGINE's lock is held (by the same thread in synchronous mode).
static SYNTH_SAMPLES: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Runs `f` with espeak-ng initialised, holding the process-wide lock.
fn with_engine<R>(f: impl FnOnce(&mut Engine) -> Result<R>) -> Result<R> {
    // A panic under the lock cannot leave espeak-ng half-way through a call (none of our code
    // panics inside one), so a poisoned lock is still usable.
    let mut guard: MutexGuard<'_, Option<Engine>> = ENGINE.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(initialize()?);
    }
    match guard.as_mut() {
        Some(engine) => f(engine),
        None => Err(ModelError::Inference("espeak-ng is not initialised".into())),
    }
}

fn initialize() -> Result<Engine> {
    api()?;
    // SAFETY: called with ENGINE's lock held, so no other espeak call runs. A NULL path selects
    // the data directory compiled into the library (Debian's multiarch path on every
    // architecture); DONT_EXIT keeps espeak-ng from calling exit() when its data is missing.
    let rate = unsafe { espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, ptr::null(), ESPEAK_INITIALIZE_DONT_EXIT) };
    let data_dir = data_dir();
    // espeak-ng 1.51 only prints a message when its data is missing and carries on, so check the
    // phoneme table ourselves rather than failing later with a misleading "unknown voice".
    if rate <= 0 || !data_dir.join("phontab").is_file() {
        return Err(ModelError::load(data_dir, format!("espeak-ng could not be initialised (code {rate}); is espeak-ng-data installed?")));
    }
    // SAFETY: lock held (see above); the callback is a plain function with no captured state.
    unsafe { espeak_SetSynthCallback(Some(synth_callback)) };
    let sample_rate = u32::try_from(rate).unwrap_or(22_050);
    Ok(Engine { sample_rate, voice: None })
}

/// The data directory espeak-ng uses (for error messages and the installation check).
fn data_dir() -> PathBuf {
    let mut path: *const c_char = ptr::null();
    // SAFETY: only called under ENGINE's lock; espeak_Info writes a pointer to a static string.
    unsafe { espeak_Info(&mut path) };
    if path.is_null() {
        return PathBuf::from("espeak-ng-data");
    }
    // SAFETY: non-NULL, NUL-terminated, owned by espeak-ng and unchanged while the lock is held.
    let path = unsafe { CStr::from_ptr(path) };
    PathBuf::from(path.to_string_lossy().into_owned())
}

/// Receives audio from espeak_Synth; returning 0 lets synthesis continue.
extern "C" fn synth_callback(wav: *mut c_short, numsamples: c_int, _events: *mut c_void) -> c_int {
    let Ok(count) = usize::try_from(numsamples) else { return 0 };
    if wav.is_null() || count == 0 {
        return 0;
    }
    // SAFETY: espeak-ng passes `numsamples` valid samples at `wav`, alive during this call.
    let samples = unsafe { std::slice::from_raw_parts(wav, count) };
    let mut out = SYNTH_SAMPLES.lock().unwrap_or_else(PoisonError::into_inner);
    out.extend(samples.iter().map(|&s| f32::from(s) / 32_768.0));
    0
}

fn set_voice(engine: &mut Engine, voice: &str) -> Result<()> {
    if engine.voice.as_deref() == Some(voice) {
        return Ok(());
    }
    let unknown = || ModelError::InvalidInput(format!("unknown espeak voice `{voice}`"));
    if voice.trim().is_empty() {
        return Err(unknown());
    }
    let name = CString::new(voice).map_err(|_| unknown())?;
    // SAFETY: ENGINE's lock is held (we have &mut Engine); `name` is a valid C string that
    // espeak-ng copies.
    let rc = unsafe { espeak_SetVoiceByName(name.as_ptr()) };
    if rc != EE_OK {
        // A failed switch may leave espeak-ng's previous voice half-replaced.
        engine.voice = None;
        return Err(unknown());
    }
    engine.voice = Some(voice.to_string());
    Ok(())
}

/// Text for espeak-ng: a C string cannot hold NUL, and a NUL would end the text early anyway.
fn c_text(text: &str) -> Result<CString> {
    CString::new(text.replace('\0', " ")).map_err(|_| ModelError::InvalidInput("input text contains NUL bytes".into()))
}

/// IPA phonemes of `text`, one string per sentence, the way Piper's `phonemize_eSpeak` builds
/// them: clauses of a sentence are joined with their punctuation (`,` `:` `;` followed by a
/// space), a sentence ends after `.` `?` `!` (kept at its end), language-switch flags such as
/// `(en)` are dropped, and the result is in Unicode NFD (Piper voices map `ç` as `c` + U+0327).
/// Empty or whitespace-only text gives no sentences.
pub fn phonemize(text: &str, espeak_voice: &str) -> Result<Vec<String>> {
    let c_text = c_text(text)?;
    let text = c_text.to_str().map_err(|_| ModelError::InvalidInput("input text is not UTF-8".into()))?;
    if text.trim().is_empty() {
        // Still validate the voice, so a bad voice name fails the same way for every input.
        return with_engine(|engine| set_voice(engine, espeak_voice)).map(|()| Vec::new());
    }
    let clauses = with_engine(|engine| {
        set_voice(engine, espeak_voice)?;
        let base = c_text.as_ptr().cast::<c_void>();
        let mut cursor: *const c_void = base;
        let mut clauses = Vec::new();
        let mut previous = 0;
        while !cursor.is_null() {
            // SAFETY: ENGINE's lock is held; `cursor` points into `c_text` (NUL-terminated and
            // alive for the whole loop), and espeak-ng advances it within the text or sets it to
            // NULL at the end.
            let out = unsafe { espeak_TextToPhonemes(&mut cursor, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA) };
            let phonemes = if out.is_null() {
                String::new()
            } else {
                // SAFETY: non-NULL NUL-terminated string in espeak-ng's static buffer, copied
                // before the next call overwrites it.
                unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned()
            };
            // Where the clause ended, as a byte offset (one past the text's NUL at the end).
            let consumed =
                if cursor.is_null() { text.len() + 1 } else { (cursor as usize).saturating_sub(base as usize).min(text.len() + 1) };
            clauses.push((phonemes, clause_terminator(text, consumed)));
            // A pointer that does not advance would loop forever; no known input does that.
            if consumed > text.len() || consumed <= previous {
                break;
            }
            previous = consumed;
        }
        Ok(clauses)
    })?;
    Ok(join_clauses(clauses))
}

/// The punctuation that ended a clause, as ASCII. espeak-ng leaves its text pointer just past the
/// first character of the next clause (its look-ahead), so look back from before that character,
/// past spaces. Piper steps back one byte and skips only ' ', which misses the terminator before
/// a non-ASCII letter ("Bonjour. Ça va?"), after a closing quote, before a newline, and CJK
/// punctuation.
fn clause_terminator(text: &str, consumed: usize) -> Option<char> {
    let end = if consumed > text.len() {
        // The whole text was read; there is no look-ahead character.
        text.len()
    } else {
        let mut end = consumed;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].char_indices().next_back().map_or(0, |(i, _)| i)
    };
    let last = text[..end]
        .chars()
        .rev()
        .find(|&c| !(c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ']' | '”' | '’' | '»' | '」' | '』' | '）')))?;
    match last {
        '.' | '。' | '．' => Some('.'),
        '?' | '？' => Some('?'),
        '!' | '！' => Some('!'),
        ',' | '，' | '、' => Some(','),
        ':' | '：' => Some(':'),
        ';' | '；' => Some(';'),
        _ => None,
    }
}

fn join_clauses(clauses: Vec<(String, Option<char>)>) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut current = String::new();
    for (phonemes, terminator) in clauses {
        let phonemes = drop_language_flags(&phonemes);
        if !phonemes.trim().is_empty() {
            // espeak-ng also ends clauses without punctuation (long clauses, paragraph breaks);
            // Piper glues those together, which runs the last and first words into one.
            if !current.is_empty() && !current.ends_with(' ') {
                current.push(' ');
            }
            current.push_str(&phonemes);
        }
        match terminator {
            Some(t @ ('.' | '?' | '!')) => {
                current.push(t);
                sentences.push(std::mem::take(&mut current));
            }
            Some(t @ (',' | ':' | ';')) => {
                current.push(t);
                current.push(' ');
            }
            _ => {}
        }
    }
    sentences.push(current);
    sentences.into_iter().map(|s| s.trim().to_string()).filter(|s| s.chars().any(char::is_alphabetic)).collect()
}

/// Removes `(lang)` flags espeak-ng puts around words it reads in another language, keeping the
/// words, and decomposes to NFD.
fn drop_language_flags(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut in_flag = false;
    for c in phonemes.chars() {
        match c {
            '(' => in_flag = true,
            ')' if in_flag => in_flag = false,
            _ if in_flag => {}
            _ => push_nfd(&mut out, c),
        }
    }
    out
}

/// Canonical decompositions of the precomposed Latin letters (Latin-1, Latin Extended-A, pinyin
/// vowels, ẽ/ỹ) as (combining mark, precomposed letters, their base letters, position by
/// position). std has no Unicode normalisation and espeak-ng's IPA only uses these.
const DECOMPOSITIONS: &[(char, &str, &str)] = &[
    ('\u{0300}', "ÀÈÌÒÙàèìòùǛǜ", "AEIOUaeiouÜü"),
    ('\u{0301}', "ÁÉÍÓÚÝáéíóúýĆćĹĺŃńŔŕŚśŹźǗǘ", "AEIOUYaeiouyCcLlNnRrSsZzÜü"),
    ('\u{0302}', "ÂÊÎÔÛâêîôûĈĉĜĝĤĥĴĵŜŝŴŵŶŷ", "AEIOUaeiouCcGgHhJjSsWwYy"),
    ('\u{0303}', "ÃÑÕãñõĨĩŨũẼẽỸỹ", "ANOanoIiUuEeYy"),
    ('\u{0304}', "ĀāĒēĪīŌōŪūǕǖ", "AaEeIiOoUuÜü"),
    ('\u{0306}', "ĂăĔĕĞğĬĭŎŏŬŭ", "AaEeGgIiOoUu"),
    ('\u{0307}', "ĊċĖėĠġİŻż", "CcEeGgIZz"),
    ('\u{0308}', "ÄËÏÖÜäëïöüÿŸ", "AEIOUaeiouyY"),
    ('\u{030A}', "ÅåŮů", "AaUu"),
    ('\u{030B}', "ŐőŰű", "OoUu"),
    ('\u{030C}', "ČčĎďĚěĽľŇňŘřŠšŤťŽžǍǎǏǐǑǒǓǔǙǚ", "CcDdEeLlNnRrSsTtZzAaIiOoUuÜü"),
    ('\u{0327}', "ÇçĢģĶķĻļŅņŖŗŞşŢţ", "CcGgKkLlNnRrSsTt"),
    ('\u{0328}', "ĄąĘęĮįŲų", "AaEeIiUu"),
];

fn push_nfd(out: &mut String, c: char) {
    if c.is_ascii() {
        out.push(c);
        return;
    }
    for &(mark, composed, bases) in DECOMPOSITIONS {
        if let Some(i) = composed.chars().position(|x| x == c)
            && let Some(base) = bases.chars().nth(i)
        {
            // Bases such as ü decompose further.
            push_nfd(out, base);
            out.push(mark);
            return;
        }
    }
    out.push(c);
}

/// Speech from espeak-ng's own synthesiser: (mono f32 samples, sample rate).
pub fn synthesize(text: &str, espeak_voice: &str) -> Result<(Vec<f32>, u32)> {
    if text.trim().is_empty() {
        return Err(ModelError::InvalidInput("input text is empty".into()));
    }
    let c_text = c_text(text)?;
    with_engine(|engine| {
        set_voice(engine, espeak_voice)?;
        SYNTH_SAMPLES.lock().unwrap_or_else(PoisonError::into_inner).clear();
        // SAFETY: ENGINE's lock is held. In synchronous mode espeak_Synth returns only after the
        // callback has received all audio, so `c_text` outlives every use. Without espeakSSML
        // the text is read literally (no markup from callers). The size includes the NUL.
        let rc = unsafe {
            espeak_Synth(
                c_text.as_ptr().cast(),
                c_text.as_bytes_with_nul().len(),
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8 as c_uint,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        let samples = std::mem::take(&mut *SYNTH_SAMPLES.lock().unwrap_or_else(PoisonError::into_inner));
        if rc != EE_OK {
            return Err(ModelError::Inference(format!("espeak-ng synthesis failed (code {rc})")));
        }
        Ok((samples, engine.sample_rate))
    })
}

/// Whether espeak-ng knows `voice` (a voice name such as "en-us", "de" or "English (America)",
/// optionally with a variant, "en-us+f3").
pub fn has_voice(voice: &str) -> bool {
    with_engine(|engine| set_voice(engine, voice)).is_ok()
}

/// espeak-ng's voices as (name, language code), e.g. ("English (America)", "en-us"). Both work
/// as the `espeak_voice` argument. MBROLA voices are left out: they need separate databases.
pub fn list_voices() -> Vec<(String, String)> {
    with_engine(|_engine| {
        // SAFETY: ENGINE's lock is held; NULL lists all voices. The array and the strings it
        // points to are owned by espeak-ng and stay valid until the next ListVoices call, which
        // the lock prevents until we have copied them.
        let list = unsafe { espeak_ListVoices(ptr::null_mut()) };
        let mut voices = Vec::new();
        if list.is_null() {
            return Ok(voices);
        }
        for i in 0.. {
            // SAFETY: the array is NULL-terminated and we stop at the terminator.
            let entry = unsafe { *list.add(i) };
            if entry.is_null() {
                break;
            }
            // SAFETY: non-NULL entries point to espeak_VOICE structs valid under the lock.
            let voice = unsafe { &*entry };
            let Some(name) = c_string(voice.name) else { continue };
            let identifier = c_string(voice.identifier).unwrap_or_default();
            if identifier.starts_with("mb/") || voice.languages.is_null() {
                continue;
            }
            // SAFETY: `languages` starts with one priority byte followed by a NUL-terminated
            // language name.
            let Some(language) = c_string(unsafe { voice.languages.add(1) }) else { continue };
            voices.push((name, language));
        }
        Ok(voices)
    })
    .unwrap_or_default()
}

fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: callers pass non-NULL pointers to NUL-terminated strings owned by espeak-ng,
    // valid under ENGINE's lock.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phonemize_english() {
        let sentences = phonemize("Hello world.", "en-us").unwrap();
        assert_eq!(sentences.len(), 1, "{sentences:?}");
        let s = &sentences[0];
        assert!(s.contains('h') && s.contains('l') && s.contains('w'), "{s}");
        assert!(s.ends_with('.'), "{s}");
    }

    #[test]
    fn phonemize_splits_sentences_and_joins_clauses() {
        let sentences = phonemize("Hello, world! How are you? Fine.", "en-us").unwrap();
        assert_eq!(sentences.len(), 3, "{sentences:?}");
        assert!(sentences[0].contains(", "), "{sentences:?}");
        assert!(sentences[0].ends_with('!'), "{sentences:?}");
        assert!(sentences[1].ends_with('?'), "{sentences:?}");
    }

    #[test]
    fn phonemize_german() {
        let sentences = phonemize("Ich möchte Brötchen.", "de").unwrap();
        assert_eq!(sentences.len(), 1, "{sentences:?}");
        // ç comes out decomposed, as Piper's id maps expect.
        assert!(sentences[0].contains("c\u{0327}"), "{sentences:?}");
        assert!(!sentences[0].contains('ç'), "{sentences:?}");
    }

    #[test]
    fn sentence_ends_before_non_ascii_letters_and_after_quotes() {
        let sentences = phonemize("Bonjour. Ça va?", "fr").unwrap();
        assert_eq!(sentences.len(), 2, "{sentences:?}");
        let sentences = phonemize("He said \"Stop!\" Then he left.\n", "en-us").unwrap();
        assert_eq!(sentences.len(), 2, "{sentences:?}");
        assert!(sentences[0].ends_with('!') && sentences[1].ends_with('.'), "{sentences:?}");
    }

    #[test]
    fn cjk_punctuation_ends_sentences() {
        let sentences = phonemize("你好。我很好，谢谢。", "cmn").unwrap();
        assert_eq!(sentences.len(), 2, "{sentences:?}");
        assert!(sentences[1].contains(", "), "{sentences:?}");
    }

    #[test]
    fn phonemize_empty_text() {
        assert!(phonemize("  \n", "en-us").unwrap().is_empty());
    }

    #[test]
    fn unknown_voice_is_invalid_input() {
        let err = phonemize("Hello.", "xx-no-such-voice").unwrap_err();
        assert!(matches!(err, ModelError::InvalidInput(ref m) if m.contains("unknown espeak voice")));
        assert!(!has_voice("xx-no-such-voice"));
        // The engine still works after a failed switch.
        assert!(!phonemize("Hello.", "en-us").unwrap().is_empty());
    }

    #[test]
    fn voices_are_listed() {
        let voices = list_voices();
        assert!(voices.iter().any(|(_, lang)| lang == "en-us"), "{voices:?}");
        assert!(voices.iter().any(|(_, lang)| lang == "de"), "{voices:?}");
        assert!(has_voice("en-us") && has_voice("de"));
    }

    #[test]
    fn espeak_synthesizes_speech() {
        let (samples, rate) = synthesize("The kitchen lights are on.", "en-us").unwrap();
        assert_eq!(rate, 22_050);
        let seconds = samples.len() as f32 / rate as f32;
        assert!(seconds > 0.3, "{seconds} s");
        let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt();
        assert!(rms > 0.01, "rms {rms}");
        assert!(matches!(synthesize(" ", "en-us"), Err(ModelError::InvalidInput(_))));
    }

    #[test]
    fn clauses_join_like_piper() {
        let clauses = vec![
            ("həlˈoʊ".to_string(), Some(',')),
            ("(en)wˈɜːld(de)".to_string(), None),
            ("ʌɡˈɛn".to_string(), Some('.')),
            ("ɡˈʊd".to_string(), Some('!')),
            (String::new(), Some('.')),
        ];
        assert_eq!(join_clauses(clauses), ["həlˈoʊ, wˈɜːld ʌɡˈɛn.", "ɡˈʊd!"]);
    }

    #[test]
    fn phonemize_after_synthesis() {
        synthesize("One two.", "de").unwrap();
        let sentences = phonemize("It costs 3.5 dollars.", "en-us").unwrap();
        assert_eq!(sentences.len(), 1, "{sentences:?}");
        assert!(sentences[0].contains("θɹˈiː") && sentences[0].contains("fˈaɪv"), "{sentences:?}");
    }

    #[test]
    fn nfd_decomposition() {
        let mut s = String::new();
        for c in "çǖa".chars() {
            push_nfd(&mut s, c);
        }
        assert_eq!(s, "c\u{0327}u\u{0308}\u{0304}a");
    }
}
