//! Retrieval evaluation: recall@1/5/10, full recall@5 and MRR of each retrieval mode over a question set.
//!
//! An expected source is `FILE#N.N.N`: a passage matches when its document's file name is
//! `FILE` and one of its headings starts with the section number `N.N.N` (followed by `.` or
//! a space, so `6.2.1` does not match `6.2.10`). Without `#`, the file alone must match.

use crate::engine::{Engine, Passage, QueryOptions, RetrievalMode};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct EvalQuestion {
    pub id: String,
    pub question: String,
    pub expected: Vec<String>,
    pub multi_hop: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    /// Share of questions with every expected passage in the top 5 (what a multi-hop answer
    /// needs).
    pub full_at_5: f64,
    pub mrr: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModeReport {
    pub mode: RetrievalMode,
    pub all: Metrics,
    pub single_hop: Metrics,
    pub multi_hop: Metrics,
}

pub fn matches(expected: &str, passage: &Passage) -> bool {
    let (file, section) = match expected.split_once('#') {
        Some((f, s)) => (f, Some(s)),
        None => (expected, None),
    };
    let name = std::path::Path::new(&passage.document).file_name().and_then(|n| n.to_str()).unwrap_or(&passage.document);
    if name != file {
        return false;
    }
    match section {
        None => true,
        Some(number) => passage
            .chunk
            .section
            .iter()
            .any(|h| h.strip_prefix(number).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with(' '))),
    }
}

#[derive(Default)]
struct Acc {
    n: usize,
    r1: f64,
    r5: f64,
    r10: f64,
    full5: f64,
    rr: f64,
}

impl Acc {
    fn add(&mut self, expected: &[String], ranked: &[Passage]) {
        let recall = |k: usize| {
            let top = &ranked[..k.min(ranked.len())];
            let found = expected.iter().filter(|e| top.iter().any(|p| matches(e, p))).count();
            found as f64 / expected.len().max(1) as f64
        };
        self.n += 1;
        self.r1 += recall(1);
        self.r5 += recall(5);
        self.r10 += recall(10);
        if recall(5) >= 1.0 {
            self.full5 += 1.0;
        }
        if let Some(pos) = ranked.iter().position(|p| expected.iter().any(|e| matches(e, p))) {
            self.rr += 1.0 / (pos as f64 + 1.0);
        }
    }

    fn metrics(&self) -> Metrics {
        let n = self.n.max(1) as f64;
        Metrics {
            questions: self.n,
            recall_at_1: self.r1 / n,
            recall_at_5: self.r5 / n,
            recall_at_10: self.r10 / n,
            full_at_5: self.full5 / n,
            mrr: self.rr / n,
        }
    }
}

/// Runs every question in every mode on the same index (dense only when the engine has an
/// embedder).
pub fn evaluate(engine: &Engine, questions: &[EvalQuestion]) -> Result<Vec<ModeReport>> {
    let mut reports = Vec::new();
    let mut modes = vec![RetrievalMode::Bm25, RetrievalMode::Graph];
    if engine.stats().embedding_model.is_some() {
        modes.push(RetrievalMode::Dense);
    }
    modes.push(RetrievalMode::Fused);
    for mode in modes {
        let (mut all, mut single, mut multi) = (Acc::default(), Acc::default(), Acc::default());
        let options = QueryOptions { top_k: 10, mode, collections: None };
        for q in questions {
            let retrieval = engine.retrieve(&q.question, &options, &mut |_| {})?;
            all.add(&q.expected, &retrieval.passages);
            if q.multi_hop { multi.add(&q.expected, &retrieval.passages) } else { single.add(&q.expected, &retrieval.passages) }
        }
        reports.push(ModeReport { mode, all: all.metrics(), single_hop: single.metrics(), multi_hop: multi.metrics() });
    }
    Ok(reports)
}

/// A fact a right answer states, as the surface forms that count (any one of them).
pub type KeyFact = Vec<String>;

/// Whether `answer` states `fact`: one of its forms occurs, case-insensitively with
/// whitespace collapsed; short plain forms (`ESP`, `acl`) only as whole words, so that
/// "especially" does not count as `ESP`.
pub fn states(answer: &str, fact: &KeyFact) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    let text = norm(answer);
    fact.iter().any(|form| {
        let form = norm(form);
        if form.is_empty() {
            return false;
        }
        let whole_word = form.chars().count() <= 4 && form.chars().all(char::is_alphanumeric);
        if !whole_word {
            return text.contains(&form);
        }
        text.match_indices(&form).any(|(i, m)| {
            let before = text[..i].chars().next_back();
            let after = text[i + m.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    })
}

/// The share of `facts` that `answer` states (1.0 for a question without facts).
pub fn key_fact_recall(answer: &str, facts: &[KeyFact]) -> f64 {
    if facts.is_empty() {
        return 1.0;
    }
    facts.iter().filter(|f| states(answer, f)).count() as f64 / facts.len() as f64
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn key_facts_match_forms_and_short_ones_as_words() {
        let fact = |forms: &[&str]| forms.iter().map(|s| (*s).to_owned()).collect::<KeyFact>();
        assert!(states("Add it to PRUNEDPATHS in  /etc/updatedb.conf", &fact(&["prunedpaths"])));
        assert!(states("edit /etc/updatedb.conf", &fact(&["/etc/updatedb.conf", "updatedb.conf"])));
        assert!(!states("especially this", &fact(&["ESP"])));
        assert!(states("the ESP partition", &fact(&["ESP"])));
        assert!(states("mount it (ESP).", &fact(&["esp"])));
        let facts = vec![fact(&["visudo"]), fact(&["ALL=(ALL) ALL"])];
        assert_eq!(key_fact_recall("run visudo", &facts), 0.5);
        assert_eq!(key_fact_recall("anything", &[]), 1.0);
    }
}
