//! `POST /v1/messages`, the Anthropic Messages API, with the shapes the official SDKs send and
//! read, onto every provider type; plus a run of the real `anthropic` Python SDK.

use crate::common;

use common::{Gateway, MockUpstream, sse};
use serde_json::{Value, json};
use sha2::Digest;

/// What anthropic-python sends for `client.messages.create(...)`.
fn sdk_request(model: &str, stream: bool) -> Value {
    json!({
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
        "model": model,
        "system": "You answer geography questions.",
        "temperature": 0.2,
        "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "kiosk-7"},
        "stream": stream
    })
}

#[tokio::test]
async fn a_message_has_the_sdk_response_shape_on_every_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2"] {
        let (status, body) = gw.post_json("/v1/messages", &sdk_request(model, false)).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
        assert_eq!(body["type"], "message");
        assert_eq!(body["role"], "assistant");
        assert_eq!(body["content"], json!([{"type": "text", "text": "The capital of France is Paris."}]), "{model}");
        assert_eq!(body["stop_reason"], "end_turn");
        assert!(body["stop_sequence"].is_null());
        assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0 && body["usage"]["output_tokens"].as_u64().unwrap() > 0, "{body}");
        assert_eq!(body["uag"]["provider"], model.split('/').next().unwrap());
    }
    // Anthropic's request reached the OpenAI upstream as OpenAI's: system first, stop, max tokens.
    let sent = mock.requests().into_iter().find(|r| r.path == "/v1/chat/completions").unwrap();
    assert_eq!(sent.body["messages"][0], json!({"role": "system", "content": "You answer geography questions."}));
    assert_eq!(sent.body["messages"][1]["content"], "What is the capital of France?");
    assert_eq!(sent.body["stop"], json!(["\n\n"]));
    assert_eq!(sent.body["max_completion_tokens"], 64);
}

#[tokio::test]
async fn a_streamed_message_follows_the_documented_event_sequence() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, headers, text) = gw.post("/v1/messages", &sdk_request("ollama/llama3.2", true)).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap_or("")).collect();
    let deltas = names.iter().filter(|n| **n == "content_block_delta").count();
    assert!(deltas >= 1, "{names:?}");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    // Each event's data names its own type, as the SDKs check.
    for (name, data) in &events {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"].as_str(), name.as_deref(), "{data}");
    }
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(data[0]["message"]["role"], "assistant");
    assert_eq!(data[0]["message"]["content"], json!([]));
    let text: String = data.iter().filter(|d| d["type"] == "content_block_delta").map(|d| d["delta"]["text"].as_str().unwrap()).collect();
    assert_eq!(text, "The capital of France is Paris.");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0, "{delta}");

    // An upstream that breaks mid-stream: an `error` event, and nothing after it.
    let (_, _, text) = gw.post("/v1/messages", &sdk_request("openai/cut", true)).await;
    let events = sse(&text);
    let (last, data) = events.last().unwrap();
    assert_eq!(last.as_deref(), Some("error"), "{text}");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    assert!(!events.iter().any(|(e, _)| e.as_deref() == Some("message_stop")), "{text}");
}

/// Asserts Anthropic's error shape and returns `error.type`.
fn anthropic_error(body: &Value) -> String {
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body["error"]["type"].as_str().unwrap_or_else(|| panic!("no error.type in {body}")).to_owned()
}

#[tokio::test]
async fn errors_come_in_anthropics_shape_and_nothing_is_dropped_silently() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, body) = gw.post_json("/v1/messages", &sdk_request("no/such-model", false)).await;
    assert_eq!((status, anthropic_error(&body).as_str()), (404, "not_found_error"));
    assert_eq!(body["error"]["code"], "model_not_found");

    // Tools and images to the local models, which can neither call nor see: refused by name.
    let mut tools = sdk_request("graphrag", false);
    tools["tools"] = json!([{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]);
    let (status, body) = gw.post_json("/v1/messages", &tools).await;
    assert_eq!((status, anthropic_error(&body).as_str()), (400, "invalid_request_error"));
    assert_eq!(body["error"]["param"], "tools");

    let mut image = sdk_request("graphrag", false);
    image["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}));
    let (status, body) = gw.post_json("/v1/messages", &image).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("images")), "{body}");

    let mut document = sdk_request("openai/gpt-4o-mini", false);
    document["messages"][0]["content"].as_array_mut().unwrap().push(json!({"type": "document", "source": {"type": "text", "data": "x"}}));
    let (status, body) = gw.post_json("/v1/messages", &document).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages[0].content[1]")), "{body}");

    let mut hot = sdk_request("openai/gpt-4o-mini", false);
    hot["temperature"] = json!(7.5);
    let (status, body) = gw.post_json("/v1/messages", &hot).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("temperature")), "{body}");

    // The body extractor's own errors too.
    let r =
        common::client().post(gw.url("/v1/messages")).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(anthropic_error(&r.json().await.unwrap()), "invalid_request_error");

    // An upstream's 429 keeps its retry-after.
    let (status, headers, text) = gw.post("/v1/messages", &sdk_request("openai/error-429", false)).await;
    assert_eq!(status, 429, "{text}");
    assert_eq!(anthropic_error(&serde_json::from_str(&text).unwrap()), "rate_limit_error");
    assert!(headers.contains_key("retry-after"));

    // The OpenAI routes keep OpenAI's shape.
    let (status, body) =
        gw.post_json("/v1/chat/completions", &json!({"model": "no/such-model", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!((status, common::error_code(&body).as_str()), (404, "model_not_found"));
}

#[tokio::test]
async fn anthropic_clients_authenticate_with_x_api_key() {
    let key = "uag-test-anthropic-key";
    let digest: String = sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(
        &mock,
        &format!("[auth]\nrequired = true\n\n[[auth.api_keys]]\nname = \"claude-code\"\nsha256 = \"{digest}\"\n"),
    )
    .await;
    let r = common::client().post(gw.url("/v1/messages")).json(&sdk_request("openai/gpt-4o-mini", false)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(anthropic_error(&r.json().await.unwrap()), "authentication_error");
    let r = common::client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&sdk_request("openai/gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn official_anthropic_python_sdk_works_unchanged() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    // The SDK appends `/v1/messages` to its base URL.
    let stdout = common::run_sdk_script("anthropic_sdk_check.py", &[&gw.url("")]).await;
    assert!(stdout.contains("sdk check passed"), "{stdout}");
}
