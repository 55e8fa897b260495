//! Cache keys: what makes two requests "the same".
//!
//! The exact key is the sha256 of a canonical JSON of the caller's scope, the provider and
//! model as requested, the conversation (plain `input` counts as one user message, so
//! `{"input": "x"}` and `{"messages": [{"role": "user", "content": "x"}]}` share an entry;
//! contents trimmed) and the sampling parameters (stop sequences sorted). Left out: the request
//! id, `stream` (a streamed request is answered from a non-streamed entry and back: the stored
//! value is wire-neutral) and `metadata`, except what changes the answer: the requested
//! collections, the language and the channel. Images count by their content's hash. Keys are hashes, so neither prompts nor caller names
//! appear in the backend's key space.
//!
//! The semantic key is a partition (the same material without the last user message, plus the
//! embedding model) and the last user message's text, whose embedding is compared by cosine
//! within the partition.

use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::CacheScope;
use crate::provider::Identity;
use crate::types::{InferenceRequest, Params, Role};

/// Bumped when the key material or the stored value changes shape, so old entries are never read
/// (2: the requested collections and language; 3: the channel).
const KEY_VERSION: u8 = 3;

#[derive(Serialize)]
struct KeyMaterial<'a> {
    version: u8,
    scope: &'a str,
    provider: Option<&'a str>,
    model: Option<&'a str>,
    messages: Vec<(Role, &'a str)>,
    /// The images of the conversation by message, each as the sha256 of its URI: the same
    /// question about another picture is another request. Left out when there are none, so the
    /// keys of requests without images are unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<(usize, String)>,
    params: Params,
    /// `metadata.collections`, sorted: a request narrowed to some collections gets another
    /// answer than one over all of them, and must never be served the other's.
    collections: Vec<String>,
    /// `metadata.language`: the voice pipeline asks for answers in the spoken language.
    language: Option<String>,
    /// `metadata.channel`: a voice turn's answer is two sentences, a text answer longer.
    channel: &'static str,
}

/// The keys of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestKeys {
    /// Hex sha256 of the whole normalised request.
    pub exact: String,
    /// `None` when the request is not eligible for the semantic cache.
    pub semantic: Option<SemanticKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SemanticKey {
    /// Canonical JSON of everything but the last user message; hashed with the embedding model
    /// into the partition once the model is known.
    pub base: String,
    /// The text to embed: the last user message, trimmed.
    pub text: String,
}

impl SemanticKey {
    /// The partition for vectors of `embedding_model`.
    pub(crate) fn partition(&self, embedding_model: &str) -> String {
        hex(&Sha256::new().chain_update(embedding_model.as_bytes()).chain_update([0]).chain_update(self.base.as_bytes()).finalize())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn trimmed(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty() && *s != "default")
}

/// The keys of `req` for a caller in `scope`. `single_turn_only`: only requests with one user
/// message and no assistant turn get a semantic key (follow-ups depend on the conversation).
pub(crate) fn request_keys(req: &InferenceRequest, scope: &str, single_turn_only: bool) -> RequestKeys {
    let options = req.options();
    let conversation = req.conversation();
    let messages: Vec<(Role, &str)> = conversation.iter().map(|m| (m.role, m.content.trim())).collect();
    let mut params = req.params.clone();
    params.stop.sort_unstable();
    let material = KeyMaterial {
        version: KEY_VERSION,
        scope,
        provider: trimmed(req.provider.as_deref()),
        model: trimmed(req.model.as_deref()),
        messages,
        images: conversation
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.images.iter().map(move |image| (i, hex(&Sha256::digest(image.url.as_bytes())))))
            .collect(),
        params,
        collections: {
            let mut c = options.collections;
            c.sort_unstable();
            c.dedup();
            c
        },
        language: options.language,
        channel: options.channel.as_str(),
    };
    // Serialising plain strings, numbers and enums cannot fail; an empty string would still
    // hash to a key only this (impossible) case shares.
    let exact_json = serde_json::to_string(&material).unwrap_or_default();
    let exact = hex(&Sha256::digest(exact_json.as_bytes()));

    let users = material.messages.iter().filter(|(r, _)| *r == Role::User).count();
    let assistants = material.messages.iter().filter(|(r, _)| *r == Role::Assistant).count();
    let last_user = material.messages.iter().rposition(|(r, _)| *r == Role::User);
    let semantic = match last_user {
        Some(i) if !single_turn_only || (users == 1 && assistants == 0) => {
            let text = material.messages[i].1.to_owned();
            let mut rest = KeyMaterial { messages: material.messages.clone(), ..material };
            rest.messages.remove(i);
            let base = serde_json::to_string(&rest).unwrap_or_default();
            Some(SemanticKey { base, text }).filter(|k| !k.text.is_empty())
        }
        _ => None,
    };
    RequestKeys { exact, semantic }
}

