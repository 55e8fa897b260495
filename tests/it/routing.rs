//! Routing: alias chains, fallback on 5xx and timeouts, no fallback on 400, the default chain,
//! and the circuit breaker opening and half-opening.

use crate::common;

use std::time::{Duration, Instant};

use common::{Gateway, MockUpstream, delta_text, error_code, sse_events};
use serde_json::json;

const ROUTES: &str = r#"
[routes]
default = ["ollama/llama3.2", "openai"]
max_retries = 1
retry_backoff_ms = 10

[routes.aliases]
assistant = ["openai/error-500", "anthropic/claude-3-5-haiku-20241022"]
patient = ["openai/slow", "ollama/llama3.2"]
strict = ["openai/error-400", "ollama/llama3.2"]
broken = ["openai/error-500", "anthropic/error-500"]
streamer = ["openai/error-500", "ollama/llama3.2"]
midway = ["openai/cut", "ollama/llama3.2"]
local-first = ["local", "ollama/llama3.2"]
"#;

#[tokio::test]
async fn alias_chain_falls_back_on_5xx_after_retrying() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "assistant", "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "anthropic");
    assert_eq!(mock.calls("error-500"), 2, "first target tried once plus one retry");
    assert_eq!(mock.calls("claude-3-5-haiku-20241022"), 1);
}

#[tokio::test]
async fn alias_chain_falls_back_on_timeout() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "patient", "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "ollama");
}

#[tokio::test]
async fn a_400_ends_the_chain() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "strict", "input": "hi"})).await;
    assert_eq!((status, error_code(&body).as_str()), (400, "upstream_rejected_request"), "{body}");
    assert_eq!(mock.calls("error-400"), 1);
    assert_eq!(mock.calls("llama3.2"), 0, "no fallback on a client error");
}

#[tokio::test]
async fn exhausted_chain_reports_the_last_failure() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "broken", "input": "hi"})).await;
    assert_eq!((status, error_code(&body).as_str()), (502, "upstream_error"), "{body}");
    assert_eq!(mock.calls("error-500"), 4, "both targets, each retried once");
}

#[tokio::test]
async fn the_local_engine_answers_even_from_an_empty_knowledge_base() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "local-first", "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "local");
    assert!(body["output"].as_str().unwrap().contains("nothing"), "{body}");
}

#[tokio::test]
async fn a_local_engine_that_is_not_installed_falls_back() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::without_engine(&mock, ROUTES).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "local-first", "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "ollama");
    let (status, body) = gw.post_json("/v1/inference", &json!({"provider": "local", "input": "hi"})).await;
    assert_eq!((status, error_code(&body).as_str()), (503, "not_installed"), "{body}");
}

#[tokio::test]
async fn names_resolve_by_provider_pair_bare_model_and_default_chain() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    for (request, provider) in [
        (json!({"input": "hi"}), "ollama"),
        (json!({"model": "default", "input": "hi"}), "ollama"),
        (json!({"model": "anthropic/claude-3-5-haiku-20241022", "input": "hi"}), "anthropic"),
        (json!({"model": "anthropic", "input": "hi"}), "anthropic"),
        (json!({"model": "claude-3-5-haiku-20241022", "input": "hi"}), "anthropic"),
        (json!({"provider": "openai", "model": "openai/gpt-4o-mini", "input": "hi"}), "openai"),
        // Not configured anywhere, but the openai_compatible upstream lists it.
        (json!({"model": "gpt-4o", "input": "hi"}), "vllm"),
    ] {
        let (status, body) = gw.post_json("/v1/inference", &request).await;
        assert_eq!(status, 200, "{request}: {body}");
        assert_eq!(body["provider"], provider, "{request}");
    }
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "no-such-model", "input": "hi"})).await;
    assert_eq!((status, error_code(&body).as_str()), (404, "model_not_found"), "{body}");
    let (status, body) = gw.post_json("/v1/inference", &json!({"provider": "nope", "input": "hi"})).await;
    assert_eq!((status, error_code(&body).as_str()), (404, "provider_not_found"), "{body}");
    let (status, body) = gw.post_json("/v1/inference", &json!({"provider": "vllm", "input": "hi"})).await;
    assert_eq!(status, 400, "vllm has no default model: {body}");
    assert_eq!(body["error"]["param"], "model");
}

