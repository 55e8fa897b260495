//! `[policy]`: Rego authorization (regorus) end to end. Providers allowed and denied per role
//! (403 `policy_denied`, fallback chains skipping denied targets, the WebSocket API), GraphRAG
//! retrieval filtered by the collections the policy allows, reload on file change and on SIGHUP,
//! and a broken policy kept out (at start-up and on reload).

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Gateway, MockUpstream, client, error_code};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uag_gateway::config::{Config, ConfigOrigin};

const SECRET: &str = "policy-test-secret-of-at-least-32-bytes";

const POLICY: &str = r#"package uag

default allow := false

# Administrators may do everything.
allow if "admin" in input.identity.roles

# Others may use the providers their roles list, for inference only.
allow if {
    input.kind == "inference"
    some role in input.identity.roles
    input.provider in data.roles[role].providers
}

# Editors of a collection may change documents (in their collections only).
allow if {
    input.kind == "documents"
    "alpha-editor" in input.identity.roles
}

# Listeners may use the local speech models (and the voice socket).
allow if {
    input.kind == "audio"
    "listener" in input.identity.roles
}

# Any known role may list the documents (of its collections).
allow if {
    input.kind == "documents"
    input.method == "GET"
    some role in input.identity.roles
    data.roles[role]
}

allowed_collections contains c if {
    some role in input.identity.roles
    some c in data.roles[role].collections
}
"#;

const DATA: &str = r#"{"roles": {
    "admin": {"collections": ["*"]},
    "user": {"providers": ["ollama", "local"], "collections": ["alpha"]},
    "beta-reader": {"providers": ["local"], "collections": ["beta"]},
    "alpha-editor": {"collections": ["alpha"]}
}}"#;

/// The same data with `openai` allowed for `user`.
const DATA_OPENAI: &str = r#"{"roles": {
    "admin": {"collections": ["*"]},
    "user": {"providers": ["ollama", "local", "openai"], "collections": ["alpha"]},
    "beta-reader": {"providers": ["local"], "collections": ["beta"]}
}}"#;