/// Whose entries a caller may read: the authenticated subject (else the client address), the
/// tenant (callers without one fall back to their own scope), or everyone.
pub(crate) fn caller_scope(scope: CacheScope, identity: Option<&Identity>, peer: Option<IpAddr>) -> String {
    let user = || {
        let key = crate::provider::caller_key(identity, peer);
        if identity.is_some() { format!("user:{key}") } else { key }
    };
    match scope {
        CacheScope::User => user(),
        CacheScope::Tenant => match identity.and_then(|i| i.tenant.as_deref()) {
            Some(tenant) => format!("tenant:{tenant}"),
            None => user(),
        },
        CacheScope::Global => "global".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::AuthMethod;

    fn req(json: &str) -> InferenceRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn equivalent_requests_share_a_key() {
        let a = request_keys(&req(r#"{"input":"What is uag?","model":"ollama/llama3.2"}"#), "s", true);
        let b = request_keys(
            &req(r#"{"messages":[{"role":"user","content":"  What is uag? "}],"model":" ollama/llama3.2","stream":true,"id":"x"}"#),
            "s",
            true,
        );
        assert_eq!(a, b);
        let stops_a = request_keys(&req(r#"{"input":"q","params":{"stop":["a","b"]}}"#), "s", true);
        let stops_b = request_keys(&req(r#"{"input":"q","params":{"stop":["b","a"]}}"#), "s", true);
        assert_eq!(stops_a.exact, stops_b.exact);
        // Collections are a set; other metadata (the cache switch, client tags) is not the answer's.
        let ab = request_keys(&req(r#"{"input":"q","metadata":{"collections":["a","b"],"tag":1}}"#), "s", true);
        let ba = request_keys(&req(r#"{"input":"q","metadata":{"collections":["b","a","a"]}}"#), "s", true);
        assert_eq!(ab.exact, ba.exact);
        // No model and the `default` model are the same route.
        assert_eq!(request_keys(&req(r#"{"input":"q"}"#), "s", true), request_keys(&req(r#"{"input":"q","model":"default"}"#), "s", true));
    }

    #[test]
    fn scope_model_params_and_text_change_the_key() {
        let base = request_keys(&req(r#"{"input":"q","model":"m"}"#), "user:a", true).exact;
        for (json, scope) in [
            (r#"{"input":"q","model":"m"}"#, "user:b"),
            (r#"{"input":"q","model":"n"}"#, "user:a"),
            (r#"{"input":"q","model":"m","provider":"p"}"#, "user:a"),
            (r#"{"input":"q","model":"m","params":{"temperature":0.5}}"#, "user:a"),
            (r#"{"input":"q","model":"m","params":{"seed":1}}"#, "user:a"),
            (r#"{"input":"Q","model":"m"}"#, "user:a"),
            // A request narrowed to a collection, or asking for another language.
            (r#"{"input":"q","model":"m","metadata":{"collections":["beta"]}}"#, "user:a"),
            (r#"{"input":"q","model":"m","metadata":{"collections":"beta"}}"#, "user:a"),
            (r#"{"input":"q","model":"m","metadata":{"language":"de"}}"#, "user:a"),
            // A voice turn's two-sentence answer is not a text answer.
            (r#"{"input":"q","model":"m","metadata":{"channel":"voice"}}"#, "user:a"),
            // The same question about a picture.
            (r#"{"messages":[{"role":"user","content":"q","images":[{"url":"data:image/png;base64,AAAA"}]}],"model":"m"}"#, "user:a"),
        ] {
            assert_ne!(request_keys(&req(json), scope, true).exact, base, "{json} in {scope}");
        }
    }

    #[test]
    fn only_single_turn_requests_get_a_semantic_key_by_default() {
        let single =
            request_keys(&req(r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"q"}]}"#), "s", true);
        let key = single.semantic.unwrap();
        assert_eq!(key.text, "q");
        // The system prompt stays in the partition: another one is another partition.
        let other = request_keys(&req(r#"{"messages":[{"role":"system","content":"be long"},{"role":"user","content":"q"}]}"#), "s", true);
        assert_ne!(other.semantic.unwrap().partition("e"), key.partition("e"));
        assert_ne!(key.partition("e"), key.partition("f"));
        let multi = r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}"#;
        assert!(request_keys(&req(multi), "s", true).semantic.is_none());
        assert_eq!(request_keys(&req(multi), "s", false).semantic.unwrap().text, "c");
    }

    #[test]
    fn scopes_follow_the_identity() {
        assert_eq!(caller_scope(CacheScope::User, None, None), "ip:unknown");
        let ip = Some(IpAddr::from([10, 0, 0, 7]));
        assert_eq!(caller_scope(CacheScope::User, None, ip), "ip:10.0.0.7");
        let alice = Identity { subject: "alice".into(), roles: vec![], tenant: None, method: AuthMethod::Jwt };
        assert_eq!(caller_scope(CacheScope::User, Some(&alice), ip), "user:jwt:alice");
        assert_eq!(caller_scope(CacheScope::Tenant, Some(&alice), ip), "user:jwt:alice");
        // An API key named like an IdP user is another caller.
        let key_alice = Identity { method: AuthMethod::ApiKey, ..alice.clone() };
        assert_eq!(caller_scope(CacheScope::User, Some(&key_alice), ip), "user:key:alice");
        let cert_alice = Identity { method: AuthMethod::ClientCertificate, ..alice.clone() };
        assert_eq!(caller_scope(CacheScope::User, Some(&cert_alice), ip), "user:cert:alice");
        let acme = Identity { tenant: Some("acme".into()), ..alice };
        assert_eq!(caller_scope(CacheScope::Tenant, Some(&acme), ip), "tenant:acme");
        assert_eq!(caller_scope(CacheScope::Global, Some(&acme), ip), "global");
    }
}
