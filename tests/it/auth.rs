//! `[auth]`: JWT (HS256, RS256, ES256, EdDSA) and API keys, the negative JWT suite, WebSocket
//! authentication at the upgrade, anonymous routes, identity forwarded upstream, and tokens
//! kept out of the log. Keys are generated per run with the `openssl` CLI.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Gateway, MockUpstream, client, error_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest;

const ISSUER: &str = "https://idp.example.lan";
const AUDIENCE: &str = "uag";
const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const API_KEY: &str = "uag-kiosk-key-5f1d2c3b4a";

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private key (PKCS#8 PEM) and its public key file.
struct KeyPair {
    private_pem: Vec<u8>,
    public_path: PathBuf,
    public_pem: Vec<u8>,
}

fn key_pair(dir: &Path, name: &str, genpkey: &[&str]) -> KeyPair {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", private.to_str().unwrap()]);
    openssl(&args);
    openssl(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    KeyPair { private_pem: std::fs::read(&private).unwrap(), public_pem: std::fs::read(&public).unwrap(), public_path: public }
}

struct Keys {
    dir: tempfile::TempDir,
    rsa: KeyPair,
    ec: KeyPair,
    ed: KeyPair,
    /// An RSA key only published in the JWKS file, under kid `jwks-1`.
    jwks_rsa: KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Jwk::from_encoding_key below takes the key apart through the provider.
        uag_gateway::jwt_ring::install();
        let dir = tempfile::tempdir().unwrap();
        let rsa = key_pair(dir.path(), "rsa", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let ec = key_pair(dir.path(), "ec", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let ed = key_pair(dir.path(), "ed", &["-algorithm", "ED25519"]);
        let jwks_rsa = key_pair(dir.path(), "jwks-rsa", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let enc = EncodingKey::from_rsa_pem(&jwks_rsa.private_pem).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("jwks-1".into());
        let set = json!({"keys": [serde_json::to_value(&jwk).unwrap()]});
        std::fs::write(dir.path().join("jwks.json"), set.to_string()).unwrap();
        std::fs::write(dir.path().join("hs-secret"), HS_SECRET).unwrap();
        Keys { dir, rsa, ec, ed, jwks_rsa }
    })
}

fn auth_toml(required: bool) -> String {
    let k = keys();
    let d = k.dir.path().display();
    let digest = hex(&sha2::Sha256::digest(API_KEY.as_bytes()));
    format!(
        r#"
[auth]
required = {required}

[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
hs256_secret = "file::{d}/hs-secret"
public_keys = ["file::{}", "file::{}", "file::{}"]
jwks_file = "{d}/jwks.json"
leeway_s = 5

[[auth.api_keys]]
name = "kiosk-1"
sha256 = "{digest}"
roles = ["kiosk"]
"#,
        k.rsa.public_path.display(),
        k.ec.public_path.display(),
        k.ed.public_path.display(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now(), "roles": ["reader"], "tenant": "acme"})
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    sign_with(Header::new(alg), claims)
}

fn sign_with(header: Header, claims: &Value) -> String {
    let k = keys();
    let key = match header.alg {
        Algorithm::HS256 => EncodingKey::from_secret(HS_SECRET.as_bytes()),
        Algorithm::RS256 if header.kid.as_deref() == Some("jwks-1") => EncodingKey::from_rsa_pem(&k.jwks_rsa.private_pem).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&k.rsa.private_pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&k.ec.private_pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&k.ed.private_pem).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    common::jwt(&header, claims, &key).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn inference_body() -> Value {
    json!({"model": "ollama/llama3.2", "input": "What is the capital of France?"})
}

/// POSTs an inference with an `Authorization: Bearer` token (or none).
async fn infer(gw: &Gateway, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client().post(gw.url("/v1/inference")).json(&inference_body());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn assert_unauthorized(case: &str, status: u16, headers: &reqwest::header::HeaderMap, body: &Value, code: &str) {
    assert_eq!(status, 401, "{case}: {body}");
    assert_eq!(error_code(body), code, "{case}: {body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{case}");
    let challenge = headers.get("www-authenticate").unwrap_or_else(|| panic!("{case}: no WWW-Authenticate")).to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_pass() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &auth_toml(true)).await;
    for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let (status, _, body) = infer(&gw, Some(&sign(alg, &claims("alice")))).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("jwks-1".into());
    let (status, _, body) = infer(&gw, Some(&sign_with(header, &claims("alice")))).await;
    assert_eq!(status, 200, "JWKS key by kid: {body}");
    // Within the leeway (5 s), an expired token still passes.
    let mut c = claims("alice");
    c["exp"] = json!(now() - 2);
    assert_eq!(infer(&gw, Some(&sign(Algorithm::HS256, &c))).await.0, 200);
}

#[tokio::test]
async fn bad_tokens_are_401_with_the_json_error_shape() {
    let logs = common::captured_logs();
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &auth_toml(true)).await;
    let k = keys();

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("mallory");
        f(&mut c);
        sign(Algorithm::RS256, &c)
    };
    let good = sign(Algorithm::RS256, &claims("mallory"));
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let bad_signature = format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap());
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("mallory")));
    // The classic confusion attack: HMAC with the server's RSA public key as the secret.
    let confused = common::jwt(&Header::new(Algorithm::HS256), &claims("mallory"), &EncodingKey::from_secret(&k.rsa.public_pem)).unwrap();
    let mut unknown_kid = Header::new(Algorithm::RS256);
    unknown_kid.kid = Some("no-such-key".into());
    let oversized = format!("{head}.{}.{signature}", "A".repeat(64 * 1024));

    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 120)), "token_expired"),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 600)), "token_not_yet_valid"),
        ("wrong issuer", with(&|c| c["iss"] = json!("https://evil.example")), "invalid_issuer"),
        ("wrong audience", with(&|c| c["aud"] = json!("someone-else")), "invalid_audience"),
        ("no exp", with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))), "invalid_token"),
        ("bad signature", bad_signature, "invalid_token"),
        ("alg none", alg_none, "invalid_token"),
        ("HS256 with the RSA public key as secret", confused, "invalid_token"),
        ("unknown kid", sign_with(unknown_kid, &claims("mallory")), "unknown_key"),
        ("truncated", good[..good.len() - 20].to_owned(), "invalid_token"),
        ("header and payload only", format!("{head}.{payload}"), "invalid_token"),
        ("oversized", oversized, "invalid_token"),
        ("garbage base64", "!!!.@@@.###".to_owned(), "invalid_token"),
        ("unknown API key", "not-a-key-of-ours".to_owned(), "invalid_api_key"),
    ];
    for (case, token, code) in &cases {
        let (status, headers, body) = infer(&gw, Some(token)).await;
        assert_unauthorized(case, status, &headers, &body, code);
    }
    let (status, headers, body) = infer(&gw, None).await;
    assert_unauthorized("no credentials", status, &headers, &body, "missing_credentials");
    let r =
        client().post(gw.url("/v1/inference")).header("authorization", "Basic YWxpY2U6cHc=").json(&inference_body()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "Basic auth is not accepted");
    assert!(mock.requests().iter().all(|r| r.path != "/api/chat"), "no refused request reached the upstream");

    // A valid token's request, then no token of any case may appear in the log.
    assert_eq!(infer(&gw, Some(&good)).await.0, 200);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("authentication failed"), "refusals are logged");
    for (case, token, _) in &cases {
        let probe = &token[..token.len().min(40)];
        assert!(!text.contains(probe), "{case}: the token appears in the log");
    }
    assert!(!text.contains(signature) && !text.contains(API_KEY), "a token or key appears in the log");
}

