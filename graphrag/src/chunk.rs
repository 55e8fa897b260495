//! Structure-aware chunking: chunks never cross a section boundary, prefer paragraph
//! boundaries, stay under a word bound, and overlap by a sentence or two when a section has
//! to be split.

use crate::parse::ParsedDocument;
use crate::text::sentences;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDraft {
    pub section: Vec<String>,
    pub text: String,
    pub code_terms: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Upper bound of a chunk, in words (a close proxy for tokens on technical English).
    pub max_words: usize,
    /// Words carried over from the end of one chunk into the next when a section is split.
    pub overlap_words: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self { max_words: 180, overlap_words: 30 }
    }
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

pub fn chunk(doc: &ParsedDocument, limits: ChunkLimits) -> Vec<ChunkDraft> {
    let mut out = Vec::new();
    for section in &doc.sections {
        // Units: whole paragraphs, or the sentences of a paragraph that alone is too long.
        // Each unit says whether it is (part of) a code listing, whose lines stay lines.
        let mut units: Vec<(&str, bool)> = Vec::new();
        for p in &section.paragraphs {
            let listing = p.contains('\n');
            if word_count(p) <= limits.max_words {
                units.push((p, listing));
            } else if listing {
                // A long listing splits at its lines.
                units.extend(p.lines().filter(|l| !l.trim().is_empty()).map(|l| (l, true)));
            } else {
                units.extend(sentences(p).into_iter().map(|s| (s, false)));
            }
        }
        let mut current: Vec<(&str, bool)> = Vec::new();
        let mut words = 0;
        let mut pieces: Vec<String> = Vec::new();
        for (unit, listing) in units {
            let n = word_count(unit);
            if words + n > limits.max_words && !current.is_empty() {
                pieces.push(join_units(&current));
                // Carry the tail of the finished chunk over, sentence-aligned.
                let (last, last_listing) = current.last().copied().unwrap_or_default();
                let tail = if last_listing { None } else { overlap_tail(last, limits.overlap_words) };
                current.clear();
                words = 0;
                if let Some(t) = tail {
                    words += word_count(t);
                    current.push((t, false));
                }
            }
            // A single sentence longer than the bound is cut at the bound.
            if n > limits.max_words {
                let ws: Vec<&str> = unit.split_whitespace().collect();
                for part in ws.chunks(limits.max_words) {
                    pieces.push(part.join(" "));
                }
                current.clear();
                words = 0;
                continue;
            }
            current.push((unit, listing));
            words += n;
        }
        if !current.is_empty() {
            pieces.push(join_units(&current));
        }
        for text in pieces {
            let code_terms = section.code_terms.iter().filter(|t| text.contains(t.as_str())).cloned().collect();
            out.push(ChunkDraft { section: section.headings.clone(), text, code_terms });
        }
    }
    out
}

/// Units run on as prose, except that listing lines stay on lines of their own.
fn join_units(units: &[(&str, bool)]) -> String {
    let mut out = String::new();
    for (i, (unit, listing)) in units.iter().enumerate() {
        if i > 0 {
            // A listing line starts a line; the prose after a listing does too.
            out.push(if *listing || units[i - 1].1 { '\n' } else { ' ' });
        }
        out.push_str(unit);
    }
    out
}

/// The last sentences of `text` that fit in `max` words, if any.
fn overlap_tail(text: &str, max: usize) -> Option<&str> {
    if max == 0 {
        return None;
    }
    let s = sentences(text);
    let last = *s.last()?;
    (word_count(last) <= max && s.len() > 1).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParsedDocument, Section};

    #[test]
    fn long_sections_split_with_overlap_and_never_cross_sections() {
        let para = |i: usize| format!("Sentence {i} has exactly six words. Then sentence {i}b ends here.");
        let section = |h: &str, n: usize| Section {
            headings: vec![h.to_owned()],
            paragraphs: (0..n).map(para).collect(),
            code_terms: vec!["ends".into()],
        };
        let doc = ParsedDocument { title: "t".into(), sections: vec![section("A", 10), section("B", 1)] };
        let chunks = chunk(&doc, ChunkLimits { max_words: 40, overlap_words: 10 });
        assert!(chunks.iter().all(|c| c.text.split_whitespace().count() <= 40 + 10));
        assert_eq!(chunks.last().unwrap().section, vec!["B".to_owned()]);
        let a: Vec<_> = chunks.iter().filter(|c| c.section == vec!["A".to_owned()]).collect();
        assert!(a.len() >= 3);
        // The second chunk starts with the last sentence of the first.
        let first_tail = "Then sentence 2b ends here.";
        assert!(a[0].text.ends_with(first_tail) && a[1].text.starts_with(first_tail), "{:?}", a);
        assert!(chunks.iter().all(|c| c.code_terms == vec!["ends".to_owned()]));
    }
}
