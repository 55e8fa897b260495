//! The knowledge base over HTTP, for LAN clients: `POST /v1/documents` (multipart upload or
//! a raw body), `GET /v1/documents`, `DELETE /v1/documents/{id}`, and
//! `GET /v1/graph/entities?q=` (entity search with neighbours). Engine work runs on the
//! blocking pool. With `[policy]` collections, a caller lists, uploads to and deletes from only
//! the collections the policy allows ([`AllowedCollections`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};
use uag_graphrag::parse::{Format, SUPPORTED_TYPES};
use uag_graphrag::{Engine, EngineError, IngestOutcome, NewDocument};

use super::AppState;
use crate::error::ApiError;
use crate::http::access::AllowedCollections;

pub fn routes(config: &crate::config::Config) -> Router<AppState> {
    Router::new()
        .route("/v1/documents", get(list).post(upload).layer(DefaultBodyLimit::max(super::body_limit(config, Some("/v1/documents")))))
        .route("/v1/documents/{id}", delete(remove))
        .route("/v1/graph/entities", get(entities))
}

fn engine(state: &AppState) -> Result<Arc<Engine>, ApiError> {
    state.engine.clone().ok_or_else(|| ApiError::unavailable("not_installed", "no knowledge base is open in this process"))
}

/// Runs engine work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, EngineError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::internal())?.map_err(ApiError::from)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: Option<String>,
    collection: Option<String>,
}

/// A document name is a file name or a relative path (`a/manual.md`: the inbox uploads files
/// of subfolders so): it becomes the citation and, with the collection, decides the id.
fn checked_name(name: &str) -> Result<String, ApiError> {
    let mut parts = Vec::new();
    for part in name.split(['/', '\\']).map(str::trim) {
        match part {
            "" | "." => {}
            ".." => return Err(ApiError::invalid_field("name", "a document name cannot climb out of its folder (`..`)")),
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if parts.is_empty() || joined.len() > 200 || joined.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "give the document a file name such as `manual.md`"));
    }
    Ok(joined)
}

fn checked_collection(c: Option<String>) -> Result<String, ApiError> {
    let c = c.unwrap_or_else(|| uag_graphrag::engine::DEFAULT_COLLECTION.to_owned());
    if c.is_empty() || c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')) {
        return Err(ApiError::invalid_field("collection", "use 1-64 letters, digits, `-`, `_` or `.`"));
    }
    Ok(c)
}

/// `POST /v1/documents`: `multipart/form-data` with a `file` part (and optionally a
/// `collection` part), or the raw document with `Content-Type: text/plain | text/markdown |
/// text/html` and `?name=FILE`.
/// A bad query string is a 400 with the gateway's JSON error, like every other bad input.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| ApiError::invalid_request("invalid_query", e.body_text()))
}

