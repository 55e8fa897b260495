//! The OpenAI-compatible routes with the request and response shapes the official SDKs use,
//! plus a run of the real `openai` Python SDK against the gateway.

use crate::common;

use common::{Gateway, MockUpstream, error_code, sse};
use serde_json::{Value, json};

/// What openai-python sends for `client.chat.completions.create(...)`.
fn sdk_request(model: &str, stream: bool) -> Value {
    let mut body = json!({
        "messages": [
            {"role": "developer", "content": "You answer geography questions."},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}
        ],
        "model": model,
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "stop": "\n\n",
        "user": "kiosk-7",
        "stream": stream
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test]
async fn chat_completion_has_the_sdk_response_shape() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2"] {
        let (status, body) = gw.post_json("/v1/chat/completions", &sdk_request(model, false)).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(body["object"], "chat.completion");
        assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
        assert!(body["model"].is_string());
        let choice = &body["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "The capital of France is Paris.");
        assert_eq!(choice["finish_reason"], "stop");
        let usage = &body["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );
    }
    // The developer role became the system prompt, the text parts one string, `stop` a list.
    let sent = mock.requests().into_iter().find(|r| r.path == "/v1/messages").unwrap();
    assert_eq!(sent.body["system"], "You answer geography questions.");
    assert_eq!(sent.body["messages"][0]["content"], "What is the capital of France?");
    assert_eq!(sent.body["stop_sequences"], json!(["\n\n"]));
    assert_eq!(sent.body["max_tokens"], 64);
}

#[tokio::test]
async fn streamed_chat_completion_ends_with_usage_and_done() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, headers, text) = gw.post("/v1/chat/completions", &sdk_request("ollama/llama3.2", true)).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let frames: Vec<String> = sse(&text).into_iter().map(|(_, data)| data).collect();
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str())).collect();
    assert_eq!(content, "The capital of France is Paris.");
    let finish = chunks.iter().find(|c| c["choices"].get(0).is_some_and(|ch| ch["finish_reason"] == "stop"));
    assert!(finish.is_some(), "a chunk carries finish_reason");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 26);
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()), "usage is null until the last chunk");
}

#[tokio::test]
async fn models_list_has_the_sdk_shape() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[routes.aliases]\nassistant = [\"ollama/llama3.2\"]\n").await;
    let (status, body) = gw.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert!(data.iter().all(|m| m["object"] == "model" && m["id"].is_string() && m["owned_by"].is_string() && m["created"].is_u64()));
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for expected in
        ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2", "vllm/gpt-4o", "local/graphrag", "assistant"]
    {
        assert!(ids.contains(&expected), "{expected} missing from {ids:?}");
    }
}

