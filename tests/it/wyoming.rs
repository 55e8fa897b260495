//! The Wyoming server (`[wyoming]`) end to end, with the `wyoming` Python package (the client
//! library Home Assistant uses) as the client: `describe` lists the installed speech model,
//! voice and the knowledge-base assistant; `synthesize` speaks with Piper; that speech comes
//! back through `transcribe`; a `transcript` to the handle program is answered from the
//! knowledge base; streamed synthesis speaks sentence by sentence in one audio stream. Bad
//! framing ends the connection with an `error` event, and the server keeps serving.

use crate::common;

use std::time::Duration;

use common::{Gateway, MockUpstream, client, models_toml, wait_until, word_error_rate};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SPEECH_MODELS: &[&str] = &["whisper-tiny.en", "smollm2-135m-instruct", "piper-en_US-joe-medium", "onnxruntime"];

const GREENHOUSE: &str = "# Greenhouse\n\nThe greenhouse controller is called Fernwood. The greenhouse opens the roof vents when \
                          the temperature passes 28 degrees Celsius. The greenhouse waters the tomatoes every morning at six.\n";

async fn gateway() -> (MockUpstream, Gateway, std::net::SocketAddr) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &format!("{}\n[wyoming]\nlisten = \"127.0.0.1:0\"\n", models_toml(SPEECH_MODELS))).await;
    wait_until(Duration::from_secs(10), "the Wyoming server listens", || gw.state.wyoming_addr.get().is_some()).await;
    let addr = *gw.state.wyoming_addr.get().unwrap();
    (mock, gw, addr)
}

#[tokio::test]
async fn home_assistants_wyoming_client_transcribes_speaks_and_asks() {
    let (_mock, gw, addr) = gateway().await;
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::text(GREENHOUSE).file_name("greenhouse.md"));
    assert!(client().post(gw.url("/v1/documents")).multipart(form).send().await.unwrap().status().is_success());

    let stdout = common::run_sdk_script("wyoming_check.py", &[&addr.ip().to_string(), &addr.port().to_string()]).await;
    let got: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("{got}");

    // Every installed speech model is offered (a multilingual one adds its languages).
    assert!(got["asr_models"].as_array().unwrap().iter().any(|m| m == "whisper-tiny.en"), "{got}");
    assert!(got["asr_languages"].as_array().unwrap().iter().any(|l| l == "en"), "{got}");
    assert!(got["voices"].as_array().unwrap().iter().any(|v| v == "piper-en_US-joe-medium"), "{got}");
    assert_eq!(got["handle"], serde_json::json!(["uag-knowledge-base"]), "{got}");
    assert_eq!(got["tts_streaming"], true);

    assert_eq!(got["tts_rate"], 22_050, "Piper's own rate");
    assert!(got["tts_seconds"].as_f64().unwrap() > 0.8, "{got}");
    let heard = got["transcript"].as_str().unwrap();
    assert!(word_error_rate("When does the greenhouse open the roof vents?", heard) <= 0.25, "heard {heard:?}");

    // The answer comes from the knowledge base (the passage about watering), ready to speak.
    let answer = got["handled"].as_str().unwrap_or_else(|| panic!("not handled: {got}"));
    assert!(answer.contains("six") || answer.contains("morning"), "{answer}");
    assert!(!answer.contains('['), "no citation marks in a spoken answer: {answer}");

    // Three pieces of text, two sentences, one audio stream of both.
    assert_eq!(got["stream_audio_starts"], 1, "{got}");
    assert!(got["stream_seconds"].as_f64().unwrap() > 2.0, "{got}");
    assert_eq!(got["stream_stopped"], true);
}

#[tokio::test]
async fn bad_framing_gets_an_error_event_and_the_server_keeps_serving() {
    let (_mock, _gw, addr) = gateway().await;
    for bad in [&b"this is not json\n"[..], b"{\"type\":\"audio-chunk\",\"payload_length\":99999999}\n"] {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(bad).await.unwrap();
        let mut reader = BufReader::new(read);
        let mut header = String::new();
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut header)).await.unwrap().unwrap();
        let header: Value = serde_json::from_str(&header).unwrap();
        assert_eq!(header["type"], "error", "{header}");
        let mut data = vec![0; header["data_length"].as_u64().unwrap() as usize];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut data).await.unwrap();
        let data: Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(data["code"], "invalid_event", "{data}");
        // Then the connection is closed.
        let mut rest = String::new();
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut rest)).await.unwrap().unwrap(), 0);
    }
    // A well-formed client is still served.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(b"{\"type\":\"ping\",\"data\":{\"text\":\"hi\"}}\n").await.unwrap();
    let mut header = String::new();
    BufReader::new(read).read_line(&mut header).await.unwrap();
    let header: Value = serde_json::from_str(&header).unwrap();
    assert_eq!(header["type"], "pong", "{header}");
}
