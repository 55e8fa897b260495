//! `[cache]`: the response cache end to end. Exact hits on a repeat (JSON, SSE and the OpenAI
//! routes sharing one wire-neutral entry), never across users, bypass, no caching of errors,
//! eviction at the cap; semantic hits on a paraphrase with the real MiniLM and misses on an
//! unrelated question; invalidation when the knowledge base changes; Redis shared by two
//! gateways, and Redis down (the request is served, a metric counts it); WebSocket requests
//! cached like HTTP ones (one pipeline, one cache).
//!
//! The mock upstream counts its calls, which proves whether an answer came from the cache.

use crate::common;

use std::path::Path;

use common::redis::{RedisServer, free_port};
use common::{Gateway, MockUpstream, client, delta_text, models_dir, models_toml, sse, sse_events};
use serde_json::{Value, json};
use sha2::Digest;

const MODEL: &str = "ollama/llama3.2";
/// The mock answers every chat with this.
const ANSWER: &str = "The capital of France is Paris.";

fn question(text: &str) -> Value {
    json!({"model": MODEL, "input": text})
}

/// POSTs `body` to `path` with extra headers; (status, `x-uag-cache`, body text).
async fn post(gw: &Gateway, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut r = client().post(gw.url(path)).json(body);
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let cache = r.headers().get("x-uag-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, r.text().await.unwrap())
}

/// Native JSON inference: (`x-uag-cache`, body), asserting 200.
async fn infer(gw: &Gateway, body: &Value) -> (String, Value) {
    let (status, cache, text) = post(gw, "/v1/inference", body, &[]).await;
    assert_eq!(status, 200, "{text}");
    (cache, serde_json::from_str(&text).unwrap())
}

/// A sample from `/metrics`, by its full series text (0 when absent).
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Waits (10 s at most) until every answer this gateway served has reached its cache backend.
/// Writes land after the response, so another gateway sharing the backend can only find an
/// answer once this is true; on a loaded machine that takes longer than any fixed pause.
async fn writes_settled(gw: &Gateway) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(gw, "uag_cache_pending_writes").await > 0.0 {
        assert!(std::time::Instant::now() < deadline, "cache writes still pending after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn cache_metric(kind: &str, result: &str) -> String {
    format!("uag_cache_requests_total{{kind=\"{kind}\",result=\"{result}\"}}")
}

#[tokio::test]
async fn a_repeat_is_a_hit_in_every_wire_format() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    let q = question("What is the capital of France?");

    let (cache, first) = infer(&gw, &q).await;
    assert_eq!(cache, "miss");
    assert_eq!(first["output"], ANSWER);
    assert_eq!(mock.calls("llama3.2"), 1);

    let (cache, second) = infer(&gw, &q).await;
    assert_eq!(cache, "hit");
    assert_eq!(second["output"], ANSWER);
    assert_eq!(second["provider"], "ollama");
    assert_eq!(second["model"], first["model"]);
    assert_eq!(second["usage"], first["usage"]);
    assert_ne!(second["id"], first["id"], "a hit answers with its own request id");

    // The same question as a stream: replayed as SSE events from the JSON answer's entry.
    let (status, cache, text) =
        post(&gw, "/v1/inference", &json!({"model": MODEL, "input": "What is the capital of France?", "stream": true}), &[]).await;
    assert_eq!((status, cache.as_str()), (200, "hit"), "{text}");
    let events = sse_events(&text);
    assert_eq!(delta_text(&events), ANSWER);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done", "{text}");
    assert_eq!(done["provider"], "ollama");

    // The OpenAI route shares the entry: the request normalises to the same messages.
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let (status, cache, text) = post(&gw, "/v1/chat/completions", &chat, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "hit"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(body["object"], "chat.completion");

    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (status, cache, text) = post(&gw, "/v1/chat/completions", &streamed, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "hit"), "{text}");
    let frames = sse(&text);
    assert_eq!(frames.last().unwrap().1, "[DONE]");
    let content: String = frames
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, ANSWER);

    assert_eq!(mock.calls("llama3.2"), 1, "every repeat was answered from the cache");
    assert_eq!(metric(&gw, &cache_metric("exact", "hit")).await, 4.0);
    assert_eq!(metric(&gw, &cache_metric("exact", "miss")).await, 1.0);

    // Another question or other parameters are other entries.
    assert_eq!(infer(&gw, &question("And of Spain?")).await.0, "miss");
    let mut warmer = q.clone();
    warmer["params"] = json!({"temperature": 0.7});
    assert_eq!(infer(&gw, &warmer).await.0, "miss");
    assert_eq!(mock.calls("llama3.2"), 3);
}

