//! Secrets never reach the logs: the `uag` binary runs at `RUST_LOG=debug` with JSON logs,
//! authentication by HS256 JWT and API key, and a provider credential; it is sent valid, expired,
//! forged and unknown credentials (in headers and in `?access_token=` on WebSocket upgrades),
//! then stopped. Every line it wrote is searched for every secret and token it saw.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{MockUpstream, TEST_KEY, client};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest;

const HS_SECRET: &str = "log-test-hs256-secret-0123456789abcdefghij";
const CLIENT_KEY: &str = "uag-client-key-do-not-log-7f3a9c";
const WRONG_KEY: &str = "uag-wrong-key-do-not-log-42b8e1";

fn jwt(secret: &str, exp_offset: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"sub": "ada", "iss": "https://idp.test", "aud": "uag", "exp": now + exp_offset, "iat": now});
    common::jwt(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_is_ever_logged() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hs-secret"), HS_SECRET).unwrap();
    std::fs::write(dir.path().join("openai-key"), TEST_KEY).unwrap();
    let digest: String = sha2::Sha256::digest(CLIENT_KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
[graphrag]
sample_kb = ""
[log]
format = "json"
level = "debug"

[[providers]]
name = "openai"
type = "openai"
base_url = "{url}/v1"
api_key = "file::{d}/openai-key"
models = ["gpt-4o-mini"]

[auth]
required = true
[auth.jwt]
issuer = "https://idp.test"
audience = "uag"
hs256_secret = "file::{d}/hs-secret"
[[auth.api_keys]]
name = "kiosk-1"
sha256 = "{digest}"
"#,
        data = dir.path().join("data").display(),
        url = mock.url(),
        d = dir.path().display(),
    );
    let path = dir.path().join("uag.toml");
    std::fs::write(&path, config).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_uag"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_remove("UAG_CONFIG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < Duration::from_secs(30), "no listening line");
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "uag exited early: {}", log.lock().unwrap());
            log.lock().unwrap().push_str(&line);
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split('"').next().unwrap().trim().to_owned();
            }
        }
    };
    let readers = [
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = stdout.read_to_string(&mut rest);
                log.lock().unwrap().push_str(&rest);
            })
        },
        {
            let log = Arc::clone(&log);
            let mut stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = stderr.read_to_string(&mut rest);
                log.lock().unwrap().push_str(&rest);
            })
        },
    ];

    let good = jwt(HS_SECRET, 600);
    let expired = jwt(HS_SECRET, -3600);
    let forged = jwt("a-different-secret-of-the-same-length-000", 600);
    let ask = json!({"model": "openai/gpt-4o-mini", "input": "hi"});
    let post = |token: Option<(&'static str, String)>| {
        let mut r = client().post(format!("http://{addr}/v1/inference")).json(&ask);
        if let Some((header, value)) = token {
            r = r.header(header, value);
        }
        r.send()
    };
    assert_eq!(post(Some(("authorization", format!("Bearer {good}")))).await.unwrap().status(), 200);
    assert_eq!(post(Some(("authorization", format!("Bearer {expired}")))).await.unwrap().status(), 401);
    assert_eq!(post(Some(("authorization", format!("Bearer {forged}")))).await.unwrap().status(), 401);
    assert_eq!(post(Some(("x-api-key", CLIENT_KEY.to_owned()))).await.unwrap().status(), 200);
    assert_eq!(post(Some(("authorization", format!("Bearer {WRONG_KEY}")))).await.unwrap().status(), 401);
    assert_eq!(post(None).await.unwrap().status(), 401);
    // Browsers put the token in the URL of a WebSocket upgrade.
    for (route, token) in [("/v1/inference/stream", &good), ("/v1/voice", &good), ("/v1/voice", &forged)] {
        let _ = tokio_tungstenite::connect_async(format!("ws://{addr}{route}?access_token={token}")).await;
    }
    // The upstream saw the provider key: it was really used.
    assert!(mock.requests().iter().any(|r| r.headers["authorization"].to_str().unwrap().contains(TEST_KEY)));

    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "uag did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for reader in readers {
        reader.join().unwrap();
    }
    let log = log.lock().unwrap().clone();
    // The log is real and verbose: requests, their callers and the refusals are in it.
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(lines.len() > 20, "only {} JSON log lines", lines.len());
    assert!(log.contains("authentication failed") && log.contains("kiosk-1") && log.contains("\"ada\""), "{log}");
    for (name, secret) in [
        ("HS256 secret", HS_SECRET),
        ("provider key", TEST_KEY),
        ("client API key", CLIENT_KEY),
        ("wrong API key", WRONG_KEY),
        ("valid JWT", good.as_str()),
        ("expired JWT", expired.as_str()),
        ("forged JWT", forged.as_str()),
        // A JWT's signature alone identifies it too.
        ("valid JWT signature", good.rsplit('.').next().unwrap()),
    ] {
        assert!(!log.contains(secret), "the {name} appears in the log");
    }
}
