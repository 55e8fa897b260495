//! Authentication: who is calling. Config `[auth]`; absent, the gateway is anonymous everywhere.
//!
//! Credentials, in the order they are looked for:
//! - `Authorization: Bearer <token>`: a JWT (HS256, RS256, ES256, EdDSA; signature, `exp`, `nbf`,
//!   `iss`, `aud` checked with `leeway_s`) or a static API key;
//! - `x-api-key: <key>`: a static API key (stored in config as its sha256, compared in constant time);
//! - `?access_token=<token>` on a WebSocket upgrade only, because browsers cannot set headers on
//!   a WebSocket. (The query string never reaches the log: the request span records the path.)
//!
//! Algorithm confusion is impossible by construction: a token's `alg` picks its family (HMAC,
//! RSA, EC, Ed) and only keys of that family are tried, so an RSA public key is never used as an
//! HMAC secret and `alg: none` is not an algorithm at all. A `kid` selects a JWKS key; an
//! unknown `kid` refetches `jwks_url` at most once per 30 s, then fails.
//!
//! A verified JWT is remembered (by the whole token) for up to 30 s and never past its `exp`, so
//! a client sending the same token with every request pays for one signature check per 30 s;
//! the price is that a key withdrawn from the JWKS keeps its tokens working for up to 30 s more.
//!
//! Tokens and keys are never logged; failures log their code only.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Credential;
use crate::error::ApiError;
use crate::http::AppState;
use crate::memo::RecentResults;
use crate::provider::{AuthMethod, Identity};
use crate::unix_now;

/// Longest credential looked at; anything longer is refused before parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// HS256 secrets shorter than this are brute-forceable (RFC 7518 §3.2: at least the hash size).
const MIN_HS256_SECRET_BYTES: usize = 32;
/// An unknown `kid` refetches the JWKS at most this often, so bad tokens cannot hammer the IdP.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// false: requests without credentials are served anonymously (bad credentials still fail).
    pub required: bool,
    /// Paths reachable without credentials even when `required`.
    pub anonymous_routes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            anonymous_routes: ["/healthz", "/readyz", "/metrics"].map(str::to_owned).to_vec(),
            jwt: None,
            api_keys: Vec::new(),
        }
    }
}

/// `[auth.jwt]`: the identity provider's tokens. Key sources may be combined.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `env::`/`file::` reference to a shared secret of at least 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<Credential>,
    /// `env::`/`file::` references to PEM public keys (RSA, EC P-256, Ed25519).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<Credential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How long a fetched JWKS is trusted before it is fetched again.
    #[serde(default = "default_jwks_ttl_s")]
    pub jwks_ttl_s: u64,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Claim holding the caller's roles (an array of strings, or one string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
}

fn default_jwks_ttl_s() -> u64 {
    300
}
fn default_leeway_s() -> u64 {
    30
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_tenant_claim() -> String {
    "tenant".into()
}

/// `[[auth.api_keys]]`: a static key for a machine client, given as its sha256 or as a file
/// holding the key (which an appliance can have uag generate on first start).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Becomes the identity's subject.
    pub name: String,
    /// Lower-case hex sha256 of the key (`printf %s KEY | sha256sum`); or give `key_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// A file holding the key itself (one line; its sha256 is taken at start-up). With
    /// `generate`, uag writes a new random key there (mode 0600) when the file does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl AuthConfig {
    /// Load-time checks; the error is (key path, message) as in [`crate::config::Config::validate`].
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.required && self.jwt.is_none() && self.api_keys.is_empty() {
            return Err(("auth".into(), "`required = true` needs `[auth.jwt]` or `[[auth.api_keys]]`".into()));
        }
        for (i, route) in self.anonymous_routes.iter().enumerate() {
            if !route.starts_with('/') {
                return Err((format!("auth.anonymous_routes[{i}]"), format!("`{route}` must be a path starting with `/`")));
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate(self.required)?;
        }
        let mut names = HashSet::new();
        for (i, key) in self.api_keys.iter().enumerate() {
            let at = |field: &str| format!("auth.api_keys[{i}].{field}");
            if key.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if !names.insert(key.name.as_str()) {
                return Err((at("name"), format!("duplicate API key name `{}`", key.name)));
            }
            match (&key.key_file, key.sha256.is_empty()) {
                (None, false) => {
                    parse_sha256_hex(&key.sha256).ok_or_else(|| (at("sha256"), "must be 64 hex digits (the sha256 of the key)".into()))?;
                }
                (Some(path), true) if path.is_absolute() => {}
                (Some(_), true) => return Err((at("key_file"), "must be an absolute path".into())),
                (Some(_), false) => return Err((at("sha256"), "give `sha256` or `key_file`, not both".into())),
                (None, true) => return Err((at("sha256"), "required: the sha256 of the key, or `key_file` with the key itself".into())),
            }
            if key.generate && key.key_file.is_none() {
                return Err((at("generate"), "needs `key_file`: where to write the generated key".into()));
            }
        }
        Ok(())
    }
}

