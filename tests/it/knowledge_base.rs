//! The knowledge base end to end: documents over HTTP, answers from the `local` provider
//! with status events and citations, entity search, and the CLI with its lock.

use crate::common;

use std::path::Path;

use common::{Gateway, MockUpstream, client, delta_text, error_code, sse_events};
use serde_json::{Value, json};

fn kb_file(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kb").join(name)).unwrap()
}

async fn upload_raw(gw: &Gateway, name: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r =
        client().post(gw.url(&format!("/v1/documents?name={name}"))).header("content-type", content_type).body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn gateway_with_kb() -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    for name in ["pi-setup.md", "kioskd.md"] {
        let (status, body) = upload_raw(&gw, name, "text/markdown", kb_file(name)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "added");
    }
    // Multipart, as a browser form or `curl -F file=@troubleshooting.md` sends it.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(kb_file("troubleshooting.md")).file_name("troubleshooting.md"))
        .text("collection", "default");
    let r = client().post(gw.url("/v1/documents")).multipart(form).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    (mock, gw)
}

#[tokio::test]
async fn upload_list_ask_and_delete() {
    let (_mock, gw) = gateway_with_kb().await;
    let (status, list) = gw.get_json("/v1/documents").await;
    assert_eq!(status, 200);
    let docs = list["data"].as_array().unwrap();
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| d["chunks"].as_u64().unwrap() > 0 && d["id"].is_string()));

    // Same bytes again: a no-op.
    let (status, body) = upload_raw(&gw, "kioskd.md", "text/markdown", kb_file("kioskd.md")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("unchanged")));

    let (status, body) =
        gw.post_json("/v1/inference", &json!({"provider": "local", "input": "What power supply does the Pi 5 need?"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["output"].as_str().unwrap().contains("27 W"), "{body}");
    assert_eq!(body["sources"][0]["document"], "pi-setup.md");
    assert_eq!(body["sources"][0]["section"], "Hardware");
    assert_eq!(body["sources"][0]["index"], 1);

    let id = docs.iter().find(|d| d["name"] == "troubleshooting.md").unwrap()["id"].as_str().unwrap().to_owned();
    let r = client().delete(gw.url(&format!("/v1/documents/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client().delete(gw.url(&format!("/v1/documents/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(error_code(&r.json().await.unwrap()), "document_not_found");
    assert_eq!(gw.get_json("/v1/documents").await.1["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn streamed_local_answer_reports_each_stage_then_cites() {
    let (_mock, gw) = gateway_with_kb().await;
    let (status, _, text) =
        gw.post("/v1/inference", &json!({"model": "local", "input": "How do I read the kioskd logs?", "stream": true})).await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    let stages: Vec<&str> = events.iter().filter(|e| e["type"] == "status").map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, vec!["searching", "expanding", "ranking", "synthesizing"], "{text}");
    let synth = events.iter().find(|e| e["stage"] == "synthesizing").unwrap();
    assert!(synth["message"].as_str().unwrap().contains("from the passages"), "the extractive answer is announced");
    let answer = delta_text(&events);
    assert!(answer.contains("journalctl -u kioskd"), "{answer}");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let first_delta = kinds.iter().position(|k| *k == "delta").unwrap();
    let sources_at = kinds.iter().position(|k| *k == "sources").unwrap();
    assert!(first_delta < sources_at && kinds.last() == Some(&"done"), "{kinds:?}");
    let sources = &events[sources_at]["sources"];
    assert_eq!(sources[0]["document"], "kioskd.md");

    // The OpenAI-compatible route carries the citations in its `uag` extension.
    let (status, body) = gw
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "local", "messages": [{"role": "user", "content": "How do I read the kioskd logs?"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uag"]["sources"][0]["document"], "kioskd.md");

    // So does the Anthropic Messages route, streamed: the text in deltas, the sources at the end.
    let (status, _, text) = gw
        .post(
            "/v1/messages",
            &json!({"model": "local", "max_tokens": 200, "stream": true,
                    "messages": [{"role": "user", "content": "How do I read the kioskd logs?"}]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let data: Vec<Value> = common::sse(&text).into_iter().map(|(_, d)| serde_json::from_str(&d).unwrap()).collect();
    let answer: String = data.iter().filter(|d| d["type"] == "content_block_delta").map(|d| d["delta"]["text"].as_str().unwrap()).collect();
    assert!(answer.contains("journalctl -u kioskd"), "{answer}");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["uag"]["sources"][0]["document"], "kioskd.md", "{delta}");
}

#[tokio::test]
async fn bad_uploads_get_clear_errors() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock_env(&mock, "", &[("UAG__GRAPHRAG__MAX_DOCUMENT_BYTES", "4096")]).await;
    let (status, body) = upload_raw(&gw, "manual.pdf", "application/octet-stream", b"%PDF-1.4".to_vec()).await;
    assert_eq!((status, error_code(&body).as_str()), (415, "unsupported_media_type"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(".md"), "names the supported types: {body}");
    let (status, body) = upload_raw(&gw, "x.md", "image/png", b"x".to_vec()).await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = upload_raw(&gw, "big.md", "text/markdown", vec![b'a'; 10_000]).await;
    assert_eq!((status, error_code(&body).as_str()), (413, "request_too_large"), "{body}");
    let (status, body) = upload_raw(&gw, "", "text/markdown", b"# x\n\nhello".to_vec()).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("name")), "{body}");
    let (status, body) = upload_raw(&gw, "empty.html", "text/html", b"<html><body></body></html>".to_vec()).await;
    assert_eq!((status, error_code(&body).as_str()), (422, "invalid_document"), "{body}");
    let (status, body) = upload_raw(&gw, "nul.txt", "text/plain", b"a\0b".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    let r = client()
        .post(gw.url("/v1/documents"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nbroken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client().delete(gw.url("/v1/documents/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Still serving.
    let (status, _) = upload_raw(&gw, "ok.md", "text/markdown", b"# Ok\n\nThe Lyra Panel shows the clock.".to_vec()).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn entity_search_returns_neighbours() {
    let (_mock, gw) = gateway_with_kb().await;
    let (status, body) = gw.get_json("/v1/graph/entities?q=kioskd").await;
    assert_eq!(status, 200, "{body}");
    let first = &body["data"][0];
    assert_eq!(first["name"], "kioskd");
    assert!(first["mentions"].as_u64().unwrap() >= 3);
    let neighbours: Vec<&str> = first["neighbours"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert!(neighbours.iter().any(|n| n.contains("kioskd.toml")), "{neighbours:?}");
    let (status, body) = gw.get_json("/v1/graph/entities?q=pi%205").await;
    assert_eq!(status, 200);
    assert!(body["data"][0]["name"].as_str().unwrap().contains("Pi 5"), "{body}");
    let r = client().get(gw.url("/v1/graph/entities?bogus=1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_query");
    let r = client().get(gw.url("/v1/graph/entities?limit=lots")).send().await.unwrap();
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_query");
}

#[tokio::test]
async fn the_cli_refuses_a_knowledge_base_held_by_the_server() {
    let (_mock, gw) = gateway_with_kb().await;
    let data_dir = gw.dir.path().to_owned();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_uag"))
        .args(["kg", "stats"])
        .env("UAG__STORAGE__DATA_DIR", &data_dir)
        .env_remove("UAG_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "EX_TEMPFAIL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another uag process") && stderr.contains("POST /v1/documents"), "{stderr}");
    gw.stop().await.unwrap();
    drop(_mock);
}

/// The inbox flow of `uag-inbox.service`: `uag ingest --server URL --done-dir DIR INBOX`
/// uploads to the running gateway and empties the inbox, failures included.
#[tokio::test]
async fn ingest_through_the_server_empties_the_inbox() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, done) = (tmp.path().join("inbox"), tmp.path().join("done"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("kioskd.md"), kb_file("kioskd.md")).unwrap();
    std::fs::write(inbox.join("pi-setup.md"), kb_file("pi-setup.md")).unwrap();
    std::fs::write(inbox.join("empty.html"), "<html><body></body></html>").unwrap();
    std::fs::write(inbox.join("scan.pdf"), "%PDF-1.4").unwrap();
    // One name in two subfolders: two documents, and both files survive in the done folder.
    for (folder, text) in [("a", "The Alpha Pump needs 48 V."), ("b", "The Beta Fan needs 12 V.")] {
        std::fs::create_dir_all(inbox.join(folder)).unwrap();
        std::fs::write(inbox.join(folder).join("manual.md"), format!("# Manual\n\n{text}\n")).unwrap();
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_uag"))
        .args(["ingest", "--server", &gw.url(""), "--done-dir"])
        .arg(&done)
        .arg(&inbox)
        .env_remove("UAG_CONFIG")
        .env("UAG__STORAGE__DATA_DIR", tmp.path().join("unused"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "two files failed: {stdout}\n{stderr}");
    assert!(stdout.contains("added") && stdout.contains("kioskd.md"), "{stdout}");
    assert!(stderr.contains("empty.html") && stderr.contains("scan.pdf"), "{stderr}");
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0, "the inbox is empty");
    assert!(done.join("kioskd.md").exists() && done.join("pi-setup.md").exists());
    assert!(done.join("failed/empty.html").exists() && done.join("failed/scan.pdf").exists());
    assert!(done.join("a/manual.md").exists() && done.join("b/manual.md").exists());
    let (_, list) = gw.get_json("/v1/documents").await;
    let mut names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a/manual.md", "b/manual.md", "kioskd.md", "pi-setup.md"], "{list}");
}
