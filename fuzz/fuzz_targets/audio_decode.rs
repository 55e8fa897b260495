//! Audio upload decoding (`uag_models::audio::decode_to_mono_16k`, symphonia + rubato): the
//! first byte picks the extension hint (wav, flac, mp3, ogg or none), the rest is the file.
//! The function must return, never unwind, and what it returns must be usable 16 kHz audio.
//!
//! `decode_to_mono_16k` catches decoder panics itself (catch_unwind -> UnsupportedAudio), but
//! libFuzzer's panic hook aborts at the panic site, before any catch_unwind. This target
//! therefore installs a hook that only remembers the message, so only a panic escaping the
//! function counts as a crash (printed, then abort). Set
//! `UAG_FUZZ_STRICT_AUDIO=1` to keep libFuzzer's hook and report every decoder panic,
//! caught or not (those are symphonia bugs the gateway already survives).
#![no_main]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, Once};

use libfuzzer_sys::fuzz_target;
use uag_models::audio::decode_to_mono_16k;

static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

const HINTS: [Option<&str>; 5] = [Some("wav"), Some("flac"), Some("mp3"), Some("ogg"), None];

fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        if std::env::var_os("UAG_FUZZ_STRICT_AUDIO").is_none() {
            std::panic::set_hook(Box::new(|info| {
                if let Ok(mut last) = LAST_PANIC.lock() {
                    *last = info.to_string();
                }
            }));
        }
    });
    let Some((&selector, file)) = data.split_first() else { return };
    let hint = HINTS[usize::from(selector) % HINTS.len()];
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if let Ok(samples) = decode_to_mono_16k(file, hint) {
            assert!(!samples.is_empty(), "Ok with no samples");
            assert!(samples.iter().all(|s| s.is_finite()), "non-finite sample");
        }
    }));
    if outcome.is_err() {
        let last = LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
        eprintln!("panic escaped decode_to_mono_16k (hint {hint:?}): {last}");
        std::process::abort();
    }
});
