//! Voice-turn latency over the WebSocket (`/v1/voice`), measured as a client sees it.
//!
//! A gateway runs in this process on a real socket with the default local model set
//! (whisper tiny.en, SmolLM2-135M Q8_0, Piper en_US joe medium; all preloaded) and a small
//! knowledge base. Each turn a question spoken by Piper is streamed in real time as 20 ms
//! frames at 16 kHz; then:
//! - push-to-talk turns send `stop` right after the last speech frame: end of speech = `stop`;
//! - hands-free turns send silence until the server's VAD ends the utterance: end of speech =
//!   the last frame that held speech (so the VAD's silence window counts against us).
//!
//! Reported, p50 and p90: end of speech -> first audio frame, and -> `done`, plus the server's
//! own stage timings and how often speech of sentence 1 began before the LLM had finished.
//! Then the same questions over the OpenAI Realtime socket (`/v1/realtime`), push-to-talk: 20 ms
//! `input_audio_buffer.append` frames at 24 kHz in real time, `commit` + `response.create` at the
//! end of speech, up to the first `response.output_audio.delta` and `response.done`.
//!
//! `cargo bench --bench voice` prints a Markdown section between `<!-- voice:start -->` and
//! `<!-- voice:end -->`; `scripts/bench-voice.sh` puts it into docs/BENCHMARKS.md.
//! `TURNS` (default 24), `HANDS_FREE_TURNS` (default 8) and `REALTIME_TURNS` (default 8) set the
//! number of turns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uag_gateway::config::{Config, ConfigOrigin};
use uag_gateway::{AppState, serve};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const QUESTIONS: &[&str] = &[
    "When does the greenhouse open the roof vents?",
    "When are the tomatoes watered?",
    "What is the greenhouse controller called?",
    "Which power supply does the Raspberry Pi five need?",
    "How much memory does the kiosk have?",
    "What causes random reboots?",
    "How do I fix a blank screen?",
    "Where does kioskd read its settings?",
    "What does the idle timeout setting do?",
    "Where are the kiosk logs written?",
    "How does the kiosk get its address?",
    "What should I do when the kiosk shows the wrong page?",
    "Which package does the kiosk software come in?",
    "What operating system does the kiosk use?",
    "How do I set a static address?",
    "What voltage means the power supply is failing?",
    "How do I restart the display service?",
    "What does the start url setting name?",
];

const GREENHOUSE: &str = "# Greenhouse\n\nThe greenhouse controller is called Fernwood. The greenhouse opens the roof vents when \
                          the temperature passes 28 degrees Celsius. The greenhouse waters the tomatoes every morning at six.\n";

fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UAG_MODELS_DIR") {
        return dir.into();
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(state).join("uag/models");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state/uag/models")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[rank.min(v.len() - 1)]
}

#[derive(Debug, Default)]
struct Turn {
    first_audio_ms: f64,
    done_ms: f64,
    asr_ms: f64,
    retrieval_ms: f64,
    first_token_ms: f64,
    audio_before_last_delta: bool,
    transcript: String,
}

async fn next(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), ws.next()).await.expect("server answers").unwrap().unwrap();
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

/// Streams `pcm` (16 kHz s16le) in real time; returns when the last frame was sent.
async fn stream_real_time(ws: &mut Ws, pcm: &[u8]) {
    let frame_bytes = 16_000 / 50 * 2;
    let started = Instant::now();
    for (i, frame) in pcm.chunks(frame_bytes).enumerate() {
        ws.send(Message::Binary(frame.to_vec().into())).await.unwrap();
        let due = started + Duration::from_millis(20 * (i as u64 + 1));
        tokio::time::sleep_until(due.into()).await;
    }
}