impl JwtConfig {
    fn validate(&self, required: bool) -> Result<(), (String, String)> {
        for (field, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            match value {
                Some(v) if v.trim().is_empty() => return Err((format!("auth.jwt.{field}"), "must not be empty".into())),
                None if required => {
                    return Err((
                        format!("auth.jwt.{field}"),
                        format!("required when `auth.required = true` (the IdP's `{}`)", &field[..3]),
                    ));
                }
                _ => {}
            }
        }
        if self.hs256_secret.is_none() && self.public_keys.is_empty() && self.jwks_file.is_none() && self.jwks_url.is_none() {
            return Err(("auth.jwt".into(), "needs a key: `hs256_secret`, `public_keys`, `jwks_file` or `jwks_url`".into()));
        }
        self.static_keys()?;
        if let Some(path) = &self.jwks_file {
            load_jwks_file(path).map_err(|m| ("auth.jwt.jwks_file".to_owned(), m))?;
        }
        if let Some(url) = &self.jwks_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return Err(("auth.jwt.jwks_url".into(), format!("`{url}` must be an http:// or https:// URL with a host"))),
            }
        }
        if self.jwks_ttl_s == 0 {
            return Err(("auth.jwt.jwks_ttl_s".into(), "must be greater than 0".into()));
        }
        if self.leeway_s > 600 {
            return Err(("auth.jwt.leeway_s".into(), "must be at most 600 seconds".into()));
        }
        Ok(())
    }

    /// The HS256 secret and the PEM keys, read and parsed; errors name the key path.
    fn static_keys(&self) -> Result<Vec<DecodingKey>, (String, String)> {
        let mut keys = Vec::new();
        if let Some(cred) = &self.hs256_secret {
            let key = "auth.jwt.hs256_secret".to_owned();
            let secret = cred.resolve().map_err(|m| (key.clone(), m))?;
            let len = secret.expose().len();
            if len < MIN_HS256_SECRET_BYTES {
                return Err((key, format!("the secret is {len} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES}")));
            }
            keys.push(DecodingKey::from_secret(secret.expose().as_bytes()));
        }
        for (i, cred) in self.public_keys.iter().enumerate() {
            let key = format!("auth.jwt.public_keys[{i}]");
            let pem = cred.resolve().map_err(|m| (key.clone(), m))?;
            keys.push(parse_public_pem(pem.expose().as_bytes()).ok_or_else(|| {
                (key, "not a PEM public key of a supported type (RSA, EC P-256, Ed25519; `-----BEGIN PUBLIC KEY-----`)".to_owned())
            })?);
        }
        Ok(keys)
    }
}

