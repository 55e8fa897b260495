//! The `uag` binary's JSON logs (`log.format = "json"`, what Promtail ships to Loki): every
//! line on stdout is one JSON object, and a request's response line carries its request id,
//! the authenticated subject, provider, model, HTTP status and latency.

// The child's stdout is read on a plain thread; no tokio worker blocks on it.
#![allow(clippy::disallowed_methods)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{MockUpstream, client};
use serde_json::{Value, json};
use sha2::Digest;

const API_KEY: &str = "uag-logs-test-key-4c1e9a";

struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Waits until a log line satisfies `pred`; every line so far must be a JSON object.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            {
                let lines = self.lines.lock().unwrap();
                for line in lines.iter() {
                    let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
                    assert!(entry.is_object(), "a log line is not a JSON object: {line}");
                    if pred(&entry) {
                        return entry;
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(20), "no log line {what} in:\n{}", lines.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn request_log_lines_are_json_with_id_subject_provider_model_status_latency() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("uag.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
[log]
format = "json"
level = "info"
[graphrag]
sample_kb = ""
[[providers]]
name = "upstream"
type = "openai_compatible"
base_url = "{url}/v1"
models = ["gpt-4o-mini"]
timeout_ms = 5000
[routes]
default = ["upstream/gpt-4o-mini"]
[auth]
required = true
[[auth.api_keys]]
name = "kiosk-7"
sha256 = "{sha}"
"#,
            data = dir.path().join("data").display(),
            url = mock.url(),
            sha = hex(&sha2::Sha256::digest(API_KEY.as_bytes())),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uag"));
    cmd.env_remove("UAG_CONFIG").env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("UAG__") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.arg("serve").arg("--config").arg(&config).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let server = Server { child, lines };

    let listening =
        server.wait_for("saying where it listens", |e| e["message"].as_str().is_some_and(|m| m.contains("listening on http://"))).await;
    let addr = listening["message"].as_str().unwrap().split("listening on http://").nth(1).unwrap().trim().to_owned();

    let response = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "upstream/gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "The capital of France is Paris.");

    let line = server
        .wait_for("for the request's response", |e| {
            e["span"]["request_id"] == request_id.as_str()
                && e["message"].as_str().is_some_and(|m| m.contains("finished processing request"))
        })
        .await;
    let span = &line["span"];
    assert_eq!(span["subject"], "kiosk-7", "identity subject: {line}");
    assert_eq!(span["provider"], "upstream", "provider: {line}");
    // The model the upstream reports answering with (the fixture's dated name).
    assert!(span["model"].as_str().is_some_and(|m| m.starts_with("gpt-4o-mini")), "model: {line}");
    assert_eq!(span["path"], "/v1/chat/completions", "{line}");
    assert_eq!(line["status"], 200, "status: {line}");
    let latency = line["latency"].as_str().unwrap_or_else(|| panic!("latency: {line}"));
    assert!(latency.ends_with(" ms") && latency.trim_end_matches(" ms").parse::<u64>().is_ok(), "latency `{latency}`: {line}");
    assert!(line["level"] == "INFO" && line["timestamp"].is_string(), "{line}");

    // A refused request is logged the same way (no subject: it was never authenticated).
    let refused =
        client().post(format!("http://{addr}/v1/chat/completions")).json(&json!({"model": "x", "input": "hi"})).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = refused.headers()["x-request-id"].to_str().unwrap().to_owned();
    let line = server
        .wait_for("for the refused request", |e| {
            e["span"]["request_id"] == refused_id.as_str()
                && e["message"].as_str().is_some_and(|m| m.contains("finished processing request"))
        })
        .await;
    assert_eq!(line["status"], 401, "{line}");
    assert!(line["span"].get("subject").is_none(), "{line}");
    // The key never reaches the log.
    assert!(!server.lines.lock().unwrap().iter().any(|l| l.contains(API_KEY)));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
