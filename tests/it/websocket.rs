//! The WebSocket API: concurrent requests on one connection, cancel, bad messages, keep-alive
//! and the close frame on shutdown.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Gateway, MockUpstream, wait_until};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gateway) -> Ws {
    tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap().0
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into())).await.unwrap();
}

/// The next JSON text message, skipping pings.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message in time").unwrap().unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn request(id: &str, model: &str) -> Value {
    json!({"type": "request", "request": {"id": id, "model": model, "input": "What is the capital of France?"}})
}

#[tokio::test]
async fn two_concurrent_requests_on_one_connection() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let mut ws = connect(&gw).await;
    send(&mut ws, request("slow-one", "openai/slowstream")).await;
    send(&mut ws, request("fast-one", "ollama/llama3.2")).await;

    let mut texts: HashMap<String, String> = HashMap::new();
    let mut finished = Vec::new();
    while finished.len() < 2 {
        let event = next_json(&mut ws).await;
        let id = event["id"].as_str().expect("every event names its request").to_owned();
        match event["type"].as_str().unwrap() {
            "delta" => texts.entry(id).or_default().push_str(event["text"].as_str().unwrap()),
            "done" => finished.push(id),
            "status" => {}
            other => panic!("unexpected event {other}: {event}"),
        }
    }
    assert_eq!(finished, vec!["fast-one".to_owned(), "slow-one".to_owned()], "the fast request is not held up by the slow one");
    assert_eq!(texts["fast-one"], "The capital of France is Paris.");
    assert_eq!(texts["slow-one"], "The capital of France is Paris.");
}

#[tokio::test]
async fn cancel_stops_the_request_and_its_upstream_stream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let mut ws = connect(&gw).await;
    send(&mut ws, request("r1", "openai/slowstream")).await;
    loop {
        let event = next_json(&mut ws).await;
        if event["type"] == "delta" {
            break;
        }
    }
    send(&mut ws, json!({"type": "cancel", "id": "r1"})).await;
    loop {
        let event = next_json(&mut ws).await;
        assert_ne!(event["type"], "done", "a cancelled request must not finish");
        if event["type"] == "error" {
            assert_eq!(event["id"], "r1");
            assert_eq!(event["code"], "cancelled");
            break;
        }
    }
    // The gateway hung up on the upstream instead of reading the rest (the mock counts it once
    // it notices; a stream read to its end is counted as finished instead, never as abandoned).
    wait_until(Duration::from_secs(10), "the cancelled request's upstream was not abandoned", || mock.abandoned_streams() >= 1).await;
    assert_eq!(mock.abandoned_streams(), 1);
    // The connection is still usable.
    send(&mut ws, request("r2", "ollama/llama3.2")).await;
    loop {
        let event = next_json(&mut ws).await;
        if event["type"] == "done" {
            assert_eq!(event["id"], "r2");
            break;
        }
    }
}

#[tokio::test]
async fn bad_messages_get_error_events_and_the_connection_survives() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let mut ws = connect(&gw).await;

    ws.send(Message::Text("this is not json".into())).await.unwrap();
    let event = next_json(&mut ws).await;
    assert_eq!((event["type"].as_str(), event["code"].as_str()), (Some("error"), Some("invalid_message")), "{event}");
    assert!(event["id"].is_null());

    send(&mut ws, json!({"type": "teleport"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "invalid_message");

    send(&mut ws, json!({"type": "request", "request": {"id": "e1", "messages": []}})).await;
    let event = next_json(&mut ws).await;
    assert_eq!((event["id"].as_str(), event["code"].as_str()), (Some("e1"), Some("invalid_request")), "{event}");

    send(&mut ws, json!({"type": "request", "request": {"id": "e2", "model": "nope/nope", "input": "x"}})).await;
    let mut event = next_json(&mut ws).await;
    if event["type"] == "status" {
        event = next_json(&mut ws).await;
    }
    assert_eq!((event["id"].as_str(), event["code"].as_str()), (Some("e2"), Some("model_not_found")), "{event}");

    send(&mut ws, json!({"type": "cancel", "id": "never-sent"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "unknown_request");

    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "unsupported_message");

    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    send(&mut ws, request("ok", "ollama/llama3.2")).await;
    loop {
        let event = next_json(&mut ws).await;
        assert_ne!(event["type"], "error", "{event}");
        if event["type"] == "done" {
            break;
        }
    }
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock_env(&mock, "", &[("UAG__SERVER__WS_MAX_MESSAGE_BYTES", "1024")]).await;
    let mut ws = connect(&gw).await;
    send(&mut ws, json!({"type": "request", "request": {"input": "x".repeat(4096)}})).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Size);
                break;
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("expected a 1009 close frame"),
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_closes_with_1001() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let mut ws = connect(&gw).await;
    send(&mut ws, request("r1", "openai/slowstream")).await;
    loop {
        if next_json(&mut ws).await["type"] == "delta" {
            break;
        }
    }
    gw.begin_shutdown();
    let mut saw_done = false;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                let event: Value = serde_json::from_str(&t).unwrap();
                if event["type"] == "done" {
                    saw_done = true;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    };
    assert!(saw_done, "the in-flight request finished before the close");
    assert_eq!(close.unwrap().code, CloseCode::Away);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_get_is_told_to_upgrade() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let r = common::client().get(gw.ws_url().replace("ws://", "http://")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 426);
    let body: Value = r.json().await.unwrap();
    assert_eq!(common::error_code(&body), "websocket_required");
}