/// The key type decides the algorithm family, so try each parser in turn.
fn parse_public_pem(pem: &[u8]) -> Option<DecodingKey> {
    DecodingKey::from_rsa_pem(pem).or_else(|_| DecodingKey::from_ec_pem(pem)).or_else(|_| DecodingKey::from_ed_pem(pem)).ok()
}

/// The sha256 of the key in `path`; with `generate`, a missing file is created first with a new
/// random key (32 bytes from the OS-seeded CSPRNG, base64url), readable by the service alone.
fn key_file_digest(key: &ApiKeyConfig, path: &std::path::Path) -> Result<[u8; 32], String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && key.generate => {
            let generated = generate_key_file(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            tracing::warn!(
                key = %key.name,
                roles = ?key.roles,
                file = %path.display(),
                "generated a new API key; clients send it as `Authorization: Bearer <key>` (read it with `sudo cat {}`)",
                path.display()
            );
            generated
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist (write the key there, or set `generate = true`)", path.display()));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let key_text = text.trim();
    if key_text.len() < 16 {
        return Err(format!("the key in {} is shorter than 16 characters", path.display()));
    }
    Ok(Sha256::digest(key_text.as_bytes()).into())
}

/// Writes a new key to `path` (mode 0600, its folder 0700), atomically: a crash leaves no
/// half-written key behind, and an existing file is never overwritten.
fn generate_key_file(path: &std::path::Path) -> std::io::Result<String> {
    use base64::Engine as _;
    use rand::RngCore as _;
    use std::io::Write as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("uag_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the key file has no folder"))?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("key"), std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    // `hard_link` + remove, not `rename`: it fails when the key file appeared meanwhile.
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path),
        Err(e) => Err(e),
    }
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn keys_by_kid(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, key))
        })
        .collect()
}

fn load_jwks_file(path: &std::path::Path) -> Result<HashMap<String, DecodingKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("{} is not a JWK set: {e}", path.display()))?;
    Ok(keys_by_kid(&set))
}

/// Why a request was not authenticated. Each maps to a 401 in [`crate::error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs credentials: `Authorization: Bearer <token>` or `x-api-key`")]
    MissingCredentials,
    /// The detail goes to the log, never to the client.
    #[error("the token is not valid")]
    InvalidToken(&'static str),
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token is not valid yet")]
    TokenNotYetValid,
    #[error("the token was issued by an issuer this gateway does not trust")]
    InvalidIssuer,
    #[error("the token is not meant for this gateway (audience)")]
    InvalidAudience,
    #[error("the token's key id (`kid`) is unknown")]
    UnknownKey,
    #[error("the API key is not valid")]
    InvalidApiKey,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::InvalidIssuer => "invalid_issuer",
            AuthError::InvalidAudience => "invalid_audience",
            AuthError::UnknownKey => "unknown_key",
            AuthError::InvalidApiKey => "invalid_api_key",
        }
    }
}

/// A static API key, ready to compare.
struct ApiKey {
    digest: [u8; 32],
    identity: Identity,
}