#[tokio::test]
async fn a_streamed_answer_is_stored_and_errors_never_are() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n[routes]\nmax_retries = 0\n").await;
    let streamed = json!({"model": MODEL, "input": "Stream me", "stream": true});
    let (status, cache, text) = post(&gw, "/v1/inference", &streamed, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "miss"), "{text}");
    assert_eq!(delta_text(&sse_events(&text)), ANSWER);
    // The stream ended with `done`: the answer is there for a JSON request too.
    let (cache, body) = infer(&gw, &question("Stream me")).await;
    assert_eq!(cache, "hit");
    assert_eq!(body["output"], ANSWER);
    assert_eq!(mock.calls("llama3.2"), 1);

    // An upstream error (JSON) and a stream cut half-way are never stored.
    for _ in 0..2 {
        let (status, cache, text) = post(&gw, "/v1/inference", &json!({"model": "ollama/error-400", "input": "x"}), &[]).await;
        assert_eq!((status, cache.as_str()), (400, "miss"), "{text}");
        let (status, cache, text) = post(&gw, "/v1/inference", &json!({"model": "ollama/cut", "input": "x", "stream": true}), &[]).await;
        assert_eq!((status, cache.as_str()), (200, "miss"), "{text}");
        assert!(sse_events(&text).iter().any(|e| e["type"] == "error"), "{text}");
    }
    assert_eq!(mock.calls("error-400"), 2);
    assert_eq!(mock.calls("cut"), 2);
}

#[tokio::test]
async fn identical_requests_in_flight_together_ask_the_provider_once() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    // `slowstream` paces its 7 events 150 ms apart: the first stream takes about a second.
    let body = |stream: bool| json!({"model": "openai/slowstream", "input": "Who asks first?", "stream": stream});
    let (streamed, whole) = (body(true), body(false));
    let streams = (0..3).map(|_| post(&gw, "/v1/inference", &streamed, &[]));
    // JSON requests join a little later, while the streamed answer is still being written.
    let jsons = (0..2).map(|_| async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        post(&gw, "/v1/inference", &whole, &[]).await
    });
    let (streams, jsons) = tokio::join!(futures::future::join_all(streams), futures::future::join_all(jsons));

    let mut outcomes: Vec<&str> = streams.iter().chain(&jsons).map(|(_, cache, _)| cache.as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["hit", "hit", "hit", "hit", "miss"], "one asked, four waited for its answer");
    assert_eq!(mock.calls("slowstream"), 1, "the provider was asked once");
    for (status, _, text) in &streams {
        assert_eq!(*status, 200, "{text}");
        assert_eq!(delta_text(&sse_events(text)), ANSWER);
    }
    for (status, _, text) in &jsons {
        assert_eq!(*status, 200, "{text}");
        assert_eq!(serde_json::from_str::<Value>(text).unwrap()["output"], ANSWER);
    }
    assert_eq!(metric(&gw, &cache_metric("exact", "coalesced")).await, 4.0);

    // A request that fails shares nothing: those waiting ask on their own (and fail alike).
    let failing = json!({"model": "openai/error-400", "input": "Will this fail?"});
    let both = tokio::join!(post(&gw, "/v1/inference", &failing, &[]), post(&gw, "/v1/inference", &failing, &[]));
    assert_eq!((both.0.0, both.1.0), (400, 400), "{both:?}");
    assert_eq!(mock.calls("error-400"), 2);
    assert_eq!(metric(&gw, &cache_metric("exact", "coalesced")).await, 4.0);
}

