//! Dense retrieval: one unit vector per chunk from a sentence-embedding model (MiniLM by
//! default), searched by brute-force cosine similarity.
//!
//! Why brute force: a dot product over 384 floats per chunk is about 0.3 ms for the 1,400
//! chunks of the Debian handbook on one x86 core and stays under ~40 ms on a Pi 5 up to about
//! 100k chunks; past that an approximate index (HNSW) would take over. Nothing here needs one
//! yet, and an exact search has no recall to tune.
//!
//! The engine does not run the model: it is given a [`TextEmbedder`] (the model runtime's
//! embedding worker), so inference stays off the threads that serve
//! requests and the same model copy serves `/v1/embeddings`. Vectors are stored in sled next to
//! their chunks, tagged with the model that made them: a chunk whose vector came from another
//! model counts as missing and is embedded again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::store::{ChunkRecord, DocRecord};

/// What turns text into unit-length vectors: in uag, the model runtime's embedding worker
/// (`uag_gateway::embedder`), in the server and the CLI alike.
pub trait TextEmbedder: Send + Sync {
    /// The model's id; vectors of different models are not comparable.
    fn model(&self) -> &str;
    /// One unit vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// The version of [`passage_text`]: part of every stored vector's tag, so vectors made from
/// differently composed text are recomputed like those of another model.
const PASSAGE_RECIPE: &str = "title-headings-text-1";

/// What stored vectors are tagged with: the model and the passage recipe.
pub fn vector_tag(model: &str) -> String {
    format!("{model}+{PASSAGE_RECIPE}")
}

/// What a chunk's vector is made of: where it sits (document title and headings) and what it
/// says. The headings carry the topic a short chunk leaves implicit ("Configuring the
/// network" above a bare `/etc/network/interfaces` listing).
pub fn passage_text(doc: Option<&DocRecord>, chunk: &ChunkRecord) -> String {
    let mut out = String::new();
    if let Some(doc) = doc.filter(|d| !d.title.is_empty()) {
        out.push_str(&doc.title);
        out.push_str(". ");
    }
    for heading in &chunk.section {
        out.push_str(heading);
        out.push_str(". ");
    }
    out.push_str(&chunk.text);
    out
}

/// The vectors of one model (and passage recipe: [`vector_tag`]), contiguous for a fast scan.
/// Copied on write: a query holds an `Arc` of the table it started with.
#[derive(Debug, Default, Clone)]
pub struct Vectors {
    tag: String,
    dims: usize,
    ids: Vec<u64>,
    data: Vec<f32>,
    positions: HashMap<u64, usize>,
}

impl Vectors {
    pub fn new(tag: &str) -> Self {
        Self { tag: tag.to_owned(), ..Self::default() }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.positions.contains_key(&id)
    }

    /// Adds or replaces vectors; one of another length than the table's is ignored.
    pub fn insert(&mut self, id: u64, vector: &[f32]) {
        if self.dims == 0 {
            self.dims = vector.len();
        }
        if vector.len() != self.dims || self.dims == 0 {
            tracing::warn!(id, dims = vector.len(), expected = self.dims, "vector of the wrong length ignored");
            return;
        }
        if let Some(&at) = self.positions.get(&id) {
            self.data[at * self.dims..(at + 1) * self.dims].copy_from_slice(vector);
        } else {
            self.positions.insert(id, self.ids.len());
            self.ids.push(id);
            self.data.extend_from_slice(vector);
        }
    }

    /// Only the vectors of `live` chunks (the rest belong to replaced or deleted documents).
    pub fn retain(&self, live: &HashSet<u64>) -> Self {
        let mut out = Self::new(&self.tag);
        for (i, id) in self.ids.iter().enumerate() {
            if live.contains(id) {
                out.insert(*id, &self.data[i * self.dims..(i + 1) * self.dims]);
            }
        }
        out
    }

    /// The `limit` chunks most similar to `query` (a unit vector) among those `keep` allows,
    /// best first.
    pub fn search(&self, query: &[f32], limit: usize, keep: impl Fn(u64) -> bool) -> Vec<(u64, f32)> {
        if query.len() != self.dims || self.dims == 0 || limit == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(u64, f32)> = self
            .data
            .chunks_exact(self.dims)
            .zip(&self.ids)
            .filter(|(_, id)| keep(**id))
            .map(|(row, id)| (*id, row.iter().zip(query).map(|(a, b)| a * b).sum()))
            .collect();
        let by_score = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scored.len() > limit {
            scored.select_nth_unstable_by(limit - 1, by_score);
            scored.truncate(limit);
        }
        scored.sort_by(by_score);
        scored
    }
}

/// The dense side of the engine: the embedder (if any) and the table of its vectors.
#[derive(Default)]
pub(crate) struct Dense {
    pub embedder: Option<Arc<dyn TextEmbedder>>,
    pub vectors: Arc<Vectors>,
}

/// Little-endian f32s after a length-prefixed tag: the stored form of one vector.
pub(crate) fn encode_vector(tag: &str, vector: &[f32]) -> Vec<u8> {
    let name = tag.as_bytes();
    let mut out = Vec::with_capacity(1 + name.len() + vector.len() * 4);
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&name[..name.len().min(255)]);
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The tag and vector of a stored record; `None` when it is not one.
pub(crate) fn decode_vector(bytes: &[u8]) -> Option<(&str, Vec<f32>)> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    if rest.len() < len || (rest.len() - len) % 4 != 0 {
        return None;
    }
    let model = std::str::from_utf8(&rest[..len]).ok()?;
    let vector = rest[len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Some((model, vector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_ranks_by_cosine_and_respects_the_filter() {
        let mut v = Vectors::new("m");
        v.insert(1, &[1.0, 0.0]);
        v.insert(2, &[0.6, 0.8]);
        v.insert(3, &[0.0, 1.0]);
        let hits = v.search(&[1.0, 0.0], 2, |_| true);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
        let hits = v.search(&[1.0, 0.0], 5, |id| id != 1);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 3]);
        // Replacing keeps one row per chunk.
        v.insert(1, &[0.0, -1.0]);
        assert_eq!(v.len(), 3);
        assert_eq!(v.search(&[1.0, 0.0], 1, |_| true)[0].0, 2);
        // A vector of another length is not mixed in.
        v.insert(4, &[1.0, 0.0, 0.0]);
        assert!(!v.contains(4));
        let live: HashSet<u64> = [2, 3].into();
        assert_eq!(v.retain(&live).len(), 2);
    }

    #[test]
    fn stored_vectors_round_trip_and_garbage_is_refused() {
        let bytes = encode_vector("all-minilm-l6-v2", &[0.5, -1.25]);
        let (model, vector) = decode_vector(&bytes).expect("decodes");
        assert_eq!(model, "all-minilm-l6-v2");
        assert_eq!(vector, vec![0.5, -1.25]);
        assert!(decode_vector(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_vector(&[]).is_none());
        assert!(decode_vector(&[200, b'a']).is_none());
    }
}