/// Verifies credentials; built once per [`AppState`].
pub struct Authenticator {
    required: bool,
    anonymous_routes: HashSet<String>,
    jwt: Option<JwtVerifier>,
    api_keys: Vec<ApiKey>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material stays out of Debug output.
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

struct JwtVerifier {
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
    roles_claim: String,
    tenant_claim: String,
    /// The HS256 secret and PEM keys: tried for tokens without a `kid` (or when no JWKS exists).
    static_keys: Vec<DecodingKey>,
    jwks: Option<Jwks>,
    /// Recently verified tokens, by the whole token.
    verified: RecentResults<VerifiedToken>,
}

/// How long a verified token is taken on trust (never past its `exp`).
const VERIFIED_FOR: Duration = Duration::from_secs(30);
/// Tokens remembered at most.
const MAX_VERIFIED: usize = 4096;

#[derive(Clone)]
struct VerifiedToken {
    identity: Identity,
    /// `exp` plus the leeway, in seconds since the epoch: checked on every use, because the
    /// wall clock (not the memo's monotonic deadline) is what `exp` is measured against.
    valid_until_unix: u64,
}
struct Jwks {
    file_keys: HashMap<String, DecodingKey>,
    url: Option<String>,
    ttl: Duration,
    client: reqwest::Client,
    remote: tokio::sync::Mutex<RemoteJwks>,
}

#[derive(Default)]
struct RemoteJwks {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// A failure to build the authenticator (a key file changed since the config was checked).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AuthSetupError {
    pub key: String,
    pub message: String,
}

impl Authenticator {
    /// Reads the keys `config` names; `client` fetches `jwks_url`.
    pub fn from_config(config: &AuthConfig, client: reqwest::Client) -> Result<Self, AuthSetupError> {
        crate::jwt_ring::install();
        let jwt = match &config.jwt {
            None => None,
            Some(j) => {
                let static_keys = j.static_keys().map_err(|(key, message)| AuthSetupError { key, message })?;
                let jwks = if j.jwks_file.is_some() || j.jwks_url.is_some() {
                    let file_keys = match &j.jwks_file {
                        Some(path) => {
                            load_jwks_file(path).map_err(|message| AuthSetupError { key: "auth.jwt.jwks_file".into(), message })?
                        }
                        None => HashMap::new(),
                    };
                    Some(Jwks {
                        file_keys,
                        url: j.jwks_url.clone(),
                        ttl: Duration::from_secs(j.jwks_ttl_s),
                        client,
                        remote: tokio::sync::Mutex::new(RemoteJwks::default()),
                    })
                } else {
                    None
                };
                Some(JwtVerifier {
                    issuer: j.issuer.clone(),
                    audience: j.audience.clone(),
                    leeway_s: j.leeway_s,
                    roles_claim: j.roles_claim.clone(),
                    tenant_claim: j.tenant_claim.clone(),
                    static_keys,
                    jwks,
                    verified: RecentResults::new(MAX_VERIFIED),
                })
            }
        };
        let mut api_keys = Vec::with_capacity(config.api_keys.len());
        for (i, k) in config.api_keys.iter().enumerate() {
            let digest = match &k.key_file {
                Some(path) => {
                    key_file_digest(k, path).map_err(|message| AuthSetupError { key: format!("auth.api_keys[{i}].key_file"), message })?
                }
                None => parse_sha256_hex(&k.sha256)
                    .ok_or_else(|| AuthSetupError { key: format!("auth.api_keys[{i}].sha256"), message: "must be 64 hex digits".into() })?,
            };
            let identity =
                Identity { subject: k.name.clone(), roles: k.roles.clone(), tenant: k.tenant.clone(), method: AuthMethod::ApiKey };
            api_keys.push(ApiKey { digest, identity });
        }
        Ok(Self { required: config.required, anonymous_routes: config.anonymous_routes.iter().cloned().collect(), jwt, api_keys })
    }

    /// Whether requests outside the anonymous routes must carry credentials.
    pub fn requires_credentials(&self) -> bool {
        self.required
    }

    /// The caller of a request: `Ok(None)` is an allowed anonymous request.
    pub async fn authenticate(&self, uri: &Uri, headers: &HeaderMap) -> Result<Option<Identity>, AuthError> {
        if self.anonymous_routes.contains(uri.path()) {
            return Ok(None);
        }
        let Some(credential) = find_credential(uri, headers)? else {
            return if self.required { Err(AuthError::MissingCredentials) } else { Ok(None) };
        };
        if credential.value.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken("credential too large"));
        }
        if let Some(identity) = self.match_api_key(credential.value) {
            return Ok(Some(identity));
        }
        match (&self.jwt, credential.may_be_jwt) {
            // Anything dotted is meant as a JWT (our API keys have no dots), so its error says why.
            (Some(jwt), true) if credential.value.contains('.') => jwt.verify(credential.value).await.map(Some),
            _ if !self.api_keys.is_empty() => Err(AuthError::InvalidApiKey),
            _ => Err(AuthError::InvalidToken("not a JWT")),
        }
    }

    /// Compares against every key without stopping early, so timing reveals nothing.
    fn match_api_key(&self, presented: &str) -> Option<Identity> {
        if self.api_keys.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.api_keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(&key.identity);
            }
        }
        found.cloned()
    }
}