#[tokio::test]
async fn stream_falls_back_before_the_first_token_only() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, ROUTES).await;
    let (status, _, text) = gw.post("/v1/inference", &json!({"model": "streamer", "input": "hi", "stream": true})).await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    assert_eq!(delta_text(&events), "The capital of France is Paris.");
    assert_eq!(events.last().unwrap()["provider"], "ollama");

    // `cut` breaks after tokens reached the client: the stream must not switch providers.
    let (status, _, text) = gw.post("/v1/inference", &json!({"model": "midway", "input": "hi", "stream": true})).await;
    assert_eq!(status, 200);
    let events = sse_events(&text);
    assert!(!delta_text(&events).is_empty());
    assert_eq!(events.last().unwrap()["type"], "error", "{text}");
    assert_eq!(mock.calls("llama3.2"), 1, "only the first request reached ollama");
}

#[tokio::test]
async fn circuit_opens_then_half_opens_with_one_probe() {
    // Long enough that the checks of the open circuit land inside the cool-down on a loaded
    // machine; the waits for it to pass count from the failure that opened the circuit.
    const COOLDOWN: Duration = Duration::from_secs(2);
    let mock = MockUpstream::start().await;
    let config =
        format!("[routes]\nmax_retries = 0\n[routes.circuit_breaker]\nfailure_threshold = 2\ncooldown_ms = {}\n", COOLDOWN.as_millis());
    let gw = Gateway::with_mock(&mock, &config).await;
    let failing = json!({"model": "openai/error-500", "input": "hi"});
    for _ in 0..2 {
        let (status, _) = gw.post_json("/v1/inference", &failing).await;
        assert_eq!(status, 502);
    }
    // The gateway opened the circuit before answering: the cool-down ends before `opened + COOLDOWN`.
    let opened = Instant::now();
    let circuit = |body: &serde_json::Value| {
        body["data"].as_array().unwrap().iter().find(|p| p["name"] == "openai").unwrap()["circuit"]["state"].clone()
    };
    assert_eq!(circuit(&gw.get_json("/v1/providers").await.1), "open");

    // Open: refused without reaching the upstream.
    let (status, headers, text) = gw.post("/v1/inference", &failing).await;
    assert_eq!(status, 503, "{text}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(error_code(&serde_json::from_str(&text).unwrap()), "provider_unavailable");
    assert_eq!(mock.calls("error-500"), 2);

    // After the cool-down one probe goes through; failing, it opens the circuit again.
    tokio::time::sleep((COOLDOWN + Duration::from_millis(50)).saturating_sub(opened.elapsed())).await;
    assert_eq!(circuit(&gw.get_json("/v1/providers").await.1), "half_open");
    let (status, _) = gw.post_json("/v1/inference", &failing).await;
    assert_eq!(status, 502);
    let reopened = Instant::now();
    assert_eq!(mock.calls("error-500"), 3);
    let (status, _) = gw.post_json("/v1/inference", &failing).await;
    assert_eq!(status, 503, "open again after the failed probe");

    // A successful probe closes it.
    tokio::time::sleep((COOLDOWN + Duration::from_millis(50)).saturating_sub(reopened.elapsed())).await;
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "openai/gpt-4o-mini", "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(circuit(&gw.get_json("/v1/providers").await.1), "closed");
}

#[tokio::test]
async fn open_circuit_moves_the_chain_on() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(
        &mock,
        "[routes]\nmax_retries = 0\n[routes.aliases]\nassistant = [\"openai/error-500\", \"ollama/llama3.2\"]\n[routes.circuit_breaker]\nfailure_threshold = 1\ncooldown_ms = 60000\n",
    )
    .await;
    for _ in 0..3 {
        let (status, body) = gw.post_json("/v1/inference", &json!({"model": "assistant", "input": "hi"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["provider"], "ollama");
    }
    assert_eq!(mock.calls("error-500"), 1, "the open circuit skips openai without calling it");
}
