//! Request JSON decoding and translation: bytes -> the server's JSON extractor
//! (`parse_json`) -> `InferenceRequest` (native), the OpenAI chat or Responses shape or the Anthropic Messages shape -> `validate()` ->
//! the upstream body of every wire format (OpenAI, OpenAI-compatible, Anthropic, Ollama).
//! Checks that a valid request survives a serde round trip and that every upstream body is
//! JSON carrying the model, the stream flag and each turn's text unchanged.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uag_gateway::config::SecretString;
use uag_gateway::config::{ProviderKind, RemoteProviderConfig};
use uag_gateway::http::anthropic::MessagesRequest;
use uag_gateway::http::extract::parse_json;
use uag_gateway::http::openai::ChatCompletionRequest;
use uag_gateway::http::responses::ResponsesRequest;
use uag_gateway::provider::anthropic::AnthropicProvider;
use uag_gateway::provider::ollama::OllamaProvider;
use uag_gateway::provider::openai::OpenAiProvider;
use uag_gateway::provider::{AuthMethod, Identity, ProviderCall, RequestContext};
use uag_gateway::types::{InferenceRequest, Role};

const MODEL: &str = "fuzz-model";

struct Providers {
    openai: OpenAiProvider,
    compatible: OpenAiProvider,
    anthropic: AnthropicProvider,
    ollama: OllamaProvider,
}

fn providers() -> &'static Providers {
    static P: OnceLock<Providers> = OnceLock::new();
    P.get_or_init(|| {
        let config: RemoteProviderConfig = toml::from_str("name = \"fuzz\"\nmodels = [\"fuzz-model\"]").expect("provider config");
        // Through uag's builder: reqwest has no TLS crypto provider of its own (ring is installed there).
        let client = uag_gateway::crypto::http_client_builder().build().expect("http client");
        let url = "http://127.0.0.1:9".to_owned();
        Providers {
            openai: OpenAiProvider::new(ProviderKind::OpenAi, &config, url.clone(), Some(SecretString::new("k")), client.clone()),
            compatible: OpenAiProvider::new(ProviderKind::OpenAiCompatible, &config, url.clone(), None, client.clone()),
            anthropic: AnthropicProvider::new(&config, url.clone(), SecretString::new("k"), client.clone()),
            ollama: OllamaProvider::new(&config, url, None, client),
        }
    })
}

fn body(bytes: &[u8], wire: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{wire} body is not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn check_messages(wire: &str, body: &Value, expected: &[(Role, String)]) {
    let messages = body["messages"].as_array().unwrap_or_else(|| panic!("{wire}: no messages array"));
    assert_eq!(messages.len(), expected.len(), "{wire}: message count");
    for (m, (_, content)) in messages.iter().zip(expected) {
        assert_eq!(m["content"].as_str(), Some(content.as_str()), "{wire}: content changed");
        assert!(m["role"].is_string(), "{wire}: role missing");
    }
}

fn translate(request: InferenceRequest, stream: bool) {
    let conversation: Vec<(Role, String)> = request.conversation().into_iter().map(|m| (m.role, m.content)).collect();
    assert!(!conversation.is_empty(), "a valid request has a conversation");
    let mut ctx = RequestContext::new("fuzz", Duration::from_secs(1));
    ctx.identity = Some(Identity { subject: "fuzz-user".into(), roles: vec![], tenant: None, method: AuthMethod::ApiKey });
    let call = ProviderCall { model: MODEL.into(), request, ctx, timeout: Duration::from_secs(1) };
    let p = providers();

    for (wire, provider) in [("openai", &p.openai), ("openai_compatible", &p.compatible)] {
        let b = body(&provider.fuzz_request_body(&call, stream).expect("openai body serialises"), wire);
        assert_eq!(b["model"], MODEL, "{wire}: model");
        assert_eq!(b["stream"], stream, "{wire}: stream");
        check_messages(wire, &b, &conversation);
    }

    let b = body(&p.anthropic.fuzz_request_body(&call, stream).expect("anthropic body serialises"), "anthropic");
    assert_eq!(b["model"], MODEL);
    assert_eq!(b["stream"], stream);
    assert!(b["max_tokens"].as_u64().is_some_and(|n| n >= 1), "anthropic: max_tokens is required");
    let (system, rest): (Vec<_>, Vec<_>) = conversation.iter().cloned().partition(|(r, _)| *r == Role::System);
    check_messages("anthropic", &b, &rest);
    match b.get("system").and_then(Value::as_str) {
        Some(s) => assert_eq!(s, system.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("\n\n")),
        None => assert!(system.is_empty(), "anthropic: system prompt dropped"),
    }

    let raw = p.ollama.fuzz_request_body(&call, stream).expect("ollama request builds");
    let b = body(&raw, "ollama");
    assert_eq!(b["model"], MODEL);
    assert_eq!(b["stream"], stream);
    check_messages("ollama", &b, &conversation);
}

fn roundtrip(request: &InferenceRequest) {
    let json = serde_json::to_vec(request).expect("a request serialises");
    let back: InferenceRequest = parse_json(&json).unwrap_or_else(|e| panic!("re-parse failed: {e:?}: {}", String::from_utf8_lossy(&json)));
    // Floats may move by one ulp through serde_json's fast float parser; text must not move.
    assert_eq!(back.id, request.id);
    assert_eq!(back.provider, request.provider);
    assert_eq!(back.model, request.model);
    assert_eq!(back.messages, request.messages);
    assert_eq!(back.input, request.input);
    assert_eq!(back.params.stop, request.params.stop);
    assert_eq!(back.params.max_tokens, request.params.max_tokens);
    assert_eq!(back.params.seed, request.params.seed);
    assert_eq!(back.stream, request.stream);
    assert_eq!(back.metadata.len(), request.metadata.len());
}

fuzz_target!(|data: &[u8]| {
    let stream = data.len() % 2 == 1;
    // The native shape (`POST /v1/inference`, the WebSocket `request`).
    if let Ok(request) = parse_json::<InferenceRequest>(data)
        && request.validate().is_ok()
    {
        roundtrip(&request);
        translate(request, stream);
    }
    // The OpenAI chat shape (`POST /v1/chat/completions`).
    if let Ok(chat) = parse_json::<ChatCompletionRequest>(data)
        && let Ok((request, _include_usage)) = chat.into_inference()
        && request.validate().is_ok()
    {
        translate(request, stream);
    }
    // The OpenAI Responses shape (`POST /v1/responses`).
    if let Ok(responses) = parse_json::<ResponsesRequest>(data)
        && let Ok(request) = responses.into_inference()
        && request.validate().is_ok()
    {
        translate(request, stream);
    }
    // The Anthropic Messages shape (`POST /v1/messages`).
    if let Ok(messages) = parse_json::<MessagesRequest>(data)
        && let Ok(request) = messages.into_inference()
        && request.validate().is_ok()
    {
        translate(request, stream);
    }
});