struct PresentedCredential<'a> {
    value: &'a str,
    /// `x-api-key` only ever holds API keys.
    may_be_jwt: bool,
}

fn find_credential<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<PresentedCredential<'a>>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::InvalidToken("authorization header is not ASCII"))?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::InvalidToken("authorization header without scheme"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::InvalidToken("authorization scheme is not Bearer"));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingCredentials);
        }
        return Ok(Some(PresentedCredential { value: token, may_be_jwt: true }));
    }
    if let Some(value) = headers.get("x-api-key") {
        let value = value.to_str().map_err(|_| AuthError::InvalidApiKey)?.trim();
        return Ok(Some(PresentedCredential { value, may_be_jwt: false }));
    }
    let is_websocket = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_websocket && let Some(query) = uri.query() {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("access_token=") {
                // JWTs and our keys are URL-safe; anything percent-encoded is not a credential of ours.
                return Ok(Some(PresentedCredential { value: token, may_be_jwt: true }));
            }
        }
    }
    Ok(None)
}

impl JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if let Some(known) = self.verified.get(token).filter(|v| unix_now() <= v.valid_until_unix) {
            return Ok(known.identity);
        }
        let (identity, exp) = self.verify_signed(token).await?;
        let remembered = VerifiedToken { identity: identity.clone(), valid_until_unix: exp.saturating_add(self.leeway_s) };
        self.verified.insert(token.to_owned(), remembered, VERIFIED_FOR);
        Ok(identity)
    }

    /// The full check: signature, then the claims; the identity and the token's `exp`.
    async fn verify_signed(&self, token: &str) -> Result<(Identity, u64), AuthError> {
        // `alg: none` and unknown algorithms fail here: they are not `Algorithm` variants.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken("malformed header"))?;
        let family = header.alg.family();
        let candidates: Vec<DecodingKey> = match (&header.kid, &self.jwks) {
            (Some(kid), Some(jwks)) => match jwks.find(kid).await {
                Some(key) if key.family() == family => vec![key],
                Some(_) => return Err(AuthError::InvalidToken("algorithm does not match the key")),
                None => return Err(AuthError::UnknownKey),
            },
            _ => self.static_keys.iter().filter(|k| k.family() == family).cloned().collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::InvalidToken("no key for this algorithm"));
        }
        let validation = self.validation(header.alg);
        let mut last = AuthError::InvalidToken("bad signature");
        for key in &candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation) {
                Ok(data) => {
                    // `exp` is required and checked by the validation above.
                    let exp = data
                        .claims
                        .get("exp")
                        .and_then(serde_json::Value::as_f64)
                        .ok_or(AuthError::InvalidToken("missing required claim"))?;
                    return Ok((self.identity(&data.claims)?, exp as u64));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => AuthError::InvalidToken("bad signature"),
                        K::ExpiredSignature => return Err(AuthError::TokenExpired),
                        K::ImmatureSignature => return Err(AuthError::TokenNotYetValid),
                        K::InvalidIssuer => return Err(AuthError::InvalidIssuer),
                        K::InvalidAudience => return Err(AuthError::InvalidAudience),
                        K::MissingRequiredClaim(_) => return Err(AuthError::InvalidToken("missing required claim")),
                        _ => return Err(AuthError::InvalidToken("malformed token")),
                    };
                }
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_s;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn identity(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Result<Identity, AuthError> {
        let subject =
            claims.get("sub").and_then(|s| s.as_str()).filter(|s| !s.is_empty()).ok_or(AuthError::InvalidToken("no subject"))?.to_owned();
        let roles = match claims.get(&self.roles_claim) {
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let tenant = claims.get(&self.tenant_claim).and_then(|t| t.as_str()).map(str::to_owned);
        Ok(Identity { subject, roles, tenant, method: AuthMethod::Jwt })
    }
}

impl Jwks {
    async fn find(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.file_keys.get(kid) {
            return Some(key.clone());
        }
        let url = self.url.as_deref()?;
        let mut remote = self.remote.lock().await;
        let fresh = remote.fetched_at.is_some_and(|t| t.elapsed() < self.ttl);
        if fresh && let Some(key) = remote.keys.get(kid) {
            return Some(key.clone());
        }
        // Stale: fetch. Fresh but the kid is unknown (the IdP rotated keys): at most once per interval.
        let may_fetch = !fresh || remote.last_attempt.is_none_or(|t| t.elapsed() >= JWKS_REFETCH_INTERVAL);
        if may_fetch {
            remote.last_attempt = Some(Instant::now());
            match self.fetch(url).await {
                Ok(keys) => {
                    remote.keys = keys;
                    remote.fetched_at = Some(Instant::now());
                }
                Err(message) => tracing::warn!(%url, %message, "cannot fetch the JWKS; keeping the cached keys"),
            }
        }
        remote.keys.get(kid).cloned()
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, DecodingKey>, String> {
        let response = self.client.get(url).timeout(Duration::from_secs(5)).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > JWKS_MAX_BYTES {
            return Err(format!("larger than {JWKS_MAX_BYTES} bytes"));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok(keys_by_kid(&set))
    }
}

/// The middleware: authenticates, records the subject in the request span and puts the
/// [`Identity`] in the request's extensions for handlers (and the rate limiter).
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // A client certificate that TLS verified identifies the caller when nothing else is
    // presented (a bearer token or API key, when sent, still decides).
    let presented = !matches!(find_credential(request.uri(), request.headers()), Ok(None));
    if !presented && let Some(cert) = request.extensions().get::<crate::tls::ClientCertificate>().cloned() {
        tracing::Span::current().record("subject", cert.common_name.as_str());
        let identity = Identity { subject: cert.common_name, roles: Vec::new(), tenant: None, method: AuthMethod::ClientCertificate };
        request.extensions_mut().insert(identity);
        return next.run(request).await;
    }
    let Some(auth) = state.auth.as_ref().map(Arc::clone) else {
        return next.run(request).await;
    };
    match auth.authenticate(request.uri(), request.headers()).await {
        Ok(Some(identity)) => {
            tracing::Span::current().record("subject", identity.subject.as_str());
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Ok(None) => next.run(request).await,
        Err(err) => {
            if let AuthError::InvalidToken(detail) = &err {
                tracing::info!(code = err.code(), %detail, "authentication failed");
            } else {
                tracing::info!(code = err.code(), "authentication failed");
            }
            ApiError::from(&err).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_parses_only_64_hex_digits() {
        assert!(parse_sha256_hex(&"ab".repeat(32)).is_some());
        assert!(parse_sha256_hex(&"ab".repeat(31)).is_none());
        assert!(parse_sha256_hex(&"zz".repeat(32)).is_none());
        assert!(parse_sha256_hex(&"é".repeat(32)).is_none());
    }

    #[test]
    fn a_key_file_is_generated_once_private_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/admin.key");
        let toml = format!("[[api_keys]]\nname = \"admin\"\nkey_file = \"{}\"\ngenerate = true\nroles = [\"admin\"]\n", path.display());
        let config: AuthConfig = toml::from_str(&toml).unwrap();
        config.validate().unwrap();
        let first = Authenticator::from_config(&config, crate::crypto::http_client_builder().build().unwrap()).unwrap();
        let key = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert!(key.starts_with("uag_") && key.len() > 40, "{key}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(first.match_api_key(&key).map(|i| i.subject), Some("admin".to_owned()));
        assert!(first.match_api_key("uag_not-the-key-at-all-0000000000").is_none());
        // A restart reads the same key: nothing is regenerated.
        let second = Authenticator::from_config(&config, crate::crypto::http_client_builder().build().unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), key);
        assert!(second.match_api_key(&key).is_some());
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file is left");

        // Without `generate`, a missing file stops start-up and says what to do.
        let toml = format!("[[api_keys]]\nname = \"ci\"\nkey_file = \"{}\"\n", dir.path().join("nope.key").display());
        let err =
            Authenticator::from_config(&toml::from_str(&toml).unwrap(), crate::crypto::http_client_builder().build().unwrap()).unwrap_err();
        assert_eq!(err.key, "auth.api_keys[0].key_file");
        assert!(err.message.contains("generate = true"), "{}", err.message);

        // A key is given one way: its hash, or its file.
        let both: AuthConfig =
            toml::from_str(&format!("[[api_keys]]\nname = \"x\"\nsha256 = \"{}\"\nkey_file = \"/k\"\n", "ab".repeat(32))).unwrap();
        assert_eq!(both.validate().unwrap_err().0, "auth.api_keys[0].sha256");
        let neither: AuthConfig = toml::from_str("[[api_keys]]\nname = \"x\"\n").unwrap();
        assert_eq!(neither.validate().unwrap_err().0, "auth.api_keys[0].sha256");
        let relative: AuthConfig = toml::from_str("[[api_keys]]\nname = \"x\"\nkey_file = \"keys/x\"\n").unwrap();
        assert_eq!(relative.validate().unwrap_err().0, "auth.api_keys[0].key_file");
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_but_never_past_its_exp() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "unit-test-hs256-secret-of-at-least-32-bytes";
        let path = dir.path().join("jwt-secret");
        std::fs::write(&path, secret).unwrap();
        let config: AuthConfig = toml::from_str(&format!("[jwt]\nhs256_secret = \"file::{}\"\n", path.display())).unwrap();
        let auth = Authenticator::from_config(&config, crate::crypto::http_client_builder().build().unwrap()).unwrap();
        let jwt = auth.jwt.as_ref().unwrap();
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        let sign = |claims: serde_json::Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let exp = unix_now() + 600;
        let token = sign(serde_json::json!({"sub": "kiosk-1", "exp": exp, "roles": ["kiosk"]}));

        let first = jwt.verify(&token).await.unwrap();
        assert_eq!((first.subject.as_str(), first.roles.as_slice()), ("kiosk-1", &["kiosk".to_owned()][..]));
        let remembered = jwt.verified.get(&token).map(|v| v.valid_until_unix);
        assert_eq!(remembered, Some(exp + jwt.leeway_s), "remembered until exp + leeway");
        assert_eq!(jwt.verify(&token).await.unwrap().subject, "kiosk-1");

        // Past its exp a remembered token is checked again, and refused.
        let expired = sign(serde_json::json!({"sub": "kiosk-1", "exp": unix_now() - 3600}));
        jwt.verified.insert(
            expired.clone(),
            VerifiedToken { identity: first.clone(), valid_until_unix: unix_now() - 3600 + jwt.leeway_s },
            VERIFIED_FOR,
        );
        assert!(matches!(jwt.verify(&expired).await, Err(AuthError::TokenExpired)));

        // Failures are not remembered, and a forged signature never matches a remembered token.
        let forged = format!("{}x", token.trim_end_matches(|c: char| c != '.'));
        assert!(jwt.verify(&forged).await.is_err());
        assert!(jwt.verified.get(&forged).is_none());
    }

    #[test]
    fn required_auth_needs_a_credential_source() {
        let err = AuthConfig::default().validate().unwrap_err();
        assert_eq!(err.0, "auth");
    }
}