#[tokio::test]
async fn api_keys_by_bearer_or_header() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &auth_toml(true)).await;
    assert_eq!(infer(&gw, Some(API_KEY)).await.0, 200);
    let r = client().post(gw.url("/v1/inference")).header("x-api-key", API_KEY).json(&inference_body()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client().post(gw.url("/v1/inference")).header("x-api-key", "wrong").json(&inference_body()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "invalid_api_key");
    // A JWT is not an API key.
    let r = client()
        .post(gw.url("/v1/inference"))
        .header("x-api-key", sign(Algorithm::HS256, &claims("alice")))
        .json(&inference_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn anonymous_routes_and_optional_auth() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &auth_toml(true)).await;
    for path in ["/healthz", "/metrics"] {
        assert_eq!(client().get(gw.url(path)).send().await.unwrap().status().as_u16(), 200, "{path}");
    }
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client().get(gw.url("/v1/models")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // required = false: no credentials is anonymous, bad credentials are still refused.
    let gw = Gateway::with_mock(&mock, &auth_toml(false)).await;
    assert_eq!(infer(&gw, None).await.0, 200);
    assert_eq!(infer(&gw, Some("nonsense")).await.0, 401);
}

#[tokio::test]
async fn websocket_authenticates_at_the_upgrade() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &auth_toml(true)).await;
    match tokio_tungstenite::connect_async(gw.ws_url()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected a 401 refusal, got {:?}", other.map(|(_, r)| r.status())),
    }
    let token = sign(Algorithm::ES256, &claims("browser-user"));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?access_token={token}", gw.ws_url())).await.unwrap();
    use futures::{SinkExt, StreamExt};
    let request = json!({"type": "request", "request": {"id": "r1", "model": "ollama/llama3.2", "input": "hi"}});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(request.to_string().into())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == "done" {
                break;
            }
        }
    }
    let sent = mock.requests().into_iter().find(|r| r.path == "/api/chat").expect("the request reached ollama");
    assert_eq!(sent.headers.get("x-uag-user").unwrap(), "browser-user");
}

