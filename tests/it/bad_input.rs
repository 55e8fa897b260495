//! Bad input gets the right status and an OpenAI-shaped JSON error, and the server keeps
//! serving afterwards.

use crate::common;

use common::{Gateway, MockUpstream, client, error_code};
use serde_json::{Value, json};

async fn raw(gw: &Gateway, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = client().post(gw.url(path)).header("content-type", content_type).body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not a JSON error body: {text}")))
}

async fn still_serving(gw: &Gateway) {
    let (status, body) = gw.post_json("/v1/inference", &json!({"model": "ollama/llama3.2", "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.get_json("/healthz").await.0, 200);
}

#[tokio::test]
async fn malformed_and_mistyped_json_name_the_problem() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    for path in ["/v1/inference", "/v1/chat/completions"] {
        for (body, code, param) in [
            ("{\"input\": ", "invalid_json", None),
            ("not json at all", "invalid_json", None),
            ("", "empty_body", None),
            ("[1,2,3]", "invalid_request", Some("body")),
            ("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]} {\"x\":1}", "invalid_json", None),
        ] {
            let (status, err) = raw(&gw, path, "application/json", body).await;
            assert_eq!(status, 400, "{path} {body:?}: {err}");
            assert_eq!(error_code(&err), code, "{path} {body:?}: {err}");
            assert_eq!(err["error"]["param"].as_str(), param, "{path} {body:?}: {err}");
        }
    }
    for (body, param) in [
        (json!({"messages": "hello"}), "messages"),
        (json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "user", "content": 42}]}), "messages[0].content"),
        (json!({"input": "x", "params": {"max_tokens": -1}}), "params.max_tokens"),
        (json!({"input": "x", "stream": "yes"}), "stream"),
        (json!({"messages": []}), "messages"),
        (json!({"input": ""}), "input"),
        (json!({"input": "x", "params": {"top_p": 0}}), "params.top_p"),
    ] {
        let (status, err) = gw.post_json("/v1/inference", &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let (status, err) = gw.post_json("/v1/chat/completions", &json!({"model": "x", "messages": [{"role": "user"}]})).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("messages[0].content")), "{err}");
    let (status, err) = gw.post_json("/v1/chat/completions", &json!({"model": "x"})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("messages"), "{err}");
    still_serving(&gw).await;
}

#[tokio::test]
async fn huge_body_is_413_and_unknown_names_are_404() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let huge = format!("{{\"input\": \"{}\"}}", "a".repeat(5 * 1024 * 1024));
    let (status, err) = raw(&gw, "/v1/inference", "application/json", huge.clone()).await;
    assert_eq!((status, error_code(&err).as_str()), (413, "request_too_large"), "{err}");
    let (status, _) = raw(&gw, "/v1/chat/completions", "application/json", huge).await;
    assert_eq!(status, 413);

    let (status, err) = gw.post_json("/v1/inference", &json!({"provider": "gemini", "input": "x"})).await;
    assert_eq!((status, error_code(&err).as_str()), (404, "provider_not_found"));
    let (status, err) = gw.post_json("/v1/inference", &json!({"model": "gpt-9", "input": "x"})).await;
    assert_eq!((status, error_code(&err).as_str()), (404, "model_not_found"));

    let r = client().get(gw.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(error_code(&r.json().await.unwrap()), "route_not_found");
    let r = client().delete(gw.url("/v1/inference")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(error_code(&r.json().await.unwrap()), "method_not_allowed");
    still_serving(&gw).await;
}

/// Random bytes, truncations of a valid body and deep nesting: every answer is a 4xx with a
/// JSON error, never a 5xx or a dropped connection.
#[tokio::test]
async fn garbage_never_gets_a_5xx() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let valid =
        json!({"model": "ollama/llama3.2", "messages": [{"role": "user", "content": "hi"}], "params": {"max_tokens": 5}}).to_string();
    let mut bodies: Vec<Vec<u8>> = (0..valid.len()).step_by(3).map(|i| valid.as_bytes()[..i].to_vec()).collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [1, 7, 64, 300, 2048] {
        let bytes = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed & 0xff) as u8
            })
            .collect();
        bodies.push(bytes);
    }
    bodies.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    bodies.push(format!("{{\"input\": {}1{}}}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes());
    bodies.push(b"{\"input\": \"\\ud800\"}".to_vec());
    for body in bodies {
        for path in ["/v1/inference", "/v1/chat/completions"] {
            let r = client().post(gw.url(path)).header("content-type", "application/json").body(body.clone()).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            if status == 200 {
                continue; // a truncation can still be a complete, valid request
            }
            assert!((400..500).contains(&status), "{path} {:?} -> {status} {text}", String::from_utf8_lossy(&body));
            let err: Value = serde_json::from_str(&text).unwrap();
            error_code(&err);
        }
    }
    still_serving(&gw).await;
}