#[tokio::test]
async fn a_header_or_a_parameter_bypasses_the_cache() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    let q = question("Bypass?");
    assert_eq!(infer(&gw, &q).await.0, "miss");
    for headers in [[("x-uag-cache", "bypass")], [("cache-control", "no-cache")]] {
        let (status, cache, _) = post(&gw, "/v1/inference", &q, &headers).await;
        assert_eq!((status, cache.as_str()), (200, "bypass"));
    }
    let mut by_param = q.clone();
    by_param["metadata"] = json!({"cache": false});
    assert_eq!(infer(&gw, &by_param).await.0, "bypass");
    assert_eq!(mock.calls("llama3.2"), 4, "bypassed requests reach the upstream");
    assert_eq!(infer(&gw, &q).await.0, "hit");
    assert_eq!(metric(&gw, &cache_metric("exact", "bypass")).await, 3.0);
    // Requests the handler refuses are refused the same way with the cache on.
    let (status, _, text) = post(&gw, "/v1/inference", &json!({"input": "x", "bogus": 1}), &[]).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bogus"), "{text}");
}

#[tokio::test]
async fn answers_expire_after_the_ttl() {
    let mock = MockUpstream::start().await;
    // 3 s: long enough that the repeat is a hit on a loaded machine, short for a test.
    let gw = Gateway::with_mock(&mock, "[cache]\nttl_s = 3\n").await;
    let q = question("Still fresh?");
    assert_eq!(infer(&gw, &q).await.0, "miss");
    let stored = std::time::Instant::now();
    assert_eq!(infer(&gw, &q).await.0, "hit");
    tokio::time::sleep(std::time::Duration::from_millis(3100).saturating_sub(stored.elapsed())).await;
    assert_eq!(infer(&gw, &q).await.0, "miss");
    assert_eq!(mock.calls("llama3.2"), 2);
}

#[tokio::test]
async fn the_oldest_answer_is_evicted_at_the_cap() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\nmax_entries = 2\n").await;
    for q in ["one", "two", "three"] {
        assert_eq!(infer(&gw, &question(q)).await.0, "miss");
        // Each write lands before the next answer, so which one is the oldest is well defined.
        writes_settled(&gw).await;
    }
    assert_eq!(infer(&gw, &question("three")).await.0, "hit");
    assert_eq!(infer(&gw, &question("two")).await.0, "hit");
    assert_eq!(infer(&gw, &question("one")).await.0, "miss", "the oldest entry was evicted");
}

const ALICE_KEY: &str = "alice-key-0123456789abcdef";
const BOB_KEY: &str = "bob-key-0123456789abcdef";

fn auth_toml(scope: &str) -> String {
    let digest = |k: &str| sha2::Sha256::digest(k.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "[cache]\nscope = \"{scope}\"\n\n[auth]\nrequired = true\n\n\
         [[auth.api_keys]]\nname = \"alice\"\nsha256 = \"{}\"\ntenant = \"acme\"\n\n\
         [[auth.api_keys]]\nname = \"bob\"\nsha256 = \"{}\"\ntenant = \"acme\"\n",
        digest(ALICE_KEY),
        digest(BOB_KEY)
    )
}

async fn infer_as(gw: &Gateway, key: &str, q: &Value) -> String {
    let (status, cache, text) = post(gw, "/v1/inference", q, &[("x-api-key", key)]).await;
    assert_eq!(status, 200, "{text}");
    cache
}