async fn upload(
    State(state): State<AppState>,
    query_string: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let query = query(query_string)?;
    let engine = engine(&state)?;
    let allowed = request.extensions().get::<AllowedCollections>().cloned();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let limit = state.config.graphrag.max_document_bytes;
    let too_large = |e: &dyn std::fmt::Display| {
        if e.to_string().to_lowercase().contains("length limit") {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::invalid_request("body_unreadable", "the upload could not be read")
        }
    };
    let (name, bytes, format, collection) = if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &state).await.map_err(|e| too_large(&e))?;
        let mut file: Option<(String, Bytes)> = None;
        let mut collection = query.collection;
        while let Some(field) = multipart.next_field().await.map_err(|e| too_large(&e))? {
            match field.name() {
                Some("file") => {
                    let name = field.file_name().map(str::to_owned).or_else(|| query.name.clone()).unwrap_or_default();
                    let data = field.bytes().await.map_err(|e| too_large(&e))?;
                    file = Some((name, data));
                }
                Some("collection") => collection = Some(field.text().await.map_err(|e| too_large(&e))?),
                _ => {}
            }
        }
        let (name, data) = file.ok_or_else(|| ApiError::invalid_field("file", "the multipart body has no `file` part"))?;
        let name = checked_name(&name)?;
        let format = Format::from_name(&name).map_err(ApiError::from)?;
        (name, data, format, collection)
    } else {
        let name = checked_name(query.name.as_deref().unwrap_or_default())?;
        let format = match Format::from_mime(&content_type) {
            Some(f) => f,
            None if content_type.is_empty() || content_type.starts_with("application/octet-stream") => Format::from_name(&name)?,
            None => {
                return Err(ApiError::unsupported_media_type(format!(
                    "content type `{content_type}` is not a document type; send text/plain, text/markdown or text/html, \
                     or a multipart upload of a {SUPPORTED_TYPES} file"
                )));
            }
        };
        let data = Bytes::from_request(request, &state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::invalid_request("body_unreadable", "the upload could not be read")
            }
        })?;
        (name, data, format, query.collection)
    };
    if bytes.is_empty() {
        return Err(ApiError::invalid_field("file", "the document is empty"));
    }
    let collection = checked_collection(collection)?;
    if !AllowedCollections::permits(allowed.as_ref(), &collection) {
        return Err(crate::http::access::denied(format!(
            "the access policy does not allow uploads to collection `{collection}` for this caller"
        )));
    }
    let shown = name.clone();
    let outcome = {
        let engine = Arc::clone(&engine);
        blocking(move || engine.ingest(&NewDocument { name: &name, bytes: &bytes, format, collection: &collection })).await?
    };
    if !matches!(outcome, IngestOutcome::Unchanged { .. }) {
        // Found by BM25 and the graph at once; by meaning as soon as its chunks are embedded.
        tokio::task::spawn_blocking(move || embed_missing(&engine));
    }
    let (status, id, chunks, code) = match outcome {
        IngestOutcome::Added { id, chunks } => ("added", id, Some(chunks), StatusCode::CREATED),
        IngestOutcome::Replaced { id, chunks } => ("replaced", id, Some(chunks), StatusCode::OK),
        IngestOutcome::Unchanged { id } => ("unchanged", id, None, StatusCode::OK),
    };
    Ok((code, Json(json!({"id": id, "name": shown, "status": status, "chunks": chunks}))).into_response())
}