#[tokio::test]
async fn unsupported_features_are_refused_by_name() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let mut two = sdk_request("openai/gpt-4o-mini", false);
    two["n"] = json!(2);
    let (status, body) = gw.post_json("/v1/chat/completions", &two).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("n")), "{body}");

    let audio = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]});
    let (status, body) = gw.post_json("/v1/chat/completions", &audio).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages[0].content[0]")), "{body}");

    let function = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "function", "name": "f", "content": "x"}]});
    let (status, body) = gw.post_json("/v1/chat/completions", &function).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages[0].role")), "{body}");

    // Fields that change what comes back are refused, not dropped (response_format is carried
    // to the providers that honour it: see structured_output_* below).
    for (field, value) in [
        ("response_format", json!({"type": "xml"})),
        ("tool_choice", json!("required")),
        ("functions", json!([{"name": "f"}])),
        ("logprobs", json!(true)),
        ("modalities", json!(["text", "audio"])),
        ("frequency_penalty", json!(0.5)),
        ("logit_bias", json!({"50256": -100})),
    ] {
        let mut req = sdk_request("openai/gpt-4o-mini", false);
        req[field] = value;
        let (status, body) = gw.post_json("/v1/chat/completions", &req).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(field)), "{body}");
    }
    // Their neutral values ask for nothing and pass.
    let mut neutral = sdk_request("openai/gpt-4o-mini", false);
    for (field, value) in [
        ("response_format", json!({"type": "text"})),
        ("tool_choice", json!("none")),
        ("logprobs", json!(false)),
        ("modalities", json!(["text"])),
        ("frequency_penalty", json!(0)),
        ("presence_penalty", json!(0.0)),
        ("logit_bias", json!({})),
        ("parallel_tool_calls", json!(true)),
        ("store", json!(false)),
    ] {
        neutral[field] = value;
    }
    let (status, body) = gw.post_json("/v1/chat/completions", &neutral).await;
    assert_eq!(status, 200, "{body}");

    let hot = json!({"model": "openai/gpt-4o-mini", "temperature": 9, "messages": [{"role": "user", "content": "x"}]});
    let (status, body) = gw.post_json("/v1/chat/completions", &hot).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("temperature")), "{body}");

    let (status, body) =
        gw.post_json("/v1/chat/completions", &json!({"model": "x/y", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!((status, error_code(&body).as_str()), (404, "model_not_found"));
}

#[tokio::test]
async fn official_openai_python_sdk_works_unchanged() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let stdout = common::run_sdk_script("openai_sdk_check.py", &[&gw.url("/v1")]).await;
    assert!(stdout.contains("sdk check passed"), "{stdout}");
}

/// What openai-python sends for `client.responses.create(...)`.
fn responses_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "instructions": "You answer geography questions.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is the capital of France?"}]}],
        "max_output_tokens": 64,
        "store": false,
        "stream": stream
    })
}

#[tokio::test]
async fn a_response_has_the_sdk_shape_on_every_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2"] {
        let (status, body) = gw.post_json("/v1/responses", &responses_request(model, false)).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert!(body["id"].as_str().unwrap().starts_with("resp_"), "{body}");
        assert_eq!((body["object"].as_str(), body["status"].as_str()), (Some("response"), Some("completed")));
        let item = &body["output"][0];
        assert_eq!((item["type"].as_str(), item["role"].as_str()), (Some("message"), Some("assistant")));
        assert_eq!(item["content"][0]["type"], "output_text");
        assert_eq!(item["content"][0]["text"], "The capital of France is Paris.", "{model}");
        let usage = &body["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
        );
    }
    // The instructions became the system prompt upstream.
    let sent = mock.requests().into_iter().find(|r| r.path == "/v1/messages").unwrap();
    assert_eq!(sent.body["system"], "You answer geography questions.");
    assert_eq!(sent.body["max_tokens"], 64);
}