#[tokio::test]
async fn no_hit_across_users_unless_their_tenant_shares_a_scope() {
    let mock = MockUpstream::start().await;
    let q = question("Who am I?");
    let per_user = Gateway::with_mock(&mock, &auth_toml("user")).await;
    assert_eq!(infer_as(&per_user, ALICE_KEY, &q).await, "miss");
    assert_eq!(infer_as(&per_user, ALICE_KEY, &q).await, "hit");
    assert_eq!(infer_as(&per_user, BOB_KEY, &q).await, "miss", "bob must not see alice's answer");
    assert_eq!(infer_as(&per_user, BOB_KEY, &q).await, "hit");
    assert_eq!(mock.calls("llama3.2"), 2);

    let per_tenant = Gateway::with_mock(&mock, &auth_toml("tenant")).await;
    assert_eq!(infer_as(&per_tenant, ALICE_KEY, &q).await, "miss");
    assert_eq!(infer_as(&per_tenant, BOB_KEY, &q).await, "hit", "same tenant, shared scope");
    assert_eq!(mock.calls("llama3.2"), 3);
}

/// A models directory holding only MiniLM (linked from the installed models): the semantic
/// cache embeds with it, and `graphrag` answers extractively (no LLM), fast and deterministic.
fn minilm_only(dir: &Path) -> String {
    models_toml(&["all-minilm-l6-v2"]); // fails, naming the install command, when it is missing
    let models = dir.join("models-minilm");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(models_dir().join("all-minilm-l6-v2"), models.join("all-minilm-l6-v2")).unwrap();
    format!("\n[models]\ndir = \"{}\"\n", models.display())
}

/// Cosine of two texts by `/v1/embeddings` (the vectors are L2-normalised).
async fn cosine(gw: &Gateway, a: &str, b: &str) -> f64 {
    let (status, body) = gw.post_json("/v1/embeddings", &json!({"input": [a, b]})).await;
    assert_eq!(status, 200, "{body}");
    let v: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    v[0].iter().zip(&v[1]).map(|(x, y)| x * y).sum()
}

/// The default threshold (MiniLM scores the paraphrase below about 0.97, the unrelated question about 0.09).
const THRESHOLD: f64 = 0.92;

fn semantic_toml(models: &str) -> String {
    format!("[cache]\n[cache.semantic]\nenabled = true\nthreshold = {THRESHOLD}\n{models}")
}