#[tokio::test]
async fn identity_reaches_the_upstream_unless_disabled() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &auth_toml(true)).await;
    let token = sign(Algorithm::HS256, &claims("alice"));
    for model in ["openai/gpt-4o-mini", "vllm/gpt-4o-mini", "ollama/llama3.2"] {
        let r =
            client().post(gw.url("/v1/inference")).bearer_auth(&token).json(&json!({"model": model, "input": "hi"})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{model}");
    }
    let requests = mock.requests();
    let chat: Vec<_> = requests.iter().filter(|r| r.path.ends_with("/chat/completions") || r.path == "/api/chat").collect();
    assert_eq!(chat.len(), 3);
    // openai: the body's `user`, no header; openai_compatible: both; ollama: the header.
    assert_eq!(chat[0].body["user"], "alice");
    assert!(chat[0].headers.get("x-uag-user").is_none());
    assert_eq!(chat[1].body["user"], "alice");
    assert_eq!(chat[1].headers.get("x-uag-user").unwrap(), "alice");
    assert_eq!(chat[2].headers.get("x-uag-user").unwrap(), "alice");

    // forward_identity = false on every provider (set through the env override of each entry).
    let mock = MockUpstream::start().await;
    let env: Vec<(String, String)> = (0..4).map(|i| (format!("UAG__PROVIDERS__{i}__FORWARD_IDENTITY"), "false".to_owned())).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = Gateway::with_mock_env(&mock, &auth_toml(true), &env).await;
    for model in ["openai/gpt-4o-mini", "vllm/gpt-4o-mini", "ollama/llama3.2"] {
        let r =
            client().post(gw.url("/v1/inference")).bearer_auth(&token).json(&json!({"model": model, "input": "hi"})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{model}");
    }
    for r in mock.requests() {
        assert!(r.body.get("user").is_none() && r.headers.get("x-uag-user").is_none(), "{} forwarded the identity", r.path);
    }
}

#[test]
fn bad_auth_config_stops_loading_with_the_key_path() {
    use uag_gateway::config::{Config, ConfigOrigin};
    let k = keys();
    let d = k.dir.path().display();
    let load = |toml: &str| Config::from_toml_str(toml, &ConfigOrigin::File("uag.toml".into()), &[]).unwrap_err().to_string();
    std::fs::write(k.dir.path().join("short-secret"), "too-short").unwrap();
    std::fs::write(k.dir.path().join("not-a-key.pem"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    let err = load(&format!("[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\nhs256_secret = \"file::{d}/short-secret\"\n"));
    assert!(err.contains("auth.jwt.hs256_secret") && err.contains("at least 32"), "{err}");
    assert!(!err.contains("too-short"), "the secret is not printed: {err}");
    let err = load(&format!("[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\npublic_keys = [\"file::{d}/not-a-key.pem\"]\n"));
    assert!(err.contains("auth.jwt.public_keys[0]"), "{err}");
    let err = load(&format!("[auth.jwt]\naudience = \"a\"\nhs256_secret = \"file::{d}/hs-secret\"\n"));
    assert!(err.contains("auth.jwt.issuer"), "{err}");
    let err = load("[auth]\nrequired = true\n");
    assert!(err.contains("`auth`"), "{err}");
    let err = load("[[auth.api_keys]]\nname = \"k\"\nsha256 = \"abc\"\n");
    assert!(err.contains("auth.api_keys[0].sha256"), "{err}");
    // A valid config prints its secret as the reference.
    let config = Config::from_toml_str(&auth_toml(true), &ConfigOrigin::File("uag.toml".into()), &[]).unwrap();
    let shown = config.to_redacted_toml();
    assert!(shown.contains("hs256_secret = \"file::") && !shown.contains(HS_SECRET), "{shown}");
}