/// One turn; `hands_free`: silence until the VAD ends it instead of `stop`.
async fn turn(ws: &mut Ws, n: u64, speech: &[u8], hands_free: bool) -> Turn {
    ws.send(Message::Text(json!({"type": "start", "sample_rate": 16000}).to_string().into())).await.unwrap();
    let mut lead = vec![0u8; 16_000 / 5 * 2]; // 200 ms of quiet before speaking
    lead.extend_from_slice(speech);
    stream_real_time(ws, &lead).await;
    let end_of_speech = Instant::now();
    if hands_free {
        // Keep the microphone open (silence) until the server's endpointing closes the turn.
        let silence = vec![0u8; 16_000 / 50 * 2];
        loop {
            ws.send(Message::Binary(silence.clone().into())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await {
                let e: Value = serde_json::from_str(&t).unwrap();
                if e["type"] == "vad" && e["speech"] == "ended" {
                    break;
                }
            }
            assert!(end_of_speech.elapsed() < Duration::from_secs(10), "the VAD never ended the utterance");
        }
    } else {
        ws.send(Message::Text(json!({"type": "stop"}).to_string().into())).await.unwrap();
    }
    let mut result = Turn::default();
    let mut first_audio = None;
    let mut last_delta = None;
    loop {
        match next(ws).await {
            Message::Binary(_) => {
                first_audio.get_or_insert_with(Instant::now);
            }
            Message::Text(t) => {
                let e: Value = serde_json::from_str(&t).unwrap();
                match e["type"].as_str().unwrap() {
                    "delta" => last_delta = Some(Instant::now()),
                    "transcript" => result.transcript = e["text"].as_str().unwrap_or_default().to_owned(),
                    "error" => eprintln!("turn {n}: {e}"),
                    "done" if e["turn"] == n => {
                        let done = Instant::now();
                        let t = &e["timings"];
                        assert_eq!(e["reason"], "answered", "turn {n}: {e}");
                        let first_audio = first_audio.expect("the answer was spoken");
                        result.first_audio_ms = (first_audio - end_of_speech).as_secs_f64() * 1000.0;
                        result.done_ms = (done - end_of_speech).as_secs_f64() * 1000.0;
                        result.asr_ms = t["asr_ms"].as_f64().unwrap_or(f64::NAN);
                        result.retrieval_ms = t["retrieval_ms"].as_f64().unwrap_or(f64::NAN);
                        result.first_token_ms = t["first_token_ms"].as_f64().unwrap_or(f64::NAN);
                        result.audio_before_last_delta = last_delta.is_some_and(|d| first_audio < d);
                        return result;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// One push-to-talk turn over `/v1/realtime`: end of speech = `commit` (sent with
/// `response.create` right after the last speech frame).
async fn realtime_turn(ws: &mut Ws, speech_24k: &[u8]) -> Turn {
    let frame_bytes = 24_000 / 50 * 2;
    let mut lead = vec![0u8; 24_000 / 5 * 2]; // 200 ms of quiet before speaking
    lead.extend_from_slice(speech_24k);
    let started = Instant::now();
    for (i, frame) in lead.chunks(frame_bytes).enumerate() {
        let append = json!({"type": "input_audio_buffer.append", "audio": base64::engine::general_purpose::STANDARD.encode(frame)});
        ws.send(Message::Text(append.to_string().into())).await.unwrap();
        tokio::time::sleep_until((started + Duration::from_millis(20 * (i as u64 + 1))).into()).await;
    }
    let end_of_speech = Instant::now();
    for event in [json!({"type": "input_audio_buffer.commit"}), json!({"type": "response.create"})] {
        ws.send(Message::Text(event.to_string().into())).await.unwrap();
    }
    let mut result = Turn::default();
    let mut first_audio = None;
    loop {
        let Message::Text(t) = next(ws).await else { continue };
        let e: Value = serde_json::from_str(&t).unwrap();
        match e["type"].as_str().unwrap_or_default() {
            "response.output_audio.delta" => {
                first_audio.get_or_insert_with(Instant::now);
            }
            "conversation.item.input_audio_transcription.completed" => {
                result.transcript = e["transcript"].as_str().unwrap_or_default().to_owned();
            }
            "error" => eprintln!("realtime: {e}"),
            "response.done" => {
                assert_eq!(e["response"]["status"], "completed", "{e}");
                let done = Instant::now();
                result.first_audio_ms = (first_audio.expect("the answer was spoken") - end_of_speech).as_secs_f64() * 1000.0;
                result.done_ms = (done - end_of_speech).as_secs_f64() * 1000.0;
                return result;
            }
            _ => {}
        }
    }
}

fn row(name: &str, values: &[f64]) -> String {
    format!("| {name} | {:.0} | {:.0} |", percentile(values, 50.0), percentile(values, 90.0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let turns = env_usize("TURNS", 24);
    let hands_free_turns = env_usize("HANDS_FREE_TURNS", 8);
    let realtime_turns = env_usize("REALTIME_TURNS", 8);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[graphrag]\nsample_kb = \"\"\n[models]\ndir = \"{}\"\npreload = [\"defaults\"]\n",
        dir.path().display(),
        models_dir().display()
    );
    let config = Config::from_toml_str(&text, &ConfigOrigin::File("bench.toml".into()), &[]).unwrap();
    let state = AppState::new(config).unwrap();
    let engine = state.engine.clone().unwrap();
    let kb = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kb");
    for entry in std::fs::read_dir(&kb).unwrap() {
        engine.ingest_path(&entry.unwrap().path(), "default").unwrap();
    }
    let greenhouse = dir.path().join("greenhouse.md");
    std::fs::write(&greenhouse, GREENHOUSE).unwrap();
    engine.ingest_path(&greenhouse, "default").unwrap();

    // The questions, spoken by Piper and resampled to 16 kHz as a microphone client sends them.
    let models = state.models.clone().unwrap();
    let voice = models.resolve_voice(None).unwrap();
    let mut speech = Vec::new();
    let mut speech_24k = Vec::new();
    for q in QUESTIONS {
        let s = models.speak(&voice, (*q).to_owned(), Default::default()).await.unwrap();
        let pcm = uag_models::audio::resample_mono(&s.samples, s.sample_rate, 16_000).unwrap();
        speech.push(uag_models::audio::to_pcm16le(&pcm));
        let pcm = uag_models::audio::resample_mono(&s.samples, s.sample_rate, 24_000).unwrap();
        speech_24k.push(uag_models::audio::to_pcm16le(&pcm));
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    let server = tokio::spawn(serve(listener, state.clone(), async move { signal.cancelled().await }));
    // Let preloading finish before timing anything.
    for _ in 0..600 {
        let loaded = models.status().iter().filter(|s| !s.loaded.is_empty()).count();
        if loaded >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/voice")).await.unwrap();
    let _ready = next(&mut ws).await;

    // One warm-up turn (first-use costs are not what a kiosk user sees).
    let _ = turn(&mut ws, 1, &speech[0], false).await;
    let mut n = 1u64;
    let mut push_to_talk = Vec::new();
    let mut hands_free = Vec::new();
    for i in 0..turns + hands_free_turns {
        // Each question on its own: memory would make prompts grow across the run.
        ws.send(Message::Text(json!({"type": "reset"}).to_string().into())).await.unwrap();
        n += 1;
        let free = i >= turns;
        let t = turn(&mut ws, n, &speech[i % speech.len()], free).await;
        eprintln!(
            "turn {n} ({}): first audio {:.0} ms, done {:.0} ms; heard {:?}",
            if free { "hands-free" } else { "push-to-talk" },
            t.first_audio_ms,
            t.done_ms,
            t.transcript
        );
        if free { hands_free.push(t) } else { push_to_talk.push(t) }
    }
    // The OpenAI Realtime front door: a new session per question (no memory across them).
    let mut realtime = Vec::new();
    for i in 0..realtime_turns {
        let (mut rt, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/realtime?model=gpt-realtime")).await.unwrap();
        let _created = next(&mut rt).await;
        let update = json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": null}}}});
        rt.send(Message::Text(update.to_string().into())).await.unwrap();
        let _updated = next(&mut rt).await;
        let t = realtime_turn(&mut rt, &speech_24k[i % speech_24k.len()]).await;
        eprintln!("realtime turn {}: first audio {:.0} ms, done {:.0} ms; heard {:?}", i + 1, t.first_audio_ms, t.done_ms, t.transcript);
        realtime.push(t);
        let _ = rt.close(None).await;
    }
    shutdown.cancel();
    let _ = server.await;

    let col = |ts: &[Turn], f: fn(&Turn) -> f64| ts.iter().map(f).collect::<Vec<f64>>();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let overlap = push_to_talk.iter().filter(|t| t.audio_before_last_delta).count();
    let first_audio_p50 = percentile(&col(&push_to_talk, |t| t.first_audio_ms), 50.0);
    println!("<!-- voice:start -->");
    println!(
        "Measured by `scripts/bench-voice.sh` (`cargo bench --bench voice`) on {cpu}, {threads} cores. Model set: \
         whisper-tiny.en (ASR), answers as configured by default (`[graphrag] answers = \"extractive\"`: sentences \
         of the retrieved passages, no LLM; SmolLM2-135M-Instruct Q8_0 is loaded but not asked), Piper en_US joe medium \
         (speech), all preloaded; one warm-up turn, then {turns} push-to-talk turns and \
         {hands_free_turns} hands-free turns over one WebSocket, each question ({} distinct, spoken by Piper) \
         streamed in real time as 20 ms frames at 16 kHz. Milliseconds from the end of speech, as the client sees them.\n",
        QUESTIONS.len()
    );
    println!("| push-to-talk (`stop` at end of speech), {turns} turns | p50 ms | p90 ms |");
    println!("| --- | --- | --- |");
    println!("{}", row("speech recognised (server: `asr_ms`)", &col(&push_to_talk, |t| t.asr_ms)));
    println!("{}", row("passages retrieved (server: `retrieval_ms`)", &col(&push_to_talk, |t| t.retrieval_ms)));
    println!("{}", row("first answer token (server: `first_token_ms`)", &col(&push_to_talk, |t| t.first_token_ms)));
    println!("{}", row("**first audio frame received**", &col(&push_to_talk, |t| t.first_audio_ms)));
    println!("{}", row("`done` received", &col(&push_to_talk, |t| t.done_ms)));
    println!();
    println!("| hands-free (server VAD ends the utterance, silence window included), {hands_free_turns} turns | p50 ms | p90 ms |");
    println!("| --- | --- | --- |");
    println!("{}", row("**first audio frame received**", &col(&hands_free, |t| t.first_audio_ms)));
    println!("{}", row("`done` received", &col(&hands_free, |t| t.done_ms)));
    println!();
    println!(
        "| OpenAI Realtime (`/v1/realtime`, push-to-talk: `commit` + `response.create` at end of speech, 24 kHz), \
         {realtime_turns} turns | p50 ms | p90 ms |"
    );
    println!("| --- | --- | --- |");
    println!("{}", row("**first `response.output_audio.delta` received**", &col(&realtime, |t| t.first_audio_ms)));
    println!("{}", row("`response.done` received", &col(&realtime, |t| t.done_ms)));
    println!();
    let p50 = |ts: &[Turn]| percentile(&col(ts, |t| t.first_audio_ms), 50.0);
    let verdict = |value: f64, target: f64| if value <= target { "met" } else { "not met" };
    let (hands_free_p50, realtime_p50) = (p50(&hands_free), p50(&realtime));
    println!(
        "Speech of the first sentence began before the answer text was complete in {overlap} of {turns} push-to-talk \
         turns (the rest were one-sentence answers). Milestones (issue 18), end of speech -> first audio p50 on this \
         machine: push-to-talk <= 1.0 s: {first_audio_p50:.0} ms, {}; hands-free <= 1.5 s: {hands_free_p50:.0} ms, {}; \
         Realtime push-to-talk <= 1.0 s: {realtime_p50:.0} ms, {}.",
        verdict(first_audio_p50, 1000.0),
        verdict(hands_free_p50, 1500.0),
        verdict(realtime_p50, 1000.0),
    );
    println!("<!-- voice:end -->");
}
