//! The shared provider suite: every cloud provider type runs the same cases against the mock
//! upstream replaying its real wire format (JSON, SSE, NDJSON).

use crate::common;

use common::{Gateway, MockUpstream, TEST_KEY, delta_text, error_code, sse_events};
use serde_json::{Value, json};

const ANSWER: &str = "The capital of France is Paris.";

fn ask(provider: &str, model: &str, stream: bool) -> Value {
    json!({"provider": provider, "model": model, "input": "What is the capital of France?", "stream": stream})
}

async fn plain_answer(provider: &str, model: &str, usage: (u64, u64)) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, body) = gw.post_json("/v1/inference", &ask(provider, model, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"], ANSWER);
    assert_eq!(body["provider"], provider);
    assert_eq!(body["finish_reason"], "stop");
    assert_eq!(body["usage"]["input_tokens"], usage.0);
    assert_eq!(body["usage"]["output_tokens"], usage.1);
    assert!(body["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    gw.stop().await.unwrap();
}

async fn streamed_answer(provider: &str, model: &str, usage: (u64, u64)) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, headers, text) = gw.post("/v1/inference", &ask(provider, model, true)).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(&text);
    assert_eq!(events.first().unwrap()["type"], "status", "{text}");
    assert_eq!(delta_text(&events), ANSWER);
    assert!(events.iter().filter(|e| e["type"] == "delta").count() >= 3, "answer arrives in pieces");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done", "{text}");
    assert_eq!(done["provider"], provider);
    assert_eq!(done["usage"]["input_tokens"], usage.0);
    assert_eq!(done["usage"]["output_tokens"], usage.1);
    assert!(done["timings"]["time_to_first_token_ms"].as_f64().is_some());
    // Every SSE frame names its event type.
    assert!(common::sse(&text).iter().all(|(name, data)| name.as_deref() == serde_json::from_str::<Value>(data).unwrap()["type"].as_str()));
    gw.stop().await.unwrap();
}

async fn split_network_chunks(provider: &str) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, _, text) = gw.post("/v1/inference", &ask(provider, "split", true)).await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    assert_eq!(delta_text(&events), ANSWER, "{text}");
    assert_eq!(events.last().unwrap()["type"], "done");
    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "split", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"], ANSWER);
}

async fn upstream_errors_map(provider: &str) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;

    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "error-401", false)).await;
    assert_eq!((status, error_code(&body).as_str()), (502, "upstream_unauthorized"), "{body}");
    assert!(!body.to_string().contains(TEST_KEY));

    let (status, headers, text) = gw.post("/v1/inference", &ask(provider, "error-429", false)).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, error_code(&body).as_str()), (429, "upstream_rate_limited"), "{body}");
    assert_eq!(headers["retry-after"], "20");
    assert_eq!(mock.calls("error-429"), 2, "one retry after a 429");

    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "error-500", false)).await;
    assert_eq!((status, error_code(&body).as_str()), (502, "upstream_error"), "{body}");
    assert!(!body.to_string().contains("llama runner"), "upstream internals stay in the log: {body}");

    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "error-400", false)).await;
    assert_eq!((status, error_code(&body).as_str()), (400, "upstream_rejected_request"), "{body}");
    assert_eq!(mock.calls("error-400"), 1, "a 400 is never retried");

    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "error-404", false)).await;
    assert_eq!((status, error_code(&body).as_str()), (404, "model_not_found"), "{body}");

    // The same mapping holds when streaming: the failure comes before any event.
    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "error-500", true)).await;
    assert_eq!((status, error_code(&body).as_str()), (502, "upstream_error"), "{body}");
    gw.stop().await.unwrap();
}

async fn timeout_is_504(provider: &str) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[routes]\nmax_retries = 0\n").await;
    let started = std::time::Instant::now();
    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "slow", false)).await;
    assert_eq!((status, error_code(&body).as_str()), (504, "upstream_timeout"), "{body}");
    // Far under the mock's 30 s answer and the 30 s default provider timeout: it is the
    // configured 600 ms that applied, with room for a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the 600 ms provider timeout applies: {:?}", started.elapsed());
    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "slow", true)).await;
    assert_eq!((status, error_code(&body).as_str()), (504, "upstream_timeout"), "{body}");
}

async fn stream_cut_midway(provider: &str) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, _, text) = gw.post("/v1/inference", &ask(provider, "cut", true)).await;
    assert_eq!(status, 200, "the stream had started: {text}");
    let events = sse_events(&text);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{text}");
    assert_eq!(last["code"], "upstream_stream_interrupted", "{text}");
    assert!(events.iter().all(|e| e["type"] != "done"));

    let (status, body) = gw.post_json("/v1/inference", &ask(provider, "cut", false)).await;
    assert_eq!(status, 502, "{body}");
    error_code(&body);
}

async fn models_are_discovered_or_configured(provider: &str, model: &str) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let (status, body) = gw.get_json("/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&format!("{provider}/{model}").as_str()), "{ids:?}");
    let (status, body) = gw.get_json("/v1/providers").await;
    assert_eq!(status, 200);
    let row = body["data"].as_array().unwrap().iter().find(|p| p["name"] == provider).unwrap().clone();
    assert_eq!(row["health"]["status"], "ok", "{row}");
    assert_eq!(row["circuit"]["state"], "closed");
    assert!(!body.to_string().contains(TEST_KEY));
}