#[tokio::test]
async fn a_paraphrase_is_a_semantic_hit_and_an_unrelated_question_a_miss() {
    let mock = MockUpstream::start().await;
    let models = tempfile::tempdir().unwrap();
    let gw = Gateway::with_mock(&mock, &semantic_toml(&minilm_only(models.path()))).await;
    let original = "How do I restart the network service?";
    let paraphrase = "How can I restart the networking service?";
    let unrelated = "What is a good recipe for banana bread?";
    let (close, far) = (cosine(&gw, original, paraphrase).await, cosine(&gw, original, unrelated).await);
    assert!(close >= THRESHOLD && far < THRESHOLD, "MiniLM scores: paraphrase {close:.3}, unrelated {far:.3}");

    assert_eq!(infer(&gw, &question(original)).await.0, "miss");
    let (cache, body) = infer(&gw, &question(paraphrase)).await;
    assert_eq!(cache, "semantic");
    assert_eq!(body["output"], ANSWER);
    assert_eq!(mock.calls("llama3.2"), 1);
    assert_eq!(infer(&gw, &question(unrelated)).await.0, "miss");
    assert_eq!(mock.calls("llama3.2"), 2);

    // Streamed, the paraphrase is replayed as events.
    let (status, cache, text) = post(&gw, "/v1/inference", &json!({"model": MODEL, "input": paraphrase, "stream": true}), &[]).await;
    assert_eq!((status, cache.as_str()), (200, "semantic"), "{text}");
    assert_eq!(delta_text(&sse_events(&text)), ANSWER);

    // Scoped per model: the same paraphrase to another model is a miss.
    let other = json!({"model": "openai/gpt-4o-mini", "input": paraphrase});
    assert_eq!(infer(&gw, &other).await.0, "miss");
    // A follow-up in a conversation is not answered semantically (single-turn only).
    let follow_up = json!({"model": MODEL, "messages": [
        {"role": "user", "content": original}, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": paraphrase}]});
    assert_eq!(infer(&gw, &follow_up).await.0, "miss");
    assert_eq!(mock.calls("llama3.2"), 3);

    assert_eq!(metric(&gw, &cache_metric("semantic", "hit")).await, 2.0);
    assert!(metric(&gw, &cache_metric("semantic", "miss")).await >= 2.0);
}

fn kb_file(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kb").join(name)).unwrap()
}

async fn upload(gw: &Gateway, name: &str, body: Vec<u8>) -> Value {
    let r = client()
        .post(gw.url(&format!("/v1/documents?name={name}")))
        .header("content-type", "text/markdown")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.json().await.unwrap()
}

#[tokio::test]
async fn knowledge_base_changes_invalidate_kb_answers_and_the_semantic_cache() {
    let mock = MockUpstream::start().await;
    let models = tempfile::tempdir().unwrap();
    let gw = Gateway::with_mock(&mock, &semantic_toml(&minilm_only(models.path()))).await;
    upload(&gw, "kioskd.md", kb_file("kioskd.md")).await;
    let kb_question = json!({"model": "local", "input": "How do I read the kioskd logs?"});
    let cloud_question = question("How do I restart the network service?");
    let cloud_paraphrase = question("How can I restart the networking service?");

    let (cache, first) = infer(&gw, &kb_question).await;
    assert_eq!(cache, "miss");
    assert!(!first["sources"].as_array().unwrap().is_empty(), "{first}");
    let (cache, again) = infer(&gw, &kb_question).await;
    assert_eq!(cache, "hit");
    assert_eq!(again["output"], first["output"]);
    assert_eq!(again["sources"], first["sources"]);
    assert_eq!(infer(&gw, &cloud_question).await.0, "miss");
    assert_eq!(infer(&gw, &cloud_paraphrase).await.0, "semantic");

    // The knowledge base changes: answers drawn from it and the semantic index are stale.
    upload(&gw, "troubleshooting.md", kb_file("troubleshooting.md")).await;
    assert_eq!(infer(&gw, &kb_question).await.0, "miss");
    assert_eq!(infer(&gw, &kb_question).await.0, "hit");
    assert_eq!(infer(&gw, &cloud_paraphrase).await.0, "miss", "semantic entries die with the knowledge base they saw");
    // An exact cloud answer does not depend on the knowledge base.
    assert_eq!(infer(&gw, &cloud_question).await.0, "hit");

    // A delete is a change too.
    let id = upload(&gw, "troubleshooting.md", kb_file("troubleshooting.md")).await["id"].as_str().unwrap().to_owned();
    assert_eq!(client().delete(gw.url(&format!("/v1/documents/{id}"))).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(infer(&gw, &kb_question).await.0, "miss");
}

fn redis_toml(url: &str) -> String {
    format!("[cache]\nbackend = \"redis\"\nredis_url = \"{url}\"\n")
}

#[tokio::test]
async fn redis_entries_expire_and_the_oldest_are_evicted_at_the_cap() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &format!("{}max_entries = 2\nttl_s = 3\n", redis_toml(&redis.url()))).await;
    for q in ["one", "two", "three"] {
        assert_eq!(infer(&gw, &question(q)).await.0, "miss");
        writes_settled(&gw).await;
    }
    assert_eq!(infer(&gw, &question("three")).await.0, "hit");
    assert_eq!(infer(&gw, &question("two")).await.0, "hit");
    assert_eq!(infer(&gw, &question("one")).await.0, "miss", "the oldest entry was evicted");
    // "one" was just stored again, so only its TTL (3 s) can make the next ask a miss.
    writes_settled(&gw).await;
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    assert_eq!(infer(&gw, &question("one")).await.0, "miss", "expired");
    assert_eq!(metric(&gw, "uag_cache_backend_errors_total{backend=\"redis\"}").await, 0.0);
}

#[tokio::test]
async fn a_redis_semantic_index_is_shared_by_two_gateways() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let models = tempfile::tempdir().unwrap();
    let extra = format!("{}{}", redis_toml(&redis.url()), semantic_toml(&minilm_only(models.path())).trim_start_matches("[cache]\n"));
    let a = Gateway::with_mock(&mock, &extra).await;
    let b = Gateway::with_mock(&mock, &extra).await;
    assert_eq!(infer(&a, &question("How do I restart the network service?")).await.0, "miss");
    writes_settled(&a).await;
    let (cache, body) = infer(&b, &question("How can I restart the networking service?")).await;
    assert_eq!(cache, "semantic", "B finds A's question in the shared index");
    assert_eq!(body["output"], ANSWER);
    assert_eq!(infer(&b, &question("What is a good recipe for banana bread?")).await.0, "miss");
    assert_eq!(mock.calls("llama3.2"), 2);
}

#[tokio::test]
async fn a_redis_cache_is_shared_by_two_gateways() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Gateway::with_mock(&mock, &redis_toml(&redis.url())).await;
    let b = Gateway::with_mock(&mock, &redis_toml(&redis.url())).await;
    let q = question("Shared?");
    assert_eq!(infer(&a, &q).await.0, "miss");
    writes_settled(&a).await;
    let (cache, body) = infer(&b, &q).await;
    assert_eq!(cache, "hit", "B answers from what A stored");
    assert_eq!(body["output"], ANSWER);
    let (status, cache, text) = post(&a, "/v1/inference", &json!({"model": MODEL, "input": "Shared?", "stream": true}), &[]).await;
    assert_eq!((status, cache.as_str()), (200, "hit"), "{text}");
    assert_eq!(mock.calls("llama3.2"), 1);
    assert_eq!(metric(&a, "uag_cache_backend_errors_total{backend=\"redis\"}").await, 0.0);
    assert_eq!(metric(&b, &cache_metric("exact", "hit")).await, 1.0);
}

