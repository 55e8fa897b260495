//! Tool calling through every provider and every front door: tools, tool calls and tool
//! results reach each upstream type in its own wire form (OpenAI `tools`/`tool_calls`/`tool`
//! messages, Anthropic `tool_use`/`tool_result` blocks, Ollama `tools` and object arguments);
//! calls come back whole and streamed in the client's form; the official SDKs assemble them;
//! the local models and bad tool input get a 400 naming the field.

use serde_json::{Value, json};

use crate::common::{self, Gateway, MockUpstream, error_code, sse};

const PARIS: &str = r#"{"city":"Paris","unit":"celsius"}"#;

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }})
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [weather_tool()],
        "tool_choice": "auto",
        "stream": stream,
    })
}

fn parsed(arguments: &Value) -> Value {
    serde_json::from_str(arguments.as_str().unwrap_or_default()).unwrap_or(Value::Null)
}

/// An OpenAI client gets `get_weather(Paris)` from each upstream type, whole and streamed:
/// `message.tool_calls`, or `tool_calls` deltas (index, id and name first, then argument
/// fragments) that add up to the same call, and `finish_reason: "tool_calls"`. A call is an
/// action the client takes next, so the response cache never stores or replays one.
#[tokio::test]
async fn an_openai_client_gets_tool_calls_from_every_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    for model in ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2"] {
        let (status, body) = gw.post_json("/v1/chat/completions", &chat(model, false)).await;
        assert_eq!(status, 200, "{model}: {body}");
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{model}: {body}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("get_weather")), "{model}");
        assert_eq!(parsed(&call["function"]["arguments"]), serde_json::from_str::<Value>(PARIS).unwrap(), "{model}");
        assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()), "{model}: {body}");
        let (_, headers, _) = gw.post("/v1/chat/completions", &chat(model, false)).await;
        assert_eq!(headers.get("x-uag-cache").and_then(|v| v.to_str().ok()), Some("bypass"), "{model}");

        let (status, _, text) = gw.post("/v1/chat/completions", &chat(model, true)).await;
        assert_eq!(status, 200, "{model}: {text}");
        let chunks: Vec<Value> =
            sse(&text).into_iter().filter(|(_, d)| d != "[DONE]").map(|(_, d)| serde_json::from_str(&d).unwrap()).collect();
        let (mut id, mut name, mut arguments) = (String::new(), String::new(), String::new());
        let mut finish = None;
        for chunk in &chunks {
            let choice = &chunk["choices"][0];
            for fragment in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(fragment["index"], 0, "{model}: one call, index 0: {fragment}");
                id.push_str(fragment["id"].as_str().unwrap_or_default());
                name.push_str(fragment["function"]["name"].as_str().unwrap_or_default());
                arguments.push_str(fragment["function"]["arguments"].as_str().unwrap_or_default());
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
        assert!(!id.is_empty() && name == "get_weather", "{model}: {text}");
        assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), serde_json::from_str::<Value>(PARIS).unwrap(), "{model}: {text}");
        assert_eq!(finish.as_deref(), Some("tool_calls"), "{model}: {text}");
    }
}