async fn list(State(state): State<AppState>, extensions: Extensions) -> Result<Json<Value>, ApiError> {
    let engine = engine(&state)?;
    let allowed = extensions.get::<AllowedCollections>();
    let snapshot = engine.snapshot();
    let data: Vec<Value> = snapshot
        .docs
        .values()
        .filter(|d| AllowedCollections::permits(allowed, &d.collection))
        .map(|d| {
            json!({
                "id": d.id, "name": d.source, "title": d.title, "collection": d.collection,
                "chunks": d.chunk_ids.len(), "bytes": d.bytes, "ingested_at": d.ingested_at,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn remove(State(state): State<AppState>, extensions: Extensions, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let engine = engine(&state)?;
    // A document outside the caller's collections does not exist for them.
    let hidden = engine.snapshot().docs.get(&id).is_some_and(|d| !AllowedCollections::permits(extensions.get(), &d.collection));
    if hidden {
        return Err(ApiError::from(EngineError::NotFound(id)));
    }
    let doc = blocking(move || engine.delete(&id)).await?;
    Ok(Json(json!({"id": doc.id, "name": doc.source, "deleted": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
}

async fn entities(
    State(state): State<AppState>,
    query_string: Result<Query<EntityQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query(query_string)?;
    let engine = engine(&state)?;
    let limit = query.limit.unwrap_or(10).clamp(1, 100);
    if query.q.len() > 200 {
        return Err(ApiError::invalid_field("q", "the query is longer than 200 characters"));
    }
    // Entity search scans the graph and runs fuzzy matching: off the async workers.
    let q = query.q;
    let data = tokio::task::spawn_blocking(move || {
        let snapshot = engine.snapshot();
        let kg = &snapshot.kg;
        let data: Vec<Value> = kg
            .search(&q, limit)
            .into_iter()
            .map(|id| {
                let e = &kg.entities[id as usize];
                let neighbours: Vec<Value> = kg
                    .neighbours(id, 10)
                    .into_iter()
                    .map(|(n, edge)| {
                        let relations: Vec<Value> = edge
                            .relations
                            .iter()
                            .map(|(kind, from, to)| {
                                json!({"type": kind.as_str(), "from": kg.entities[*from as usize].name, "to": kg.entities[*to as usize].name})
                            })
                            .collect();
                        json!({"name": kg.entities[n as usize].name, "weight": edge.weight, "relations": relations})
                    })
                    .collect();
                json!({
                    "name": e.name, "aliases": e.aliases, "mentions": e.mentions, "documents": e.documents,
                    "chunks": e.chunks.len(), "community": e.community, "neighbours": neighbours,
                })
            })
            .collect();
        data
    })
    .await
    .map_err(|_| ApiError::internal())?;
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Start-up work in the background, queries answered meanwhile: ingests `[graphrag]
/// sample_kb` when the knowledge base is empty (so a fresh appliance answers questions about
/// its sample manual), then embeds the chunks that have no vector of the embedding model yet
/// (a knowledge base from before dense retrieval, or after the model changed).
pub fn prepare_knowledge_base(state: &AppState) {
    let Some(engine) = state.engine.clone() else { return };
    let dir = state.config.graphrag.sample_kb.clone();
    let sample = !dir.as_os_str().is_empty() && engine.is_empty();
    if sample && !dir.is_dir() {
        tracing::info!(path = %dir.display(), "no sample knowledge base here (install Debian's `debian-handbook` or set [graphrag] sample_kb)");
    }
    tokio::task::spawn_blocking(move || {
        if sample && dir.is_dir() {
            ingest_sample(&engine, &dir);
        }
        embed_missing(&engine);
    });
}

/// Embeds the chunks that have no vector yet (none when dense retrieval is off); a failure
/// costs the dense signal for those chunks, nothing else.
fn embed_missing(engine: &Engine) {
    let missing = engine.missing_vectors();
    if missing == 0 {
        return;
    }
    let started = std::time::Instant::now();
    tracing::info!(chunks = missing, "embedding chunks for dense retrieval");
    match engine.embed_missing(&mut |_, _| {}) {
        Ok(0) => {}
        Ok(n) => tracing::info!(chunks = n, ms = started.elapsed().as_millis() as u64, "chunks embedded"),
        Err(e) => tracing::warn!(error = %e, "chunks not embedded; they are found by BM25 and the graph only"),
    }
}

fn ingest_sample(engine: &Engine, dir: &std::path::Path) {
    {
        let started = std::time::Instant::now();
        let walk = uag_graphrag::engine::walk(&[dir.to_path_buf()]);
        let mut batch = engine.begin();
        let mut added = 0usize;
        for file in &walk.files {
            match batch.add_path(file, uag_graphrag::engine::DEFAULT_COLLECTION) {
                Ok(_) => added += 1,
                Err(e) => tracing::warn!(file = %file.display(), error = %e, "sample document skipped"),
            }
        }
        match batch.finish() {
            Ok(()) => {
                tracing::info!(documents = added, ms = started.elapsed().as_millis() as u64, path = %dir.display(), "sample knowledge base ingested")
            }
            Err(e) => tracing::error!(error = %e, "sample knowledge base ingest failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checked_name;

    #[test]
    fn names_are_relative_paths_that_stay_in_their_folder() {
        assert_eq!(checked_name("manual.md").unwrap(), "manual.md");
        assert_eq!(checked_name("a/manual.md").unwrap(), "a/manual.md");
        assert_eq!(checked_name("/srv/inbox/./b\\\\manual.md").unwrap(), "srv/inbox/b/manual.md");
        assert!(checked_name("../etc/passwd.txt").is_err());
        assert!(checked_name("a/../../x.md").is_err());
        assert!(checked_name(" / ").is_err());
        assert!(checked_name("bad\u{7}.md").is_err());
    }
}