#[tokio::test]
async fn a_streamed_response_sends_the_events_the_sdk_reads() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, _, text) = gw.post("/v1/responses", &responses_request("ollama/llama3.2", true)).await;
    assert_eq!(status, 200, "{text}");
    let events = sse(&text);
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap_or("")).collect();
    let deltas = names.iter().filter(|n| **n == "response.output_text.delta").count();
    assert!(deltas >= 1, "{names:?}");
    let mut expected = vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend(["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]);
    assert_eq!(names, expected);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["type"].as_str(), Some(names[i]));
        assert_eq!(d["sequence_number"], i, "{d}");
    }
    let streamed: String =
        data.iter().filter(|d| d["type"] == "response.output_text.delta").map(|d| d["delta"].as_str().unwrap()).collect();
    assert_eq!(streamed, "The capital of France is Paris.");
    let done = data.last().unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], streamed);
    assert_eq!(done["response"]["status"], "completed");

    // A broken upstream: `response.failed` with the error, and nothing after it.
    let (_, _, text) = gw.post("/v1/responses", &responses_request("openai/cut", true)).await;
    let (last, body) = sse(&text).pop().unwrap();
    assert_eq!(last.as_deref(), Some("response.failed"), "{text}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["response"]["status"], "failed");
    assert!(body["response"]["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn responses_refuse_what_a_stateless_gateway_cannot_honour() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    for (field, value, param) in [
        ("previous_response_id", json!("resp_123"), "previous_response_id"),
        ("tools", json!([{"type": "web_search"}]), "tools[0]"),
        ("text", json!({"format": {"type": "xml"}}), "text.format"),
    ] {
        let mut req = responses_request("openai/gpt-4o-mini", false);
        req[field] = value;
        let (status, body) = gw.post_json("/v1/responses", &req).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{body}");
    }
    let (status, body) = gw.post_json("/v1/responses", &responses_request("no/such-model", false)).await;
    assert_eq!((status, error_code(&body).as_str()), (404, "model_not_found"));
}

/// `response_format` reaches the providers that honour it, in their own shape (OpenAI and
/// OpenAI-compatible: as sent; Ollama: `format`, "json" or the schema; Anthropic: the schema as
/// `output_config.format`), and the others refuse the request by name with a 400 (the local
/// models; Anthropic for schema-less JSON): never free text where the client asked for JSON.
#[tokio::test]
async fn structured_output_reaches_the_providers_that_honour_it_and_is_refused_by_the_others() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let json_schema = json!({"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}});
    let ask = |model: &str, format: &Value| {
        let mut req = sdk_request(model, false);
        req["response_format"] = format.clone();
        req
    };
    let last_body = |path: &str| mock.requests().into_iter().rev().find(|r| r.path == path).map(|r| r.body).unwrap();

    for model in ["openai/gpt-4o-mini", "vllm/qwen2.5"] {
        let (status, body) = gw.post_json("/v1/chat/completions", &ask(model, &json_schema)).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(last_body("/v1/chat/completions")["response_format"], json_schema, "{model}");
    }
    let (status, body) = gw.post_json("/v1/chat/completions", &ask("ollama/llama3.2", &json!({"type": "json_object"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/api/chat")["format"], "json");
    let (status, body) = gw.post_json("/v1/chat/completions", &ask("ollama/llama3.2", &json_schema)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/api/chat")["format"], schema);

    // Anthropic takes a schema as `output_config.format`, and has nothing for free JSON.
    let (status, body) = gw.post_json("/v1/chat/completions", &ask("anthropic/claude-3-5-haiku-20241022", &json_schema)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/v1/messages")["output_config"], json!({"format": {"type": "json_schema", "schema": schema}}));
    for (model, format) in [("anthropic/claude-3-5-haiku-20241022", json!({"type": "json_object"})), ("graphrag", json_schema.clone())] {
        let (status, body) = gw.post_json("/v1/chat/completions", &ask(model, &format)).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some("response_format")), "{model}: {body}");
        assert_eq!(error_code(&body), "unsupported_parameter", "{model}: {body}");
    }
    // An Anthropic client's `output_config.format` is the same request, and an error names
    // the field it sent.
    let message = |model: &str| {
        json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Capital of France as JSON?"}],
               "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}})
    };
    let (status, body) = gw.post_json("/v1/messages", &message("openai/gpt-4o-mini")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/v1/chat/completions")["response_format"]["json_schema"]["schema"], schema);
    let (status, body) = gw.post_json("/v1/messages", &message("graphrag")).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("output_config.format")), "{body}");
    // The Responses API's flat `text.format` is the same request to the provider.
    let mut flat = responses_request("openai/gpt-4o-mini", false);
    flat["text"] = json!({"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": true}});
    let (status, body) = gw.post_json("/v1/responses", &flat).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/v1/chat/completions")["response_format"], json_schema);
    flat["model"] = json!("graphrag");
    let (status, body) = gw.post_json("/v1/responses", &flat).await;
    assert_eq!((status, error_code(&body).as_str()), (400, "unsupported_parameter"), "{body}");
    assert_eq!(body["error"]["param"], "text.format", "named as the Responses client sent it: {body}");
    // Without it, the same request is not refused: the refusal is the format's.
    let (status, body) = gw.post_json("/v1/chat/completions", &sdk_request("anthropic/claude-3-5-haiku-20241022", false)).await;
    assert_eq!(status, 200, "{body}");
}
