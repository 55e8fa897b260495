//! `[rate_limits]`: per-caller, per-route, per-provider and token-budget limits in memory, and
//! the Redis backend shared by two gateways, failing open or closed when Redis is down.

use crate::common;

use common::redis::{RedisServer, free_port};
use common::{Gateway, MockUpstream, client, error_code};
use serde_json::{Value, json};

fn body() -> Value {
    json!({"model": "ollama/llama3.2", "input": "What is the capital of France?"})
}

async fn infer(gw: &Gateway) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client().post(gw.url("/v1/inference")).json(&body()).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> u64 {
    headers.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap().parse().unwrap()
}

/// `uag_rate_limit_*` series from `/metrics`, as text lines.
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn a_burst_over_the_caller_limit_gets_429_with_headers() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[rate_limits]\nuser_requests_per_minute = 5\n").await;
    let mut passed = 0;
    let mut refused = 0;
    for _ in 0..10 {
        let (status, headers, body) = infer(&gw).await;
        assert_eq!(header(&headers, "x-ratelimit-limit"), 5);
        match status {
            200 => {
                passed += 1;
                assert_eq!(header(&headers, "x-ratelimit-remaining"), 5 - passed);
            }
            429 => {
                refused += 1;
                assert_eq!(error_code(&body), "user_rate_limit_exceeded");
                assert_eq!(body["error"]["type"], "rate_limit_error");
                assert_eq!(header(&headers, "x-ratelimit-remaining"), 0);
                assert!(header(&headers, "retry-after") >= 1);
                assert!(header(&headers, "x-ratelimit-reset") >= 1);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!((4..=6).contains(&passed), "{passed} passed");
    assert_eq!(passed + refused, 10);
    // Probes are never limited.
    assert_eq!(client().get(gw.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(metric(&gw, "uag_rate_limit_rejections_total{scope=\"user\"}").await, refused as f64);
}

#[tokio::test]
async fn route_limits_and_token_budgets() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[rate_limits]\nuser_tokens_per_minute = 30\n[rate_limits.routes]\n\"/v1/models\" = 2\n").await;
    for expected in [200, 200, 429] {
        let r = client().get(gw.url("/v1/models")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), expected);
    }
    // The mock's Ollama answer reports 35 tokens: the first request passes, the next is over budget.
    assert_eq!(infer(&gw).await.0, 200);
    let (status, headers, body) = infer(&gw).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "token_budget_exceeded");
    assert_eq!(header(&headers, "x-ratelimit-limit"), 30);
    assert_eq!(metric(&gw, "uag_rate_limit_rejections_total{scope=\"tokens\"}").await, 1.0);
    assert_eq!(metric(&gw, "uag_rate_limit_rejections_total{scope=\"route\"}").await, 1.0);
}

#[tokio::test]
async fn provider_limits_fall_back_to_the_next_target() {
    let mock = MockUpstream::start().await;
    let extra = "[routes]\nmax_retries = 0\n[routes.aliases]\nchat = [\"ollama/llama3.2\", \"openai/gpt-4o-mini\"]\n\
                 [rate_limits.providers.ollama]\nrequests_per_minute = 1\nmax_concurrent = 1\n";
    let gw = Gateway::with_mock(&mock, extra).await;
    let mut providers = Vec::new();
    for _ in 0..2 {
        let (status, body) = gw.post_json("/v1/inference", &json!({"model": "chat", "input": "hi"})).await;
        assert_eq!(status, 200, "{body}");
        providers.push(body["provider"].as_str().unwrap().to_owned());
    }
    assert_eq!(providers, ["ollama", "openai"]);
    assert_eq!(metric(&gw, "uag_rate_limit_rejections_total{scope=\"provider\"}").await, 1.0);
}

fn redis_toml(url: &str, on_error: &str, per_minute: u32) -> String {
    format!(
        "[rate_limits]\nbackend = \"redis\"\nredis_url = \"{url}\"\non_redis_error = \"{on_error}\"\nuser_requests_per_minute = {per_minute}\n"
    )
}