/// The tools, the model's earlier call and the tool's result reach each upstream in its own
/// form: OpenAI as sent; Anthropic `input_schema`, `tool_use` and `tool_result` blocks (two
/// results in one user turn); Ollama object arguments and `tool_name`.
#[tokio::test]
async fn tools_calls_and_results_reach_each_upstream_in_its_own_form() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let conversation = |model: &str| {
        json!({
            "model": model,
            "messages": [
                {"role": "system", "content": "Use the tools."},
                {"role": "user", "content": "Weather in Paris and Lyon?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
                {"role": "tool", "tool_call_id": "call_2", "content": "21 degrees"}
            ],
            "tools": [weather_tool()],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        })
    };
    let last_body = |path: &str| mock.requests().into_iter().rev().find(|r| r.path == path).map(|r| r.body).unwrap();

    let (status, body) = gw.post_json("/v1/chat/completions", &conversation("openai/gpt-4o-mini")).await;
    assert_eq!(status, 200, "{body}");
    let sent = last_body("/v1/chat/completions");
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather", "{sent}");
    assert_eq!(sent["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}), "{sent}");
    assert_eq!(sent["messages"][2]["tool_calls"][1]["id"], "call_2", "{sent}");
    assert_eq!(sent["messages"][2]["content"], Value::Null, "{sent}");
    assert_eq!((sent["messages"][3]["role"].as_str(), sent["messages"][3]["tool_call_id"].as_str()), (Some("tool"), Some("call_1")));

    let (status, body) = gw.post_json("/v1/chat/completions", &conversation("anthropic/claude-3-5-haiku-20241022")).await;
    assert_eq!(status, 200, "{body}");
    let sent = last_body("/v1/messages");
    assert_eq!(sent["system"], "Use the tools.", "{sent}");
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["city"]), "{sent}");
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "get_weather"}), "{sent}");
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "user, assistant tool_use, one user turn with both results: {sent}");
    assert_eq!(turns[1]["content"][0], json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}));
    assert_eq!(turns[2]["role"], "user");
    assert_eq!(turns[2]["content"][1], json!({"type": "tool_result", "tool_use_id": "call_2", "content": "21 degrees"}), "{sent}");

    let mut auto = conversation("ollama/llama3.2");
    auto["tool_choice"] = json!("auto");
    let (status, body) = gw.post_json("/v1/chat/completions", &auto).await;
    assert_eq!(status, 200, "{body}");
    let sent = last_body("/api/chat");
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather", "{sent}");
    assert_eq!(sent["messages"][2]["tool_calls"][0]["function"]["arguments"], json!({"city": "Paris"}), "objects, not JSON text: {sent}");
    assert_eq!((sent["messages"][4]["role"].as_str(), sent["messages"][4]["tool_name"].as_str()), (Some("tool"), Some("get_weather")));
    // Ollama lets the model decide: a forced call is refused, not silently made optional.
    let (status, body) = gw.post_json("/v1/chat/completions", &conversation("ollama/llama3.2")).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("tool_choice")), "{body}");
}

