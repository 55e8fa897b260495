//! Images for vision models: `image_url` parts (URLs and `data:` URIs), Anthropic `image` blocks
//! and Responses `input_image` parts reach each upstream in its own form (OpenAI parts as sent,
//! Anthropic base64 or URL image blocks, Ollama base64 `images`); targets that cannot take them
//! (the local models; Ollama for URLs) and bad images get a 400 naming the field; the response
//! cache tells two pictures apart.

use serde_json::{Value, json};

use crate::common::{Gateway, MockUpstream};

/// A 1x1 PNG.
const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn ask(model: &str, images: &[&str]) -> Value {
    let mut content = vec![json!({"type": "text", "text": "What is in this picture?"})];
    content.extend(images.iter().map(|url| json!({"type": "image_url", "image_url": {"url": url, "detail": "low"}})));
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn images_reach_each_upstream_in_its_own_form() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let data = format!("data:image/png;base64,{PIXEL}");
    let url = "https://example.com/pump.jpg";
    let last_body = |path: &str| mock.requests().into_iter().rev().find(|r| r.path == path).map(|r| r.body).unwrap();

    let (status, body) = gw.post_json("/v1/chat/completions", &ask("openai/gpt-4o-mini", &[&data, url])).await;
    assert_eq!(status, 200, "{body}");
    let parts = &last_body("/v1/chat/completions")["messages"][0]["content"];
    assert_eq!(parts[0], json!({"type": "text", "text": "What is in this picture?"}));
    assert_eq!(parts[1], json!({"type": "image_url", "image_url": {"url": data, "detail": "low"}}));
    assert_eq!(parts[2]["image_url"]["url"], url);

    let (status, body) = gw.post_json("/v1/chat/completions", &ask("anthropic/claude-3-5-haiku-20241022", &[&data, url])).await;
    assert_eq!(status, 200, "{body}");
    let blocks = &last_body("/v1/messages")["messages"][0]["content"];
    assert_eq!(blocks[0], json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}));
    assert_eq!(blocks[1], json!({"type": "image", "source": {"type": "url", "url": url}}));
    assert_eq!(blocks[2]["type"], "text", "the question after its images");

    let (status, body) = gw.post_json("/v1/chat/completions", &ask("ollama/llama3.2", &[&data])).await;
    assert_eq!(status, 200, "{body}");
    let sent = last_body("/api/chat");
    assert_eq!(sent["messages"][0]["images"], json!([PIXEL]), "{sent}");
    assert_eq!(sent["messages"][0]["content"], "What is in this picture?");

    // An Anthropic client's image block, and a Responses client's input_image.
    let message = json!({"model": "openai/gpt-4o-mini", "max_tokens": 32, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "text", "text": "What is this?"}]}]});
    let (status, body) = gw.post_json("/v1/messages", &message).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/v1/chat/completions")["messages"][0]["content"][1]["image_url"]["url"], data);
    let response = json!({"model": "anthropic/claude-3-5-haiku-20241022", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url}]}]});
    let (status, body) = gw.post_json("/v1/responses", &response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_body("/v1/messages")["messages"][0]["content"][0]["source"]["url"], url);
}

#[tokio::test]
async fn targets_that_cannot_take_an_image_and_bad_images_are_refused_by_name() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let data = format!("data:image/png;base64,{PIXEL}");
    for (request, param) in [
        (ask("graphrag", &[&data]), "images"),
        (ask("ollama/llama3.2", &["https://example.com/pump.jpg"]), "images"),
        (ask("openai/gpt-4o-mini", &["data:image/bmp;base64,Qk0="]), "messages"),
        (ask("openai/gpt-4o-mini", &["data:image/png;base64,not base64!"]), "messages"),
        (ask("openai/gpt-4o-mini", &["file:///etc/passwd"]), "messages"),
    ] {
        let (status, body) = gw.post_json("/v1/chat/completions", &request).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{request}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    let (status, body) = gw.post_json("/v1/chat/completions", &ask("graphrag", &[&data])).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("cannot see images"), "{status}: {body}");
    assert_eq!(mock.requests().len(), 0, "nothing reached an upstream");
}

/// The same question about two pictures is two requests to the cache; the same picture again
/// is a hit.
#[tokio::test]
async fn the_cache_tells_two_pictures_apart() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    let cache_of = |headers: &reqwest::header::HeaderMap| headers.get("x-uag-cache").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let pump = ask("openai/gpt-4o-mini", &["https://example.com/pump.jpg"]);
    let valve = ask("openai/gpt-4o-mini", &["https://example.com/valve.jpg"]);
    let (_, headers, _) = gw.post("/v1/chat/completions", &pump).await;
    assert_eq!(cache_of(&headers).as_deref(), Some("miss"));
    let (_, headers, _) = gw.post("/v1/chat/completions", &valve).await;
    assert_eq!(cache_of(&headers).as_deref(), Some("miss"), "another picture, same words");
    // The answer is written after the response: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, headers, _) = gw.post("/v1/chat/completions", &pump).await;
        match cache_of(&headers).as_deref() {
            Some("hit") => break,
            other if std::time::Instant::now() > deadline => panic!("the same picture again was {other:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