#[tokio::test]
async fn a_redis_limit_is_shared_by_two_gateways() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Gateway::with_mock(&mock, &redis_toml(&redis.url(), "closed", 8)).await;
    let b = Gateway::with_mock(&mock, &redis_toml(&redis.url(), "closed", 8)).await;
    let mut passed = 0;
    for i in 0..16 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (status, headers, body) = infer(gw).await;
        match status {
            200 => passed += 1,
            429 => {
                assert_eq!(error_code(&body), "user_rate_limit_exceeded");
                assert!(header(&headers, "retry-after") >= 1);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!((7..=9).contains(&passed), "{passed} of 16 passed a shared limit of 8");
    assert_eq!(metric(&a, "uag_rate_limit_backend_errors_total").await, 0.0);
}

#[tokio::test]
async fn redis_down_fails_open_or_closed_as_configured() {
    let mock = MockUpstream::start().await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let open = Gateway::with_mock(&mock, &redis_toml(&nowhere, "open", 100)).await;
    assert_eq!(infer(&open).await.0, 200);
    assert!(metric(&open, "uag_rate_limit_backend_errors_total").await >= 1.0);
    let closed = Gateway::with_mock(&mock, &redis_toml(&nowhere, "closed", 100)).await;
    let (status, _, body) = infer(&closed).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "rate_limit_backend_unavailable");
}

/// Requests on one WebSocket are admitted one by one, as HTTP requests are (the upgrade counts
/// as one): with 5 requests a minute, 12 requests on one `/v1/inference/stream` socket do not
/// all run; the refused ones get an `error` event and never reach the provider.
#[tokio::test]
async fn websocket_requests_count_against_the_callers_limit() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[rate_limits]\nuser_requests_per_minute = 5\n").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    let (mut done, mut limited) = (0, 0);
    for i in 0..12 {
        let request = json!({"type": "request", "request": {"id": format!("r{i}"), "model": "ollama/llama3.2", "input": "Hi"}});
        ws.send(Message::Text(request.to_string().into())).await.unwrap();
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
            let Message::Text(text) = message else { continue };
            let event: Value = serde_json::from_str(&text).unwrap();
            match event["type"].as_str() {
                Some("done") => {
                    done += 1;
                    break;
                }
                Some("error") => {
                    assert_eq!(event["code"], "user_rate_limit_exceeded", "{event}");
                    assert_eq!(event["id"], format!("r{i}"), "{event}");
                    limited += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    assert_eq!((done, limited), (4, 8), "the upgrade took one of the 5");
    assert_eq!(mock.calls("llama3.2"), 4);
    assert_eq!(metric(&gw, "uag_rate_limit_rejections_total{scope=\"user\"}").await, 8.0);
}

/// An API key named `alice` and an IdP user whose JWT `sub` is `alice` are two callers: one
/// spending its budget leaves the other's untouched (they shared one key before).
#[tokio::test]
async fn callers_of_one_name_but_different_methods_have_their_own_budgets() {
    use sha2::Digest;
    const KEY: &str = "uag_a-key-that-is-named-alice-000000";
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes-for-hs256";
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let digest: String = sha2::Sha256::digest(KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let toml = format!(
        "[auth]\nrequired = true\n[auth.jwt]\nissuer = \"idp\"\naudience = \"uag\"\nhs256_secret = \"file::{}\"\n\
         [[auth.api_keys]]\nname = \"alice\"\nsha256 = \"{digest}\"\n[rate_limits]\nuser_requests_per_minute = 2\n",
        secret_file.display()
    );
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &toml).await;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let jwt = common::jwt(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "iss": "idp", "aud": "uag", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let ask = |bearer: &str| client().post(gw.url("/v1/inference")).bearer_auth(bearer).json(&body()).send();
    for _ in 0..2 {
        assert_eq!(ask(KEY).await.unwrap().status(), 200);
    }
    let r = ask(KEY).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(error_code(&r.json().await.unwrap()), "user_rate_limit_exceeded");
    // The JWT's alice has not spent anything.
    for _ in 0..2 {
        assert_eq!(ask(&jwt).await.unwrap().status(), 200, "the JWT user kept her own budget");
    }
    assert_eq!(ask(&jwt).await.unwrap().status(), 429);
}
