//! The local models end to end through HTTP, with the real model files that
//! `scripts/fetch-models.sh` installs: speech synthesised by Piper and transcribed back by
//! whisper, embeddings ranking a paraphrase, the local LLM answering a chat and writing a
//! grounded GraphRAG answer, and every endpoint's bad input answered with a clear 4xx while
//! the server keeps serving.

use crate::common;

use common::{Gateway, MockUpstream, client, delta_text, error_code, models_toml, sse_events, word_error_rate};
use serde_json::{Value, json};

const ALL: &[&str] = &["whisper-tiny.en", "smollm2-135m-instruct", "all-minilm-l6-v2", "piper-en_US-joe-medium", "onnxruntime"];

async fn gateway(extra: &str) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &format!("{}{extra}", models_toml(ALL))).await;
    (mock, gw)
}

async fn speak(gw: &Gateway, text: &str) -> Vec<u8> {
    let r = client()
        .post(gw.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "speech failed: {}", r.text().await.unwrap());
    assert_eq!(r.headers()["content-type"], "audio/wav");
    assert_eq!(r.headers()["x-sample-rate"], "22050");
    r.bytes().await.unwrap().to_vec()
}

async fn transcribe(gw: &Gateway, audio: Vec<u8>, file_name: &str, format: &str) -> (u16, String) {
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(audio).file_name(file_name.to_owned()))
        .text("model", "whisper-1")
        .text("response_format", format.to_owned());
    let r = client().post(gw.url("/v1/audio/transcriptions")).multipart(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn speech_round_trips_through_tts_and_asr() {
    let (_mock, gw) = gateway("").await;
    let sentence = "Turn on the kitchen lights and set the temperature to twenty degrees.";
    let wav = speak(&gw, sentence).await;
    // 22050 Hz 16-bit mono: between 2 and 8 seconds of speech.
    let seconds = (wav.len() - 44) as f64 / (22_050.0 * 2.0);
    assert!((2.0..8.0).contains(&seconds), "speech is {seconds} s long");

    let (status, body) = transcribe(&gw, wav.clone(), "speech.wav", "json").await;
    assert_eq!(status, 200, "{body}");
    let text = serde_json::from_str::<Value>(&body).unwrap()["text"].as_str().unwrap().to_owned();
    let wer = word_error_rate(sentence, &text);
    assert!(wer <= 0.25, "word error rate {wer:.2}: heard {text:?}");

    let (status, body) = transcribe(&gw, wav.clone(), "speech.wav", "verbose_json").await;
    assert_eq!(status, 200, "{body}");
    let verbose: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(verbose["language"], "en");
    assert!((verbose["duration"].as_f64().unwrap() - seconds).abs() < 0.3, "{verbose}");
    let segments = verbose["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    assert!(segments.iter().all(|s| s["end"].as_f64() >= s["start"].as_f64()));

    let (status, srt) = transcribe(&gw, wav.clone(), "speech.wav", "srt").await;
    assert_eq!(status, 200);
    assert!(srt.starts_with("1\n00:00:0") && srt.contains(" --> "), "{srt}");
    let (status, vtt) = transcribe(&gw, wav, "speech.wav", "vtt").await;
    assert_eq!(status, 200);
    assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");

    // Metrics saw the transcriptions (parsed, not grepped).
    let metrics = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let count = metrics
        .lines()
        .find(|l| l.starts_with("uag_asr_real_time_factor_count{model=\"whisper-tiny.en\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(count, Some(4.0), "{metrics}");
}

#[tokio::test]
async fn embeddings_rank_a_paraphrase_above_an_unrelated_sentence() {
    let (_mock, gw) = gateway("").await;
    let (status, body) = gw
        .post_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": [
                "How do I restart the network service?",
                "What is the command to reboot networking?",
                "Bananas are rich in potassium.",
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "all-minilm-l6-v2");
    let vectors: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (para, unrelated) = (dot(&vectors[0], &vectors[1]), dot(&vectors[0], &vectors[2]));
    assert!(para > unrelated + 0.3, "paraphrase {para:.3} vs unrelated {unrelated:.3}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    // base64 (what the official SDKs ask for by default) decodes to the same floats.
    let (status, b64) =
        gw.post_json("/v1/embeddings", &json!({"input": "How do I restart the network service?", "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{b64}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f64> = bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
    assert_eq!(floats.len(), 384);
    assert!(floats.iter().zip(&vectors[0]).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[tokio::test]
async fn the_local_llm_answers_chat_and_writes_grounded_answers() {
    let mock = MockUpstream::start().await;
    // `[graphrag] answers = "llm"`: the local LLM writes graphrag's answers (not the default).
    let gw = Gateway::with_mock_env(&mock, &models_toml(ALL), &[("UAG__GRAPHRAG__ANSWERS", "llm")]).await;
    // A plain chat model through the OpenAI route.
    let (status, body) = gw
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 24,
                    "messages": [{"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
                                 {"role": "user", "content": "What is the capital of France?"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let (_, models) = gw.get_json("/v1/models").await;
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "local/smollm2-135m-instruct"), "{models}");

    // JSON mode: constrained decoding makes the reply one JSON object, streamed or whole; a
    // schema is refused by name, and so is JSON from the knowledge base's cited answers.
    let json_mode = |stream: bool, format: Value, model: &str| {
        json!({"model": model, "temperature": 0, "max_tokens": 40, "stream": stream, "response_format": format,
               "messages": [{"role": "user", "content": "What is the capital of France? Answer in JSON, like {\"capital\": \"...\"}."}]})
    };
    let (status, body) =
        gw.post_json("/v1/chat/completions", &json_mode(false, json!({"type": "json_object"}), "smollm2-135m-instruct")).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).is_ok_and(|v| v.is_object()), "{content}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    let (status, _, text) =
        gw.post("/v1/chat/completions", &json_mode(true, json!({"type": "json_object"}), "smollm2-135m-instruct")).await;
    assert_eq!(status, 200, "{text}");
    let streamed: String = common::sse(&text)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok()?["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, content, "the same object streamed");
    let schema = json!({"type": "json_schema", "json_schema": {"name": "c", "schema": {"type": "object"}}});
    for (format, model) in [(schema, "smollm2-135m-instruct"), (json!({"type": "json_object"}), "graphrag")] {
        let (status, body) = gw.post_json("/v1/chat/completions", &json_mode(false, format, model)).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some("response_format")), "{model}: {body}");
    }

    // GraphRAG: the LLM writes from the retrieved passages and the sources come along.
    let doc = "# Greenhouse\n\nThe greenhouse controller is called Fernwood. Fernwood opens the roof vents when the \
               temperature passes 28 degrees Celsius. Fernwood waters the tomatoes every morning at six.\n";
    let r = client()
        .post(gw.url("/v1/documents"))
        .multipart(reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::text(doc).file_name("greenhouse.md")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (status, _, text) = gw
        .post(
            "/v1/inference",
            &json!({"model": "graphrag", "stream": true, "input": "When does Fernwood open the roof vents?", "params": {"max_tokens": 60}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    let statuses: Vec<&str> = events.iter().filter(|e| e["type"] == "status").filter_map(|e| e["message"].as_str()).collect();
    assert!(statuses.iter().any(|m| m.contains("with smollm2-135m-instruct")), "{statuses:?}");
    let answer = delta_text(&events);
    // The threshold is in the passage and not in the question: the answer carries a fact it
    // could only have taken from the knowledge base (whether the LLM's sentences passed the
    // verifier or the extracted ones replaced them), and nothing the passage does not say.
    assert!(answer.contains("28"), "{answer}");
    let evidence = uag_graphrag::verify::Evidence::new([doc], "When does Fernwood open the roof vents?");
    assert_eq!(evidence.unsupported_tokens(&answer).0, Vec::<String>::new(), "{answer}");
    let sources = events.iter().find(|e| e["type"] == "sources").expect("sources event");
    assert!(sources["sources"].as_array().unwrap().iter().any(|s| s["document"].as_str().unwrap().contains("greenhouse")), "{sources}");
    let done = events.iter().find(|e| e["type"] == "done").expect("done event");
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0, "{done}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let (_mock, gw) = gateway("").await;
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (Vec::new(), "empty.wav", "file"),
        (b"this is not audio at all, just text".to_vec(), "notes.wav", "unsupported_audio_format"),
        ((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), "noise.mp3", "unsupported_audio_format"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec(), "truncated.wav", "unsupported_audio_format"),
    ];
    for (bytes, name, want) in cases {
        let (status, body) = transcribe(&gw, bytes, name, "json").await;
        assert_eq!(status, 400, "{name}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let code = error_code(&body);
        assert!(code == want || body["error"]["param"] == want, "{name}: {body}");
    }
    let (status, body) = transcribe(&gw, speak(&gw, "Hello.").await, "a.wav", "docx").await;
    assert_eq!(status, 400, "{body}");

    for (request, param) in [
        (json!({"input": "", "voice": "alloy"}), "input"),
        (json!({"input": "hi", "voice": "nobody"}), "invalid_input"),
        (json!({"input": "hi", "response_format": "mp3"}), "response_format"),
        (json!({"input": "hi", "speed": 9.0}), "speed"),
    ] {
        let (status, body) = gw.post_json("/v1/audio/speech", &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert!(body["error"]["param"] == param || error_code(&body) == param, "{request}: {body}");
    }
    for (request, param) in [
        (json!({"input": ""}), "input[0]"),
        (json!({"input": []}), "input"),
        (json!({"input": "x", "model": "gpt-9"}), "invalid_input"),
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
        (json!({"input": "x", "dimensions": 1536}), "dimensions"),
    ] {
        let (status, body) = gw.post_json("/v1/embeddings", &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert!(body["error"]["param"] == param || error_code(&body) == param, "{request}: {body}");
    }
    // Still serving, models still work.
    let (status, _) = gw.get_json("/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = gw.post_json("/v1/embeddings", &json!({"input": "still here"})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_missing_model_is_a_503_naming_the_install_command() {
    let mock = MockUpstream::start().await;
    // The default config (an empty model directory under the test's data dir), with the LLM
    // asked to write graphrag's answers.
    let gw = Gateway::with_mock_env(&mock, "", &[("UAG__GRAPHRAG__ANSWERS", "llm")]).await;
    let (status, body) = gw.post_json("/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "model_not_installed");
    assert!(body["error"]["message"].as_str().unwrap().contains("uag models fetch all-minilm-l6-v2"), "{body}");
    let (status, body) = gw.post_json("/v1/audio/speech", &json!({"input": "hello"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("uag models fetch"), "{body}");
    let (_, ready) = gw.get_json("/readyz").await;
    assert_eq!(ready["models"]["llm"]["install"], "uag models fetch smollm2-135m-instruct", "{ready}");
    // graphrag still answers, extractively, and says why.
    let (status, _, text) = gw.post("/v1/inference", &json!({"model": "graphrag", "stream": true, "input": "anything?"})).await;
    assert_eq!(status, 200);
    assert!(text.contains("no local LLM installed"), "{text}");
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let (_mock, gw) = gateway("queue_depth = 1\n").await;
    let inputs: Vec<String> = (0..200).map(|i| format!("sentence number {i} about the kitchen lights")).collect();
    let body = json!({"input": inputs});
    let requests = (0..6).map(|_| {
        let url = gw.url("/v1/embeddings");
        let body = body.clone();
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()))
        }
    });
    let results = futures::future::join_all(requests).await;
    let busy: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(results.iter().any(|(s, _)| *s == 200), "{results:?}");
    assert!(!busy.is_empty(), "no request was refused: {results:?}");
    assert!(busy.iter().all(|(_, after)| after.as_deref() == Some("1")), "{results:?}");
    let metrics = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let rejected = metrics
        .lines()
        .find(|l| l.starts_with("uag_model_runtime_busy_rejections{runtime=\"embed\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(rejected as usize, busy.len(), "{metrics}");
}

/// `GET /v1/models` lists the installed transcription, speech and embedding models with the
/// OpenAI names that select them, beside the chat models (before, only chat models were listed).
#[tokio::test]
async fn the_models_list_names_every_installed_local_model_and_its_openai_aliases() {
    let (_mock, gw) = gateway("").await;
    let (status, body) = gw.get_json("/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    let find = |id: &str| data.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("{id} missing from {body}"));
    for (id, kind) in [("whisper-tiny.en", "transcription"), ("piper-en_US-joe-medium", "speech"), ("all-minilm-l6-v2", "embedding")] {
        assert_eq!(find(id)["uag"]["kind"], kind, "{id}");
        assert_eq!(find(id)["owned_by"], "uag-local");
    }
    for (alias, id) in
        [("whisper-1", "whisper-tiny.en"), ("tts-1", "piper-en_US-joe-medium"), ("text-embedding-3-small", "all-minilm-l6-v2")]
    {
        assert_eq!(find(alias)["uag"]["alias_of"], id, "{alias}");
        assert_eq!(find(alias)["object"], "model");
    }
    // The local LLM stays a chat model of provider `local`.
    find("local/smollm2-135m-instruct");
    assert!(!data.iter().any(|m| m["id"] == "onnxruntime"), "a runtime library is not a model: {body}");
}

#[tokio::test]
async fn official_openai_python_sdk_uses_the_local_models_unchanged() {
    let (_mock, gw) = gateway("").await;
    let stdout = common::run_sdk_script("openai_sdk_models_check.py", &[&gw.url("/v1")]).await;
    assert!(stdout.contains("sdk models check passed"), "{stdout}");
}

/// A model file damaged in place (same size, one byte changed: bit rot on an SD card) is refused
/// at load with a 503 that says what to do, instead of being parsed; the log names the file and
/// the reinstall command. Before, only sizes were checked, so the damaged file was loaded.
#[tokio::test]
async fn a_damaged_model_file_is_refused_at_load() {
    let installed = common::models_dir().join("all-minilm-l6-v2");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("all-minilm-l6-v2");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&installed).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let weights = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&weights, bytes).unwrap();

    // A server that requires credentials (the appliance): its anonymous /readyz says that the
    // model failed, not where its files are.
    use sha2::Digest;
    const KEY: &str = "uag_local-models-test-key-0123456789";
    let digest: String = sha2::Sha256::digest(KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let mock = MockUpstream::start().await;
    let toml = format!(
        "\n[models]\ndir = \"{}\"\n[auth]\nrequired = true\n[[auth.api_keys]]\nname = \"ops\"\nsha256 = \"{digest}\"\n",
        dir.path().display()
    );
    let gw = Gateway::with_mock(&mock, &toml).await;
    let r = client().post(gw.url("/v1/embeddings")).bearer_auth(KEY).json(&json!({"input": "hello"})).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "model_unavailable", "{body}");
    let text = body.to_string();
    assert!(!text.contains(&dir.path().display().to_string()), "no path reaches the client: {text}");
    let ready: Value = client().get(gw.url("/readyz")).send().await.unwrap().json().await.unwrap();
    let last_error = ready["models"]["embed"]["last_error"].as_str().unwrap_or_else(|| panic!("the failure is reported: {ready}"));
    assert!(last_error.contains("failed to load"), "{ready}");
    assert!(!ready.to_string().contains(&dir.path().display().to_string()), "no path on the anonymous probe: {ready}");
}