fn token(sub: &str, roles: &[&str]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": sub, "iss": "https://idp.test", "aud": "uag", "exp": now + 600, "roles": roles});
    common::jwt(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// Writes the secret, the policy and its data under `dir`; the `[auth]` + `[policy]` config.
fn setup(dir: &Path, watch_interval_ms: u64) -> String {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    std::fs::write(dir.join("uag.rego"), POLICY).unwrap();
    std::fs::write(dir.join("data.json"), DATA).unwrap();
    let d = dir.display();
    format!(
        r#"
[auth]
required = true
[auth.jwt]
issuer = "https://idp.test"
audience = "uag"
hs256_secret = "file::{d}/secret"

[policy]
files = ["{d}/uag.rego"]
data = "{d}/data.json"
query = "data.uag.allow"
collections_query = "data.uag.allowed_collections"
watch_interval_ms = {watch_interval_ms}
"#
    )
}

async fn start(watch_interval_ms: u64) -> (MockUpstream, Gateway, tempfile::TempDir) {
    start_with(watch_interval_ms, "").await
}

/// As [`start`], with more config (`extra` goes first, so it may open its own sections).
async fn start_with(watch_interval_ms: u64, extra: &str) -> (MockUpstream, Gateway, tempfile::TempDir) {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = "[routes.aliases]\nchat = [\"openai/gpt-4o-mini\", \"ollama/llama3.2\"]\n";
    let gw = Gateway::with_mock(&mock, &format!("{extra}\n{routes}{}", setup(dir.path(), watch_interval_ms))).await;
    (mock, gw, dir)
}

async fn post(gw: &Gateway, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
    let r = client().post(gw.url(path)).bearer_auth(bearer).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

async fn infer(gw: &Gateway, bearer: &str, model: &str) -> (u16, Value) {
    post(gw, "/v1/inference", bearer, &json!({"model": model, "input": "What is the capital of France?"})).await
}

fn assert_denied(status: u16, body: &Value) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(body), "policy_denied", "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
}

/// A sample from `/metrics` by its full series text (0 when absent).
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = client().get(gw.url("/metrics")).bearer_auth(token("ops", &["admin"])).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Polls `check` until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn providers_are_allowed_and_denied_per_role() {
    let logs = common::captured_logs();
    let (_mock, gw, _dir) = start(0).await;
    let user = token("alice", &["user"]);
    let admin = token("root", &["admin"]);

    let (status, body) = infer(&gw, &user, "ollama/llama3.2").await;
    assert_eq!((status, body["provider"].as_str()), (200, Some("ollama")), "{body}");
    let (status, body) = infer(&gw, &user, "openai/gpt-4o-mini").await;
    assert_denied(status, &body);
    assert!(!body.to_string().contains("data.uag"), "the body does not explain the policy: {body}");
    // A role without rules gets nothing.
    let (status, body) = infer(&gw, &token("eve", &["guest"]), "ollama/llama3.2").await;
    assert_denied(status, &body);
    // The admin may use openai.
    let (status, body) = infer(&gw, &admin, "openai/gpt-4o-mini").await;
    assert_eq!((status, body["provider"].as_str()), (200, Some("openai")), "{body}");

    // A chain skips the denied target: openai first for the admin, ollama for the user.
    let (status, body) = infer(&gw, &admin, "chat").await;
    assert_eq!((status, body["provider"].as_str()), (200, Some("openai")), "{body}");
    let (status, body) = infer(&gw, &user, "chat").await;
    assert_eq!((status, body["provider"].as_str()), (200, Some("ollama")), "{body}");

    // The OpenAI-compatible route, JSON and streaming.
    let chat = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]});
    let (status, body) = post(&gw, "/v1/chat/completions", &user, &chat("openai/gpt-4o-mini", false)).await;
    assert_denied(status, &body);
    let (status, body) = post(&gw, "/v1/chat/completions", &user, &chat("openai/gpt-4o-mini", true)).await;
    assert_denied(status, &body);
    let (status, body) = post(&gw, "/v1/chat/completions", &user, &chat("ollama/llama3.2", false)).await;
    assert_eq!(status, 200, "{body}");
    // Native streaming is refused before the stream starts, with a status.
    let (status, body) = post(&gw, "/v1/inference", &user, &json!({"model": "openai/gpt-4o-mini", "input": "Hi", "stream": true})).await;
    assert_denied(status, &body);

    // Routes without a provider are decided once: documents are for admins only here.
    let upload = |bearer: &str| {
        client()
            .post(gw.url("/v1/documents?name=note.md&collection=alpha"))
            .bearer_auth(bearer.to_owned())
            .header("content-type", "text/markdown")
            .body("# Note\n\nThe Lyra kiosk restarts at midnight.")
            .send()
    };
    let r = upload(&user).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_denied(403, &r.json().await.unwrap());
    assert_eq!(upload(&admin).await.unwrap().status().as_u16(), 201);

    assert!(metric(&gw, r#"uag_policy_decisions_total{decision="allow"}"#).await >= 5.0);
    assert!(metric(&gw, r#"uag_policy_decisions_total{decision="deny"}"#).await >= 5.0);

    // Decisions are logged with the subject and the targets, never with the credential.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("policy decision") && l.contains("subject=\"alice\"") && l.contains("denied=openai/gpt-4o-mini"))
        .unwrap_or_else(|| panic!("no decision line for alice in the log:\n{text}"));
    assert!(line.contains("decision=\"deny\"") || line.contains("decision=deny"), "{line}");
    assert!(!text.contains(&user) && !text.contains(&admin), "a token reached the log");
    assert!(!text.contains(SECRET), "the JWT secret reached the log");
}

#[tokio::test]
async fn cached_answers_are_replayed_only_where_the_policy_allows() {
    // One cache for everybody, so only the policy keeps answers apart.
    let (_mock, gw, _dir) = start_with(0, "[cache]\nscope = \"global\"\n").await;
    let (user, admin) = (token("alice", &["user"]), token("root", &["admin"]));
    let ask = |bearer: String, body: Value| {
        let r = client().post(gw.url("/v1/inference")).bearer_auth(bearer).json(&body).send();
        async move {
            let r = r.await.unwrap();
            let cache = r.headers().get("x-uag-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            (r.status().as_u16(), cache, r.json::<Value>().await.unwrap())
        }
    };
    let openai = json!({"model": "openai/gpt-4o-mini", "input": "Cached for the admin?"});
    assert_eq!(ask(admin.clone(), openai.clone()).await.0, 200);
    let (status, cache, _) = ask(admin.clone(), openai.clone()).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    let (status, cache, body) = ask(user.clone(), openai).await;
    assert_denied(status, &body);
    assert_eq!(cache, "miss", "the stored answer was not served");

    upload(&gw, &admin, "alpha.md", "alpha", "# Lyra kiosk maintenance\n\nThe Lyra kiosk maintenance window is every Monday at 02:00.")
        .await;
    upload(
        &gw,
        &admin,
        "beta.md",
        "beta",
        "# Payment terminal\n\nDuring the Lyra kiosk maintenance window the payment terminal is recalibrated.",
    )
    .await;
    let question = json!({"provider": "local", "input": "When is the Lyra kiosk maintenance window?"});
    let (status, _, body) = ask(admin.clone(), question.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("beta.md"), "the admin's answer cites beta: {body}");
    // The stored answer cites beta; alice may only read alpha, so she gets a fresh answer.
    for _ in 0..2 {
        let (status, cache, body) = ask(user.clone(), question.clone()).await;
        assert_eq!((status, cache.as_str()), (200, "miss"), "{body}");
        assert!(body["sources"].to_string().contains("alpha.md"), "{body}");
        assert!(!body.to_string().contains("beta.md"), "a cached answer leaked collection beta: {body}");
    }
}

#[tokio::test]
async fn websocket_requests_are_authorized_one_by_one() {
    let (_mock, gw, _dir) = start(0).await;
    let url = format!("{}?access_token={}", gw.ws_url(), token("alice", &["user"]));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for (id, model) in [("denied", "openai/gpt-4o-mini"), ("allowed", "ollama/llama3.2")] {
        let request = json!({"type": "request", "request": {"id": id, "model": model, "input": "Hi"}});
        ws.send(Message::Text(request.to_string().into())).await.unwrap();
    }
    let mut outcome = std::collections::HashMap::new();
    while outcome.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(text) = message else { continue };
        let event: Value = serde_json::from_str(&text).unwrap();
        match event["type"].as_str() {
            Some("error") => {
                outcome.insert(event["id"].as_str().unwrap().to_owned(), event["code"].as_str().unwrap().to_owned());
            }
            Some("done") => {
                outcome.insert(event["id"].as_str().unwrap().to_owned(), "done".to_owned());
            }
            _ => {}
        }
    }
    assert_eq!(outcome["denied"], "policy_denied");
    assert_eq!(outcome["allowed"], "done");
}

async fn upload(gw: &Gateway, bearer: &str, name: &str, collection: &str, text: &str) {
    let r = client()
        .post(gw.url(&format!("/v1/documents?name={name}&collection={collection}")))
        .bearer_auth(bearer)
        .header("content-type", "text/markdown")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

/// The documents the local answer cites.
async fn cited(gw: &Gateway, bearer: &str, extra: Value) -> Vec<String> {
    let mut body = json!({"provider": "local", "input": "How often is the Lyra kiosk maintenance window?"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, body) = post(gw, "/v1/inference", bearer, &body).await;
    assert_eq!(status, 200, "{body}");
    // No passages: `sources` is left out.
    body["sources"].as_array().map(|a| a.iter().map(|s| s["document"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn retrieval_only_sees_allowed_collections() {
    let (_mock, gw, _dir) = start(0).await;
    let admin = token("root", &["admin"]);
    upload(
        &gw,
        &admin,
        "alpha.md",
        "alpha",
        "# Lyra kiosk maintenance\n\nThe Lyra kiosk maintenance window is every Monday at 02:00, when technicians replace the air filter.",
    )
    .await;
    upload(
        &gw,
        &admin,
        "beta.md",
        "beta",
        "# Payment terminal\n\nDuring the Lyra kiosk maintenance window the payment terminal is recalibrated by the vendor.",
    )
    .await;

    let everything = cited(&gw, &admin, json!({})).await;
    assert!(everything.contains(&"alpha.md".into()) && everything.contains(&"beta.md".into()), "{everything:?}");

    let user = token("alice", &["user"]);
    let sources = cited(&gw, &user, json!({})).await;
    assert!(sources.contains(&"alpha.md".into()), "{sources:?}");
    assert!(!sources.contains(&"beta.md".into()), "collection beta leaked: {sources:?}");

    // The documents API shows a caller only the documents of their collections.
    let r = client().get(gw.url("/v1/documents")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let listed: Value = r.json().await.unwrap();
    let names: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha.md"], "{listed}");
    let r = client().get(gw.url("/v1/documents")).bearer_auth(&admin).send().await.unwrap();
    let all: Value = r.json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let beta_id = all["data"].as_array().unwrap().iter().find(|d| d["name"] == "beta.md").unwrap()["id"].as_str().unwrap().to_owned();

    // An editor of alpha can neither write to beta nor delete from it (a 404, as if absent).
    let editor = token("ed", &["alpha-editor"]);
    let r = client()
        .post(gw.url("/v1/documents?name=x.md&collection=beta"))
        .bearer_auth(&editor)
        .header("content-type", "text/markdown")
        .body("# X\n\nNot for beta.")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_denied(status, &r.json().await.unwrap());
    let r = client().delete(gw.url(&format!("/v1/documents/{beta_id}"))).bearer_auth(&editor).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(error_code(&r.json().await.unwrap()), "document_not_found");
    upload(&gw, &editor, "alpha-2.md", "alpha", "# Alpha note\n\nThe alpha collection has a second note.").await;

    let beta = token("bob", &["beta-reader"]);
    let sources = cited(&gw, &beta, json!({})).await;
    assert!(sources.contains(&"beta.md".into()) && !sources.contains(&"alpha.md".into()), "{sources:?}");

    // Asking for a collection outside the policy does not widen it: the intersection is empty.
    let sources = cited(&gw, &user, json!({"metadata": {"collections": ["beta"]}})).await;
    assert!(sources.is_empty(), "{sources:?}");
    // The admin may narrow to one collection.
    let sources = cited(&gw, &admin, json!({"metadata": {"collections": ["beta"]}})).await;
    assert_eq!(sources.iter().filter(|s| *s == "alpha.md").count(), 0, "{sources:?}");
    assert!(sources.contains(&"beta.md".into()), "{sources:?}");

    // The OpenAI-compatible route filters the same way.
    let (status, body) = post(
        &gw,
        "/v1/chat/completions",
        &user,
        &json!({"model": "local", "messages": [{"role": "user", "content": "How often is the Lyra kiosk maintenance window?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let docs: Vec<&str> = body["uag"]["sources"].as_array().unwrap().iter().map(|s| s["document"].as_str().unwrap()).collect();
    assert!(docs.contains(&"alpha.md") && !docs.contains(&"beta.md"), "{docs:?}");

    // An upload to alpha under the name of beta's document is another document (ids are per
    // collection): `upload` asserts 201 added, not 200 replaced, so the reply does not reveal that
    // beta holds that name, and beta's document stays whole.
    upload(
        &gw,
        &editor,
        "beta.md",
        "alpha",
        "# Editors' copy

A note of the alpha editors.",
    )
    .await;
    let r = client().get(gw.url("/v1/documents")).bearer_auth(&admin).send().await.unwrap();
    let all: Value = r.json().await.unwrap();
    let beta_doc = all["data"].as_array().unwrap().iter().find(|d| d["id"] == beta_id.as_str()).expect("beta's document survives");
    assert_eq!(beta_doc["collection"], "beta", "{all}");
    assert_eq!(all["data"].as_array().unwrap().iter().filter(|d| d["name"] == "beta.md").count(), 2, "{all}");
    let sources = cited(&gw, &beta, json!({})).await;
    assert!(sources.contains(&"beta.md".into()), "{sources:?}");
}

#[tokio::test]
async fn file_changes_reload_and_a_broken_policy_is_kept_out() {
    let (_mock, gw, dir) = start(100).await;
    let user = token("alice", &["user"]);
    assert_denied_now(&gw, &user).await;

    // New data: within a few polls the new decision applies.
    std::fs::write(dir.path().join("data.json"), DATA_OPENAI).unwrap();
    let allowed = eventually(Duration::from_secs(5), || async { infer(&gw, &user, "openai/gpt-4o-mini").await.0 == 200 }).await;
    assert!(allowed, "the changed data file was not reloaded");
    let ok_reloads = metric(&gw, r#"uag_policy_reloads_total{result="ok"}"#).await;
    assert!(ok_reloads >= 1.0);

    // A policy that does not compile: the error is counted, the previous policy stays active.
    let errors_before = metric(&gw, r#"uag_policy_reloads_total{result="error"}"#).await;
    std::fs::write(dir.path().join("uag.rego"), "package uag\n\nallow if { input.provider == }\n").unwrap();
    let counted =
        eventually(Duration::from_secs(5), || async { metric(&gw, r#"uag_policy_reloads_total{result="error"}"#).await > errors_before })
            .await;
    assert!(counted, "the failed reload was not counted");
    let (status, body) = infer(&gw, &user, "openai/gpt-4o-mini").await;
    assert_eq!(status, 200, "the last good policy must stay active: {body}");
    let (status, body) = infer(&gw, &token("eve", &["guest"]), "ollama/llama3.2").await;
    assert_denied(status, &body);

    // Parses but does not compile (unknown function): also kept out.
    let errors_before = metric(&gw, r#"uag_policy_reloads_total{result="error"}"#).await;
    std::fs::write(dir.path().join("uag.rego"), "package uag\n\nallow if { no_such_builtin(input.provider) }\n").unwrap();
    let counted =
        eventually(Duration::from_secs(5), || async { metric(&gw, r#"uag_policy_reloads_total{result="error"}"#).await > errors_before })
            .await;
    assert!(counted, "the failed reload was not counted");
    assert_eq!(infer(&gw, &user, "openai/gpt-4o-mini").await.0, 200);

    // Fixed: a deny-all policy becomes active.
    std::fs::write(dir.path().join("uag.rego"), "package uag\n\ndefault allow := false\n").unwrap();
    let denied = eventually(Duration::from_secs(5), || async { infer(&gw, &user, "ollama/llama3.2").await.0 == 403 }).await;
    assert!(denied, "the fixed policy was not reloaded");
}

async fn assert_denied_now(gw: &Gateway, bearer: &str) {
    let (status, body) = infer(gw, bearer, "openai/gpt-4o-mini").await;
    assert_denied(status, &body);
}

#[tokio::test]
async fn sighup_reloads_the_policy() {
    // No polling: only the signal reloads.
    let (_mock, gw, dir) = start(0).await;
    let user = token("alice", &["user"]);
    assert_denied_now(&gw, &user).await;
    std::fs::write(dir.path().join("data.json"), DATA_OPENAI).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_denied_now(&gw, &user).await;
    // The gateway's watcher has installed the SIGHUP handler, so this does not end the process.
    let status = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
    let allowed = eventually(Duration::from_secs(5), || async { infer(&gw, &user, "openai/gpt-4o-mini").await.0 == 200 }).await;
    assert!(allowed, "SIGHUP did not reload the policy");
}

#[test]
fn a_broken_policy_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let extra = setup(dir.path(), 0);
    std::fs::write(dir.path().join("uag.rego"), "package uag\n\nallow if { input.provider == }\n").unwrap();
    let err = Config::from_toml_str(&extra, &ConfigOrigin::File("uag.toml".into()), &[]).unwrap_err().to_string();
    assert!(err.contains("uag.rego") && err.contains("does not compile"), "{err}");
    assert!(err.contains("policy.files"), "{err}");

    std::fs::write(dir.path().join("uag.rego"), POLICY).unwrap();
    std::fs::write(dir.path().join("data.json"), "[1, 2]").unwrap();
    let err = Config::from_toml_str(&extra, &ConfigOrigin::File("uag.toml".into()), &[]).unwrap_err().to_string();
    assert!(err.contains("policy.data"), "{err}");
}

/// The shipped example (deploy/policy) compiles and decides as its comments say.
#[test]
fn the_example_policy_decides_as_documented() {
    use uag_gateway::policy::{InputIdentity, PolicyConfig, PolicyEngine, PolicyInput};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/policy");
    let config: PolicyConfig = example_config(&root);
    config.validate().unwrap();
    let engine = PolicyEngine::load(&config, uag_gateway::metrics::Metrics::new()).unwrap();
    let identity = |roles: &[&str]| uag_gateway::provider::Identity {
        subject: "someone".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tenant: None,
        method: uag_gateway::provider::AuthMethod::Jwt,
    };
    let input =
        |who: Option<&uag_gateway::provider::Identity>, kind: &'static str, method: &str, provider: Option<(&str, &'static str)>| {
            PolicyInput {
                identity: InputIdentity::from_identity(who),
                route: "/v1/inference".into(),
                method: method.into(),
                kind,
                provider: provider.map(|p| p.0.to_owned()),
                provider_type: provider.map(|p| p.1),
                model: provider.map(|_| "m".to_owned()),
                collections: Vec::new(),
            }
        };
    let (staff, kiosk, editor, admin) = (identity(&["staff"]), identity(&["kiosk"]), identity(&["editor"]), identity(&["admin"]));
    let cases = [
        (Some(&staff), "inference", "POST", Some(("openai", "openai")), true),
        (Some(&staff), "inference", "POST", Some(("ollama", "ollama")), true),
        (Some(&kiosk), "inference", "POST", Some(("openai", "openai")), false),
        (Some(&kiosk), "inference", "POST", Some(("local", "local")), true),
        (None, "inference", "POST", Some(("local", "local")), true),
        (None, "inference", "POST", Some(("openai", "openai")), false),
        // A kiosk key only asks: it does not list the documents either.
        (Some(&kiosk), "documents", "GET", None, false),
        (Some(&staff), "documents", "GET", None, true),
        (Some(&kiosk), "documents", "POST", None, false),
        (Some(&editor), "documents", "POST", None, true),
        (None, "documents", "GET", None, false),
        (None, "audio", "POST", None, false),
        (Some(&kiosk), "audio", "POST", None, true),
        (Some(&admin), "inference", "POST", Some(("anthropic", "anthropic")), true),
    ];
    for (who, kind, method, provider, expected) in cases {
        let decision = engine.authorize(&input(who, kind, method, provider)).unwrap();
        assert_eq!(decision.allow, expected, "{:?} {kind} {method} {provider:?}", who.map(|w| &w.roles));
    }
    let collections = |who: Option<&uag_gateway::provider::Identity>| {
        engine.authorize(&input(who, "inference", "POST", Some(("local", "local")))).unwrap().collections
    };
    assert_eq!(collections(Some(&kiosk)), Some(vec!["default".to_owned(), "handbook".to_owned()]));
    assert_eq!(collections(None), Some(vec!["default".to_owned()]));
    assert_eq!(collections(Some(&admin)), None, "`*`: every collection");
}

fn example_config(root: &Path) -> uag_gateway::policy::PolicyConfig {
    // Defaults (query, watch interval) as in a `[policy]` section that leaves them out.
    serde_json::from_value(json!({
        "files": [root.join("uag.rego")],
        "data": root.join("policy-data.json"),
        "collections_query": "data.uag.allowed_collections",
    }))
    .unwrap()
}

/// The voice socket is decided as `audio` at the upgrade: a caller the policy denies audio is
/// refused (403 `policy_denied`) before anything is transcribed. A caller allowed audio but no
/// provider gets each turn decided as inference: an `error` event with `policy_denied` after
/// the transcript, and the session lives on.
#[tokio::test]
async fn voice_turns_are_authorized() {
    let models = common::models_toml(&["whisper-tiny.en", "piper-en_US-joe-medium", "onnxruntime"]);
    let (_mock, gw, _dir) = start_with(0, &models).await;
    // The question as speech, from Piper over the HTTP API (audio is allowed to the admin).
    let r = client()
        .post(gw.url("/v1/audio/speech"))
        .bearer_auth(token("root", &["admin"]))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": "When is the maintenance window?", "response_format": "pcm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pcm = r.bytes().await.unwrap().to_vec();

    // Denied audio: no socket, so no transcript.
    let url = format!("ws://{}/v1/voice?access_token={}", gw.addr, token("mallory", &["guest"]));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "policy_denied", "{body}");
        }
        other => panic!("a caller denied audio reached the voice socket: {:?}", other.map(|(_, r)| r.status())),
    }

    let url = format!("ws://{}/v1/voice?access_token={}", gw.addr, token("eve", &["listener"]));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let start = json!({"type": "start", "sample_rate": 22050, "encoding": "pcm_s16le", "speak": false});
    ws.send(Message::Text(start.to_string().into())).await.unwrap();
    let silence = vec![0u8; 22_050 * 2 * 3 / 2];
    for chunk in [&silence[..22_050 / 5], &pcm[..], &silence[..]] {
        for frame in chunk.chunks(22_050 / 50 * 2) {
            ws.send(Message::Binary(frame.to_vec().into())).await.unwrap();
        }
    }
    let mut seen = Vec::new();
    let code = loop {
        let message = tokio::time::timeout(Duration::from_secs(60), ws.next()).await.expect("an event in time").unwrap().unwrap();
        let Message::Text(text) = message else { continue };
        let event: Value = serde_json::from_str(&text).unwrap();
        seen.push(event["type"].as_str().unwrap_or_default().to_owned());
        if event["type"] == "error" {
            break event["code"].as_str().unwrap().to_owned();
        }
        assert_ne!(event["type"], "delta", "a denied caller got an answer: {event}");
    };
    assert_eq!(code, "policy_denied", "{seen:?}");
    assert!(seen.contains(&"transcript".to_owned()), "denied after transcription: {seen:?}");
}