/// An Anthropic client gets `tool_use` blocks from an OpenAI upstream, whole and streamed
/// (`content_block_start` with the tool, `input_json_delta` fragments, `stop_reason:
/// "tool_use"`), and a Responses client gets a `function_call` item.
#[tokio::test]
async fn anthropic_and_responses_clients_get_tool_calls_in_their_form() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let tool = json!({"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let message = |stream: bool| {
        json!({"model": "openai/gpt-4o-mini", "max_tokens": 64, "stream": stream, "tools": [tool],
               "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
    };
    let (status, body) = gw.post_json("/v1/messages", &message(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stop_reason"], "tool_use", "{body}");
    assert_eq!(body["content"].as_array().map(Vec::len), Some(1), "no empty text block before the call: {body}");
    assert_eq!(body["content"][0]["type"], "tool_use");
    assert_eq!(body["content"][0]["input"], serde_json::from_str::<Value>(PARIS).unwrap());

    let (status, _, text) = gw.post("/v1/messages", &message(true)).await;
    assert_eq!(status, 200, "{text}");
    let events: Vec<(String, Value)> =
        sse(&text).into_iter().map(|(e, d)| (e.unwrap_or_default(), serde_json::from_str(&d).unwrap())).collect();
    let start = events.iter().find(|(e, d)| e == "content_block_start" && d["content_block"]["type"] == "tool_use").unwrap();
    let block = start.1["index"].as_u64().unwrap();
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    let input: String = events
        .iter()
        .filter(|(e, d)| e == "content_block_delta" && d["index"] == block && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), serde_json::from_str::<Value>(PARIS).unwrap(), "{text}");
    // Every started block is stopped, in order, before the message ends.
    let starts: Vec<u64> = events.iter().filter(|(e, _)| e == "content_block_start").map(|(_, d)| d["index"].as_u64().unwrap()).collect();
    let stops: Vec<u64> = events.iter().filter(|(e, _)| e == "content_block_stop").map(|(_, d)| d["index"].as_u64().unwrap()).collect();
    assert_eq!(starts, stops, "{text}");
    let delta = events.iter().find(|(e, _)| e == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");

    let responses = json!({"model": "anthropic/claude-3-5-haiku-20241022", "input": "Weather in Paris?",
                           "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let (status, body) = gw.post_json("/v1/responses", &responses).await;
    assert_eq!(status, 200, "{body}");
    let output = body["output"].as_array().unwrap();
    assert_eq!(output.iter().map(|i| i["type"].as_str().unwrap()).collect::<Vec<_>>(), ["message", "function_call"], "{body}");
    assert_eq!(output[0]["content"][0]["text"], "I'll check the weather in Paris.");
    assert_eq!(parsed(&output[1]["arguments"]), serde_json::from_str::<Value>(PARIS).unwrap());
    assert_eq!(body["tools"][0]["name"], "get_weather", "the request's tools are echoed: {body}");
}

/// The local models do not call tools: a 400 naming `tools` on every front door, never an
/// answer that ignores them. Malformed tool input is refused by name too.
#[tokio::test]
async fn the_local_models_and_bad_tool_input_are_refused_by_name() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, body) = gw.post_json("/v1/chat/completions", &chat("graphrag", false)).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("tools")), "{body}");
    assert_eq!(error_code(&body), "unsupported_parameter");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("configured here: anthropic, ollama, openai, vllm"), "names the providers that can: {body}");
    let (status, body) =
        gw.post_json("/v1/inference", &json!({"model": "graphrag", "input": "q", "tools": [{"name": "get_weather"}]})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("tools")), "{body}");

    let mut unknown = chat("openai/gpt-4o-mini", false);
    unknown["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let mut orphan = chat("openai/gpt-4o-mini", false);
    orphan["messages"] = json!([{"role": "user", "content": "q"}, {"role": "tool", "content": "18 degrees"}]);
    let mut not_object = chat("openai/gpt-4o-mini", false);
    not_object["messages"] = json!([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "[1, 2]"}}]}]);
    let mut hosted = chat("openai/gpt-4o-mini", false);
    hosted["tools"] = json!([{"type": "custom", "custom": {"name": "x"}}]);
    let mut bad_name = chat("openai/gpt-4o-mini", false);
    bad_name["tools"][0]["function"]["name"] = json!("get weather!");
    for (request, param) in
        [(unknown, "tool_choice"), (orphan, "messages"), (not_object, "messages"), (hosted, "tools[0]"), (bad_name, "tools")]
    {
        let (status, body) = gw.post_json("/v1/chat/completions", &request).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{request}: {body}");
    }
    assert_eq!(mock.requests().len(), 0, "nothing reached an upstream");
}

#[tokio::test]
async fn the_official_sdks_call_tools_across_upstream_types() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let stdout = common::run_sdk_script("tools_sdk_check.py", &[&gw.url("")]).await;
    assert!(stdout.contains("sdk check passed"), "{stdout}");
}

/// `/v1/inference` carries the calls as native events (`tool_call_start`, `tool_call_delta`)
/// and whole as `tool_calls`, from an Anthropic upstream whose answer has text first.
#[tokio::test]
async fn native_clients_get_tool_call_events_and_whole_calls() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let ask = |stream: bool| {
        json!({"model": "anthropic/claude-3-5-haiku-20241022", "input": "Weather in Paris?", "stream": stream,
               "tools": [{"name": "get_weather", "parameters": {"type": "object"}}], "tool_choice": "required"})
    };
    let (status, body) = gw.post_json("/v1/inference", &ask(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["output"].as_str(), body["finish_reason"].as_str()), (Some("I'll check the weather in Paris."), Some("tool_calls")));
    assert_eq!(body["tool_calls"][0]["name"], "get_weather", "{body}");
    assert_eq!(parsed(&body["tool_calls"][0]["arguments"]), serde_json::from_str::<Value>(PARIS).unwrap());

    let (status, _, text) = gw.post("/v1/inference", &ask(true)).await;
    assert_eq!(status, 200, "{text}");
    let events = common::sse_events(&text);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).filter(|k| *k != "status").collect();
    assert_eq!(kinds, ["delta", "delta", "tool_call_start", "tool_call_delta", "tool_call_delta", "done"], "{text}");
    let arguments: String = events.iter().filter(|e| e["type"] == "tool_call_delta").map(|e| e["arguments"].as_str().unwrap()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), serde_json::from_str::<Value>(PARIS).unwrap());
    assert_eq!(events.last().unwrap()["finish_reason"], "tool_calls");
}
