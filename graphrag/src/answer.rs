//! Extractive answers: the best sentences of the retrieved passages, de-duplicated, each
//! followed by a numbered citation of its document and section. Used until a local LLM is
//! installed (and as the fallback when it is not).

use std::collections::BTreeSet;

use crate::engine::Retrieval;
use crate::text::{content_words, sentences};

/// A citation, numbered as in the answer text (`[1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Citation {
    pub index: u32,
    pub document: String,
    pub title: String,
    pub section: Option<String>,
    pub snippet: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub text: String,
    pub citations: Vec<Citation>,
}

const MAX_SENTENCES: usize = 4;

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f32 {
    let inter = a.intersection(b).count() as f32;
    let union = a.union(b).count() as f32;
    if union == 0.0 { 0.0 } else { inter / union }
}

fn snippet(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= 40 { words.join(" ") } else { format!("{} ...", words[..40].join(" ")) }
}

pub fn synthesize(question: &str, retrieval: &Retrieval) -> Answer {
    if retrieval.passages.is_empty() {
        return Answer { text: "I found nothing about this in the knowledge base.".into(), citations: Vec::new() };
    }
    if retrieval.broad {
        return overview(retrieval);
    }
    let q: BTreeSet<String> = content_words(question).into_iter().collect();
    let seeds: Vec<String> = retrieval.seeds.iter().map(|s| s.to_lowercase()).collect();
    // (score, passage rank, sentence order, sentence)
    let mut candidates: Vec<(f32, usize, usize, &str, BTreeSet<String>)> = Vec::new();
    for (rank, p) in retrieval.passages.iter().enumerate() {
        for (order, s) in sentences(&p.chunk.text).into_iter().enumerate() {
            let words: BTreeSet<String> = content_words(s).into_iter().collect();
            // Fragments and whole code listings make poor answer sentences.
            if words.len() < 3 || s.split_whitespace().count() > 60 {
                continue;
            }
            let overlap = words.intersection(&q).count() as f32 / (q.len().max(1) as f32).sqrt();
            let lower = s.to_lowercase();
            let entity_hits = seeds.iter().filter(|e| lower.contains(e.as_str())).count() as f32;
            let position = 1.0 / (1.0 + rank as f32);
            let score = overlap + 0.5 * entity_hits + 0.6 * position - if order == 0 { 0.0 } else { 0.05 };
            candidates.push((score, rank, order, s, words));
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut chosen: Vec<(usize, usize, &str)> = Vec::new();
    let mut chosen_words: Vec<BTreeSet<String>> = Vec::new();
    for (score, rank, order, s, words) in &candidates {
        if chosen.len() == MAX_SENTENCES || *score <= 0.0 {
            break;
        }
        if chosen_words.iter().any(|w| jaccard(w, words) > 0.5) {
            continue;
        }
        chosen.push((*rank, *order, s));
        chosen_words.push(words.clone());
    }
    // Read in document order: by passage rank, then position in the passage.
    chosen.sort_by_key(|(rank, order, _)| (*rank, *order));
    let mut citations: Vec<Citation> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    for (rank, _, sentence) in chosen {
        let p = &retrieval.passages[rank];
        let index = match citations
            .iter()
            .position(|c| c.document == p.document && c.section.as_deref() == p.chunk.section.last().map(String::as_str))
        {
            Some(i) => i,
            None => {
                citations.push(Citation {
                    index: citations.len() as u32 + 1,
                    document: p.document.clone(),
                    title: p.title.clone(),
                    section: p.chunk.section.last().cloned(),
                    snippet: snippet(&p.chunk.text),
                    score: p.score,
                });
                citations.len() - 1
            }
        };
        parts.push(format!("{} [{}]", sentence.trim(), index + 1));
    }
    Answer { text: parts.join(" "), citations }
}

/// For "what is this about" questions: the knowledge base's main communities of entities.
fn overview(retrieval: &Retrieval) -> Answer {
    let s = &retrieval.snapshot;
    let mut parts = Vec::new();
    let mut citations = Vec::new();
    for community in s.kg.communities.iter().take(5) {
        let names: Vec<&str> = community.entities.iter().take(5).map(|e| s.kg.entities[*e as usize].name.as_str()).collect();
        let Some(chunk) = community.representative_chunk.and_then(|c| s.chunks.get(&c)) else { continue };
        let doc = s.docs.get(&chunk.doc_id);
        citations.push(Citation {
            index: citations.len() as u32 + 1,
            document: doc.map_or_else(|| chunk.doc_id.clone(), |d| d.source.clone()),
            title: doc.map(|d| d.title.clone()).unwrap_or_default(),
            section: chunk.section.last().cloned(),
            snippet: snippet(&chunk.text),
            score: community.entities.len() as f32,
        });
        let lead = sentences(&chunk.text).first().map(|x| x.trim().to_owned()).unwrap_or_default();
        parts.push(format!("{}: {} [{}]", names.join(", "), lead, citations.len()));
    }
    if parts.is_empty() {
        return Answer { text: "The knowledge base is too small for an overview yet.".into(), citations };
    }
    Answer { text: format!("The knowledge base covers these main topics. {}", parts.join(" ")), citations }
}

/// What the local LLM is given to answer from: instructions with the numbered passages (system
/// message) and the question (user message), plus the citations those numbers refer to (so the caller can show sources even
/// when the model cites badly).
#[derive(Debug, Clone, PartialEq)]
pub struct GroundedPrompt {
    pub system: String,
    pub user: String,
    pub citations: Vec<Citation>,
}

/// Instructions for grounded answers, followed by the passages. Short and plain on purpose:
/// a 135M-parameter model answers correctly from passages in the system message with these
/// words, and drifts into general knowledge with longer rules or passages in the user turn
/// (measured with SmolLM2-135M; larger models follow either form).
pub const GROUNDED_SYSTEM_PROMPT: &str =
    "You are a helpful assistant. Use the following passages to answer. Cite the passage number like [1].";

/// Builds the LLM prompt for `question` from the retrieval, keeping at most `max_passages`
/// passages of at most `max_words` words each (the budget that keeps prompt processing fast
/// on a small CPU and within a small model's context).
pub fn grounded_prompt(question: &str, retrieval: &Retrieval, max_passages: usize, max_words: usize) -> GroundedPrompt {
    let mut citations = Vec::new();
    let mut context = String::new();
    for passage in retrieval.passages.iter().take(max_passages) {
        let index = citations.len() as u32 + 1;
        let chunk = &passage.chunk;
        let words: Vec<&str> = chunk.text.split_whitespace().collect();
        let body = if words.len() > max_words { format!("{} ...", words[..max_words].join(" ")) } else { words.join(" ") };
        let heading = match chunk.section.last() {
            Some(section) if !passage.title.is_empty() => format!("{} / {section}", passage.title),
            Some(section) => section.clone(),
            None => passage.title.clone(),
        };
        context.push_str(&format!("[{index}] ({heading}) {body}\n\n"));
        citations.push(Citation {
            index,
            document: passage.document.clone(),
            title: passage.title.clone(),
            section: chunk.section.last().cloned(),
            snippet: snippet(&chunk.text),
            score: passage.score,
        });
    }
    let system = if citations.is_empty() {
        format!("{GROUNDED_SYSTEM_PROMPT}\n\nThere are no passages: say that the knowledge base does not say.")
    } else {
        format!("{GROUNDED_SYSTEM_PROMPT}\n\n{}", context.trim_end())
    };
    GroundedPrompt { system, user: question.trim().to_string(), citations }
}

/// Citation numbers the model actually used, in order of first use, restricted to those that
/// exist (a small model sometimes invents `[7]` with five passages).
pub fn cited_indices(text: &str, available: usize) -> Vec<u32> {
    let mut seen = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find(']') else { break };
        for part in rest[..end].split(',') {
            if let Ok(n) = part.trim().parse::<u32>()
                && n >= 1
                && (n as usize) <= available
                && !seen.contains(&n)
            {
                seen.push(n);
            }
        }
        rest = &rest[end..];
    }
    seen
}

#[cfg(test)]
mod grounded_tests {
    use super::*;

    #[test]
    fn cited_indices_keep_order_and_drop_invented_numbers() {
        assert_eq!(cited_indices("A [2]. B [1, 2]. C [7]. D [x]", 3), vec![2, 1]);
        assert_eq!(cited_indices("no citations", 3), Vec::<u32>::new());
        assert_eq!(cited_indices("unclosed [1", 3), Vec::<u32>::new());
    }
}