#[tokio::test]
async fn redis_down_serves_the_request_without_the_cache_and_counts_it() {
    let mock = MockUpstream::start().await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let gw = Gateway::with_mock(&mock, &redis_toml(&nowhere)).await;
    let q = question("Is Redis there?");
    for _ in 0..2 {
        let (cache, body) = infer(&gw, &q).await;
        assert_eq!(cache, "miss");
        assert_eq!(body["output"], ANSWER);
    }
    let (status, _, text) = post(&gw, "/v1/inference", &json!({"model": MODEL, "input": "Is Redis there?", "stream": true}), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&sse_events(&text)), ANSWER);
    assert_eq!(mock.calls("llama3.2"), 3);
    assert!(metric(&gw, "uag_cache_backend_errors_total{backend=\"redis\"}").await >= 3.0);
    assert!(metric(&gw, &cache_metric("exact", "error")).await >= 3.0);
}

/// A request narrowed to some collections (`metadata.collections`) is another question: it is
/// never served the answer stored for the whole knowledge base, and a repeat of it is a hit of
/// its own.
#[tokio::test]
async fn a_narrowed_request_is_never_served_the_whole_knowledge_bases_answer() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    for (name, collection, text) in [
        ("alpha.md", "alpha", "# Lyra kiosk maintenance\n\nThe Lyra kiosk maintenance window is every Monday at 02:00."),
        ("beta.md", "beta", "# Payment terminal\n\nDuring the Lyra kiosk maintenance window the payment terminal is recalibrated."),
    ] {
        let r = client()
            .post(gw.url(&format!("/v1/documents?name={name}&collection={collection}")))
            .header("content-type", "text/markdown")
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let whole = json!({"model": "local", "input": "When is the Lyra kiosk maintenance window?"});
    let narrowed = json!({"model": "local", "input": "When is the Lyra kiosk maintenance window?", "metadata": {"collections": ["beta"]}});
    let documents = |body: &Value| -> Vec<String> {
        body["sources"].as_array().map(|a| a.iter().map(|s| s["document"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    };
    let (cache, first) = infer(&gw, &whole).await;
    assert_eq!(cache, "miss");
    assert!(documents(&first).contains(&"alpha.md".to_owned()), "{first}");
    writes_settled(&gw).await;
    let (cache, narrow) = infer(&gw, &narrowed).await;
    assert_eq!(cache, "miss", "the narrowed request was served the whole knowledge base's answer: {narrow}");
    assert!(documents(&narrow).iter().all(|d| d == "beta.md"), "{narrow}");
    writes_settled(&gw).await;
    assert_eq!(infer(&gw, &narrowed).await.0, "hit");
}

/// A WebSocket request: its events until `done` or `error`, as (status stages, text, last event).
async fn ws_ask(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    id: &str,
    body: Value,
) -> (Vec<String>, String, Value) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let message = json!({"type": "request", "request": {"id": id, "model": MODEL, "input": body["input"], "metadata": body.get("metadata").cloned().unwrap_or(json!({}))}});
    ws.send(Message::Text(message.to_string().into())).await.unwrap();
    let (mut stages, mut text) = (Vec::new(), String::new());
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.expect("an event in time").unwrap().unwrap();
        let Message::Text(t) = msg else { continue };
        let event: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(event["id"], id, "{event}");
        match event["type"].as_str().unwrap() {
            "status" => stages.push(event["stage"].as_str().unwrap().to_owned()),
            "delta" => text.push_str(event["text"].as_str().unwrap()),
            "done" | "error" => return (stages, text, event),
            _ => {}
        }
    }
}

#[tokio::test]
async fn websocket_requests_share_the_cache_with_http() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[cache]\n").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    let q = question("What is the capital of France?");

    // First asked on the socket: the provider answers, and the answer is stored.
    let (stages, text, done) = ws_ask(&mut ws, "w1", q.clone()).await;
    assert_eq!((text.as_str(), done["type"].as_str()), (ANSWER, Some("done")), "{done}");
    assert!(!stages.contains(&"cache".to_owned()), "{stages:?}");
    assert_eq!(mock.calls("llama3.2"), 1);

    // Asked again on the socket: replayed, with the `cache` status, and no provider call.
    let (stages, text, done) = ws_ask(&mut ws, "w2", q.clone()).await;
    assert_eq!(text, ANSWER);
    assert_eq!(done["provider"], "ollama");
    assert!(stages.contains(&"cache".to_owned()), "{stages:?}");
    assert_eq!(mock.calls("llama3.2"), 1);

    // The HTTP routes find the socket's answer: one path, one cache.
    let (cache, body) = infer(&gw, &q).await;
    assert_eq!((cache.as_str(), body["output"].as_str()), ("hit", Some(ANSWER)));
    assert_eq!(mock.calls("llama3.2"), 1);

    // `metadata.cache = false` skips it on the socket too.
    let mut bypass = q.clone();
    bypass["metadata"] = json!({"cache": false});
    let (stages, text, _) = ws_ask(&mut ws, "w3", bypass).await;
    assert_eq!(text, ANSWER);
    assert!(!stages.contains(&"cache".to_owned()), "{stages:?}");
    assert_eq!(mock.calls("llama3.2"), 2);
    assert_eq!(metric(&gw, &cache_metric("exact", "hit")).await, 2.0);
    assert_eq!(metric(&gw, &cache_metric("exact", "bypass")).await, 1.0);
}
