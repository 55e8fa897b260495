//! A JSON body extractor whose errors are OpenAI-shaped and name the offending field
//! (`messages[0].role`), with 413 for bodies over `server.max_body_bytes`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::ApiError;

/// `JsonBody<T>`: like `axum::Json<T>`, with the gateway's error bodies.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(state.config.server.max_body_bytes)
            } else {
                ApiError::invalid_request("body_unreadable", "the request body could not be read")
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, naming the path of the first bad field. Nesting is bounded by
/// serde_json's recursion limit, so deep input cannot overflow the stack.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request("empty_body", "the request body is empty; send a JSON object"));
    }
    // serde also reads a struct from a JSON array (by position); clients mean objects.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Err(ApiError::invalid_field("body", "the request body must be a JSON object, not an array"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let invalid_json =
        |e: &serde_json::Error| ApiError::invalid_request("invalid_json", format!("the request body is not valid JSON: {e}"));
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| invalid_json(&e))?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            Err(if inner.is_syntax() || inner.is_eof() {
                invalid_json(&inner)
            } else if path == "." || path.is_empty() {
                ApiError::invalid_field("body", format!("invalid request body: {}", strip_position(&inner)))
            } else {
                ApiError::invalid_field(path.clone(), format!("invalid value at `{path}`: {}", strip_position(&inner)))
            })
        }
    }
}

/// serde_json appends " at line 1 column 57"; the field path says more to a client.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::InferenceRequest;

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<InferenceRequest>(br#"{"messages":[{"role":"robot","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        assert!(e.message.contains("robot"), "{}", e.message);
        let e = parse_json::<InferenceRequest>(br#"{"messages": 5}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_json::<InferenceRequest>(br#"{"input": "a", "bogus": 1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_and_deep_nesting_are_400s() {
        let e = parse_json::<InferenceRequest>(b"{\"input\": ").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let deep = "[".repeat(100_000);
        let e = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<InferenceRequest>(b"{\"input\":\"a\"} trailing").unwrap_err();
        assert_eq!(e.code, "invalid_json");
    }
}