/// A call of the client's tool, whole and streamed, with the upstream's bytes in 3-byte network
/// chunks: the same `get_weather(Paris)` from every wire format.
async fn tool_call_in_split_chunks(provider: &str) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let paris = json!({"city": "Paris", "unit": "celsius"});
    let with_tools = |stream: bool| {
        let mut req = ask(provider, "split", stream);
        req["tools"] = json!([{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
        req
    };
    let (status, body) = gw.post_json("/v1/inference", &with_tools(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["finish_reason"], "tool_calls", "{body}");
    let call = &body["tool_calls"][0];
    assert_eq!(call["name"], "get_weather", "{body}");
    assert_eq!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(), paris);
    let (status, _, text) = gw.post("/v1/inference", &with_tools(true)).await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    let starts: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool_call_start").collect();
    assert_eq!(starts.len(), 1, "{text}");
    assert_eq!((starts[0]["index"].as_u64(), starts[0]["name"].as_str()), (Some(0), Some("get_weather")));
    // Ollama gives no call ids: uag makes one per request, so only its presence is checked.
    assert!(starts[0]["id"].as_str().is_some_and(|id| !id.is_empty()) && call["id"].as_str().is_some_and(|id| !id.is_empty()), "{text}");
    let arguments: String = events.iter().filter(|e| e["type"] == "tool_call_delta").map(|e| e["arguments"].as_str().unwrap()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), paris, "{text}");
    assert_eq!(events.last().unwrap()["finish_reason"], "tool_calls", "{text}");
    gw.stop().await.unwrap();
}

macro_rules! provider_suite {
    ($module:ident, $provider:literal, $model:literal, $usage:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn plain_answer_with_usage() {
                plain_answer($provider, $model, $usage).await;
            }
            #[tokio::test]
            async fn streamed_answer_with_usage() {
                streamed_answer($provider, $model, $usage).await;
            }
            #[tokio::test]
            async fn lines_split_across_network_chunks() {
                split_network_chunks($provider).await;
            }
            #[tokio::test]
            async fn upstream_401_429_500_400_404_map_to_gateway_errors() {
                upstream_errors_map($provider).await;
            }
            #[tokio::test]
            async fn upstream_timeout_is_504() {
                timeout_is_504($provider).await;
            }
            #[tokio::test]
            async fn stream_cut_midway_ends_with_an_error_event() {
                stream_cut_midway($provider).await;
            }
            #[tokio::test]
            async fn tool_call_whole_and_streamed_in_split_chunks() {
                tool_call_in_split_chunks($provider).await;
            }
            #[tokio::test]
            async fn models_and_health() {
                models_are_discovered_or_configured($provider, $model).await;
            }
        }
    };
}

provider_suite!(openai, "openai", "gpt-4o-mini", (19, 10));
provider_suite!(anthropic, "anthropic", "claude-3-5-haiku-20241022", (21, 11));
provider_suite!(ollama, "ollama", "llama3.2", (26, 9));
// No `models` configured: the list comes from the upstream's `/v1/models`.
provider_suite!(openai_compatible, "vllm", "gpt-4o-mini", (19, 10));

/// What each provider puts on the wire: auth headers, field names, system prompt placement.
#[tokio::test]
async fn requests_are_translated_to_each_wire_format() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let request = |provider: &str, model: &str| {
        json!({
            "provider": provider, "model": model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
            "params": {"max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["\n\n"], "seed": 7}
        })
    };
    for (provider, model) in
        [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-20241022"), ("ollama", "llama3.2"), ("vllm", "local-model")]
    {
        let (status, body) = gw.post_json("/v1/inference", &request(provider, model)).await;
        assert_eq!(status, 200, "{provider}: {body}");
    }
    let seen = mock.requests();
    let find = |path: &str, model: &str| seen.iter().find(|r| r.path == path && r.body["model"] == model).unwrap().clone();

    let openai = find("/v1/chat/completions", "gpt-4o-mini");
    assert_eq!(openai.headers["authorization"], format!("Bearer {TEST_KEY}"));
    assert_eq!(openai.body["max_completion_tokens"], 50);
    assert_eq!(openai.body["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(openai.body["stop"], json!(["\n\n"]));
    assert_eq!(openai.body["seed"], 7);

    let compatible = find("/v1/chat/completions", "local-model");
    assert_eq!(compatible.body["max_tokens"], 50, "vLLM and llama.cpp know max_tokens");
    assert!(compatible.body.get("max_completion_tokens").is_none());

    let anthropic = find("/v1/messages", "claude-3-5-haiku-20241022");
    assert_eq!(anthropic.headers["x-api-key"], TEST_KEY);
    assert_eq!(anthropic.headers["anthropic-version"], "2023-06-01");
    assert!(anthropic.headers.get("authorization").is_none());
    assert_eq!(anthropic.body["system"], "Be brief.");
    assert_eq!(anthropic.body["messages"], json!([{"role": "user", "content": "Capital of France?"}]));
    assert_eq!(anthropic.body["max_tokens"], 50);
    assert_eq!(anthropic.body["stop_sequences"], json!(["\n\n"]));

    let ollama = find("/api/chat", "llama3.2");
    assert_eq!(ollama.body["options"]["num_predict"], 50);
    assert_eq!(ollama.body["options"]["seed"], 7);
    assert_eq!(ollama.body["stream"], false);
    gw.stop().await.unwrap();
}
