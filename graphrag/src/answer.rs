//! Extractive answers: the best sentences of the retrieved passages, de-duplicated, each
//! followed by a numbered citation of its document and section. Used until a local LLM is
//! installed (and as the fallback when it is not).

use std::collections::BTreeSet;

use crate::engine::Retrieval;
use crate::text::{content_words, is_chatter, match_key as stem, sentences};

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

/// Evidence an extractive answer reads out: at most this many sentences and words (about
/// 80 words: a screen of the kiosk, or half a minute spoken).
const MAX_SENTENCES: usize = 4;
const MAX_WORDS: usize = 120;

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f32 {
    let inter = a.intersection(b).count() as f32;
    let union = a.union(b).count() as f32;
    if union == 0.0 { 0.0 } else { inter / union }
}

fn snippet(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= 40 { words.join(" ") } else { format!("{} ...", words[..40].join(" ")) }
}

/// The content words of a question that carry its meaning (chatter removed), stemmed.
pub fn question_terms(question: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in content_words(question) {
        if is_chatter(&w) {
            continue;
        }
        let w = stem(&w);
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// The stemmed content words of a text.
fn stems(text: &str) -> BTreeSet<String> {
    content_words(text).iter().map(|w| stem(w)).collect()
}

/// One sentence of a passage chosen to answer from.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceSentence {
    /// Rank of its passage in the retrieval (0 = best).
    pub passage: usize,
    /// Position of the sentence in its passage.
    pub order: usize,
    pub text: String,
}

/// What evidence selection found: the sentences, in reading order, and how much of the
/// question's weight they cover (0..1; low means the knowledge base does not answer it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub sentences: Vec<EvidenceSentence>,
    pub coverage: f32,
    /// The most question terms any one chosen sentence holds: sentences that each share a
    /// single word with a question of several ("France" in "the capital of France") answer
    /// nothing, unless together they cover most of it.
    pub best_terms: usize,
}

impl Evidence {
    /// Whether this evidence answers a question with `terms` content terms at all.
    pub fn answers(&self, terms: usize) -> bool {
        !self.sentences.is_empty() && self.coverage >= MIN_COVERAGE && (terms < 2 || self.best_terms >= 2 || self.coverage > 0.6)
    }
}

struct Candidate<'a> {
    passage: usize,
    order: usize,
    text: &'a str,
    words: BTreeSet<String>,
    /// Words of the section heading: the sentence is read in its context ("Where is VoIP
    /// software?" above "SIP and H.323 are implemented ...").
    context: BTreeSet<String>,
}

impl Candidate<'_> {
    /// How much of `term` the sentence says: all of it, half through its heading, or none.
    fn says(&self, term: &str) -> f32 {
        if self.words.contains(term) {
            1.0
        } else if self.context.contains(term) {
            0.5
        } else {
            0.0
        }
    }
}

/// The longest run of a long sentence (a flattened listing, a run-on paragraph) kept as one
/// evidence unit: the window of this many words that holds most question terms.
const WINDOW_WORDS: usize = 60;

fn best_window<'a>(sentence: &'a str, terms: &[String]) -> &'a str {
    let spans: Vec<(usize, usize)> = sentence
        .split_whitespace()
        .map(|w| {
            let start = w.as_ptr() as usize - sentence.as_ptr() as usize;
            (start, start + w.len())
        })
        .collect();
    let window = WINDOW_WORDS;
    if spans.len() <= window {
        return sentence;
    }
    let hit: Vec<bool> = spans.iter().map(|(a, b)| content_words(&sentence[*a..*b]).iter().any(|w| terms.contains(&stem(w)))).collect();
    let mut best = (0usize, 0usize);
    let mut count: usize = hit[..window].iter().filter(|h| **h).count();
    best.1 = count;
    for start in 1..=spans.len() - window {
        count = count + usize::from(hit[start + window - 1]) - usize::from(hit[start - 1]);
        if count > best.1 {
            best = (start, count);
        }
    }
    // Centre the window on its hits, so the words after a command (its options) come along.
    let hits: Vec<usize> = (best.0..best.0 + window).filter(|i| hit[*i]).collect();
    let start = match (hits.first(), hits.last()) {
        (Some(first), Some(last)) => ((first + last) / 2).saturating_sub(window / 2).min(spans.len() - window),
        _ => best.0,
    };
    &sentence[spans[start].0..spans[start + window - 1].1]
}

/// What question weight already covered counts for, against weight not yet covered.
const OLD_WEIGHT: f32 = 0.3;

/// Command lines a how-question may add once its words are all covered (check, then act).
const MAX_EXTRA_COMMANDS: usize = 2;

fn is_command_line(text: &str) -> bool {
    text.starts_with("# ") || text.starts_with("$ ")
}

/// The weight of a command line (`# journalctl -u ssh.service`) for a question that asks how.
const COMMAND_BONUS: f32 = 0.15;

/// How much a sentence's passage rank counts (1 / (1 + rank)) beside its coverage of the
/// question. 0.3 before dense retrieval; with it, the ranks below the first hold the other half
/// of a two-part question more often, and 0.15 stated the most key facts on the tuning set
/// (0.3: 46.5 %, 0.2: 47.6 %, 0.15: 50.7 %, 0.1: 49.0 %; docs/EVALUATION.md).
const PRIOR_WEIGHT: f32 = 0.15;

/// Top passages that each get a say in the evidence when there is room.
const DIVERSE_PASSAGES: usize = 2;

/// Picks the sentences that answer `question` from the retrieved passages, across passages
/// for questions with several parts: each pick is the sentence that adds the most question
/// weight not yet covered (rare words weigh more than common ones), so a second part of the
/// question gets its own sentence instead of a paraphrase of the first.
pub fn select_evidence(question: &str, retrieval: &Retrieval, max_sentences: usize, max_words: usize) -> Evidence {
    let terms = question_terms(question);
    // "How do I ...", "which command ...": a command line of a listing is the answer's core.
    let lower = question.to_lowercase();
    let procedural = lower.contains("how ") || lower.starts_with("how") || lower.contains("command");
    let seeds: Vec<String> = retrieval.seeds.iter().map(|s| s.to_lowercase()).collect();
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for (rank, p) in retrieval.passages.iter().enumerate() {
        let context: BTreeSet<String> = p.chunk.section.last().map(|h| stems(h)).unwrap_or_default();
        // Units: sentences, and each line of a listing on its own (a command line, not the
        // output printed after it).
        let units = sentences(&p.chunk.text)
            .into_iter()
            .flat_map(|s| s.split('\n').enumerate().map(|(line, u)| (u.trim(), line > 0)))
            .filter(|(u, _)| !u.is_empty());
        for (order, (s, listing)) in units.enumerate() {
            let text = best_window(s, &terms);
            let words = stems(text);
            // A command line says much in few words (`# apt update`).
            let command_line = is_command_line(text);
            if words.len() < if command_line { 1 } else { 3 } {
                continue;
            }
            // Other lines of a listing are mostly output; one counts only when it matches the
            // question on two words or more (a config line that is the answer).
            if listing && !command_line && terms.iter().filter(|t| words.contains(*t)).count() < 2 {
                continue;
            }
            candidates.push(Candidate { passage: rank, order, text, words, context: context.clone() });
        }
    }
    if candidates.is_empty() || terms.is_empty() {
        return Evidence::default();
    }
    // Inverse document frequency over the candidate sentences.
    let n = candidates.len() as f32;
    let weight: Vec<f32> = terms
        .iter()
        .map(|t| {
            let df = candidates.iter().filter(|c| c.words.contains(t)).count() as f32;
            if df == 0.0 { 0.0 } else { (1.0 + n / df).ln() }
        })
        .collect();
    // The question's whole weight, counting its words the passages never mention at an
    // average weight: a question about something absent cannot be fully covered.
    let present: Vec<f32> = weight.iter().copied().filter(|w| *w > 0.0).collect();
    let mean = if present.is_empty() { 1.0 } else { present.iter().sum::<f32>() / present.len() as f32 };
    let total: f32 = weight.iter().map(|w| if *w > 0.0 { *w } else { mean }).sum();
    let mut covered = vec![false; terms.len()];
    let mut chosen: Vec<usize> = Vec::new();
    let mut words_used = 0usize;
    let mut commands_taken = 0usize;
    while chosen.len() < max_sentences {
        let mut best: Option<(f32, usize)> = None;
        for (i, c) in candidates.iter().enumerate() {
            if chosen.contains(&i) || chosen.iter().any(|j| jaccard(&candidates[*j].words, &c.words) > 0.5) {
                continue;
            }
            let (mut new, mut old) = (0.0f32, 0.0f32);
            for (t, term) in terms.iter().enumerate() {
                let said = c.says(term) * weight[t];
                if covered[t] { old += said } else { new += said }
            }
            let command = procedural && is_command_line(c.text);
            // Once every term is covered, only a command line on the topic still adds: the how.
            if new <= 0.0 && !(command && old > 0.0 && commands_taken < MAX_EXTRA_COMMANDS) {
                continue;
            }
            let lower = c.text.to_lowercase();
            let entity_hits = seeds.iter().filter(|e| lower.contains(e.as_str())).count() as f32;
            let prior = 1.0 / (1.0 + c.passage as f32);
            let technical = crate::verify::technical_tokens(c.text).len().min(3) as f32;
            let command = if command { 1.0 } else { 0.0 };
            // Weights chosen on docs/eval (the tuning set) only; see docs/EVALUATION.md.
            let score =
                (new + OLD_WEIGHT * old) / total + 0.04 * technical + COMMAND_BONUS * command + PRIOR_WEIGHT * prior + 0.05 * entity_hits
                    - 0.01 * c.order.min(10) as f32;
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        let Some((_, i)) = best else { break };
        if procedural && is_command_line(candidates[i].text) {
            commands_taken += 1;
        }
        let len = candidates[i].text.split_whitespace().count();
        if !chosen.is_empty() && words_used + len > max_words {
            break;
        }
        for (t, term) in terms.iter().enumerate() {
            covered[t] |= candidates[i].says(term) > 0.0;
        }
        words_used += len;
        chosen.push(i);
        // The best sentence often restates the question and the one after it answers ("...
        // the root_squash option, enabled by default." then "no_root_squash turns it off"):
        // the first pick is read on at once, before other picks take the room.
        if chosen.len() == 1
            && let Some(j) = read_on_from(&candidates, i)
        {
            let len = candidates[j].text.split_whitespace().count();
            if !chosen.contains(&j) && words_used + len <= max_words && chosen.len() < max_sentences {
                for (t, term) in terms.iter().enumerate() {
                    covered[t] |= candidates[j].says(term) > 0.0;
                }
                words_used += len;
                chosen.push(j);
            }
        }
    }
    // Another passage: a question in two parts often needs a second section, whose words the
    // first one already seemed to cover; the best sentence of each unused top passage.
    for rank in 0..DIVERSE_PASSAGES.min(retrieval.passages.len()) {
        if chosen.len() >= max_sentences || chosen.iter().any(|i| candidates[*i].passage == rank) {
            continue;
        }
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.passage == rank)
            .map(|(i, c)| (terms.iter().enumerate().map(|(t, term)| c.says(term) * weight[t]).sum::<f32>(), i))
            .filter(|(score, _)| *score > 0.0)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, j)) = best else { continue };
        let len = candidates[j].text.split_whitespace().count();
        if words_used + len > max_words || chosen.iter().any(|k| jaccard(&candidates[*k].words, &candidates[j].words) > 0.5) {
            continue;
        }
        words_used += len;
        chosen.push(j);
    }
    // A unit that ends with a colon announces what follows (a command, an example): it is
    // only read with the unit after it.
    let mut k = 0;
    while k < chosen.len() {
        let i = chosen[k];
        k += 1;
        if !candidates[i].text.ends_with(':') {
            continue;
        }
        let next = candidates.iter().position(|c| c.passage == candidates[i].passage && c.order == candidates[i].order + 1);
        match next {
            Some(j) if !chosen.contains(&j) => {
                words_used += candidates[j].text.split_whitespace().count();
                chosen.insert(k, j);
            }
            Some(_) => {}
            None => {
                // Nothing follows in this passage: the announcement alone says nothing.
                k -= 1;
                chosen.remove(k);
            }
        }
    }
    // Read on: the sentence after a chosen one often completes it ("For example, /dev/sr0
    // belongs to the cdrom group."), so spare room goes to those, best pick first.
    let picks = chosen.clone();
    for i in picks {
        if chosen.len() >= max_sentences {
            break;
        }
        let Some(j) = read_on_from(&candidates, i) else { continue };
        let len = candidates[j].text.split_whitespace().count();
        if chosen.contains(&j) || words_used + len > max_words {
            continue;
        }
        words_used += len;
        chosen.push(j);
    }
    let coverage = terms.iter().enumerate().filter(|(t, _)| covered[*t]).map(|(t, _)| weight[t]).sum::<f32>() / total.max(f32::EPSILON);
    let best_terms = chosen.iter().map(|i| terms.iter().filter(|t| candidates[*i].says(t) > 0.0).count()).max().unwrap_or(0);
    chosen.sort_by_key(|i| (candidates[*i].passage, candidates[*i].order));
    let sentences = chosen
        .into_iter()
        .map(|i| EvidenceSentence {
            passage: candidates[i].passage,
            order: candidates[i].order,
            text: candidates[i].text.trim().to_owned(),
        })
        .collect();
    Evidence { sentences, coverage, best_terms }
}

/// The unit after candidate `i` in its passage, when reading on to it makes sense.
fn read_on_from(candidates: &[Candidate<'_>], i: usize) -> Option<usize> {
    // What follows a command line is its output, not more of the answer; an announcement
    // (ending in a colon) has its own rule.
    if is_command_line(candidates[i].text) || candidates[i].text.ends_with(':') {
        return None;
    }
    let j = candidates.iter().position(|c| c.passage == candidates[i].passage && c.order == candidates[i].order + 1)?;
    // An announcement read on to is cut off from what it announces.
    (!candidates[j].text.ends_with(':')).then_some(j)
}

/// Below this share of the question's weight the passages do not answer it: the answer says
/// that the knowledge base does not say, and names the closest sources.
pub const MIN_COVERAGE: f32 = 0.2;

fn citation(p: &crate::engine::Passage, index: u32) -> Citation {
    Citation {
        index,
        document: p.document.clone(),
        title: p.title.clone(),
        section: p.chunk.section.last().cloned(),
        snippet: snippet(&p.chunk.text),
        score: p.score,
    }
}

/// The answer when the knowledge base does not answer the question: says so, and names the
/// closest sources so a reader can look for themselves.
fn not_found(retrieval: &Retrieval) -> Answer {
    let citations: Vec<Citation> = retrieval.passages.iter().take(2).enumerate().map(|(i, p)| citation(p, i as u32 + 1)).collect();
    if citations.is_empty() {
        return Answer { text: NOTHING_FOUND.into(), citations };
    }
    let names: Vec<String> =
        citations.iter().map(|c| format!("{} [{}]", c.section.clone().unwrap_or_else(|| c.title.clone()), c.index)).collect();
    Answer { text: format!("The knowledge base does not say. The closest sources are {}.", names.join(" and ")), citations }
}

/// What an answer says when the knowledge base holds nothing that matches at all.
pub const NOTHING_FOUND: &str = "I found nothing about this in the knowledge base.";

/// The extractive answer: the evidence sentences, each followed by the number of its source.
pub fn synthesize(question: &str, retrieval: &Retrieval) -> Answer {
    synthesize_capped(question, retrieval, MAX_SENTENCES, MAX_WORDS)
}

/// [`synthesize`] with at most `max_sentences` sentences and about `max_words` words (a spoken
/// answer is shorter than a written one).
pub fn synthesize_capped(question: &str, retrieval: &Retrieval, max_sentences: usize, max_words: usize) -> Answer {
    if retrieval.passages.is_empty() {
        return Answer { text: NOTHING_FOUND.into(), citations: Vec::new() };
    }
    // The overview walks the whole graph; a caller limited to some collections gets an answer
    // from their own passages instead (the graph's communities span every collection).
    if retrieval.broad && retrieval.collections.is_none() {
        return overview(retrieval);
    }
    let evidence = select_evidence(question, retrieval, max_sentences, max_words);
    if !evidence.answers(question_terms(question).len()) {
        return not_found(retrieval);
    }
    let mut citations: Vec<Citation> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    for sentence in &evidence.sentences {
        let p = &retrieval.passages[sentence.passage];
        let index = match citations
            .iter()
            .position(|c| c.document == p.document && c.section.as_deref() == p.chunk.section.last().map(String::as_str))
        {
            Some(i) => i,
            None => {
                citations.push(citation(p, citations.len() as u32 + 1));
                citations.len() - 1
            }
        };
        parts.push(format!("{} [{}]", sentence.text, index + 1));
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

/// What the local LLM is given to answer from: instructions with the numbered evidence
/// (system message) and the question (user message), the citations those numbers refer to
/// (so the caller can show sources even when the model cites badly), and the evidence text
/// the answer is verified against.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundedPrompt {
    pub system: String,
    pub user: String,
    pub citations: Vec<Citation>,
    /// The evidence of each citation, in citation order: all the model may say.
    pub evidence: Vec<String>,
}

/// Instructions for grounded answers, followed by the evidence. Short and plain on purpose:
/// small models follow short rules best, and every token here is prompt processing time on
/// a small CPU.
pub const GROUNDED_SYSTEM_PROMPT: &str = "You answer questions using only the numbered facts below. \
Answer in at most three short sentences. Copy commands, file names and options exactly as written. \
Cite the fact number like [1]. If the facts do not answer the question, say that the knowledge base does not say.";

/// Builds the LLM prompt for `question` from the evidence sentences of the retrieval (at most
/// `max_sentences` sentences and `max_words` words): the model sees what answers the
/// question, not whole passages, which keeps the prompt short and the answer on topic.
pub fn grounded_prompt(question: &str, retrieval: &Retrieval, max_sentences: usize, max_words: usize) -> GroundedPrompt {
    let evidence = select_evidence(question, retrieval, max_sentences, max_words);
    let mut citations: Vec<Citation> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut ranks: Vec<usize> = Vec::new();
    if evidence.answers(question_terms(question).len()) {
        for sentence in &evidence.sentences {
            match ranks.iter().position(|r| *r == sentence.passage) {
                Some(i) => {
                    texts[i].push(' ');
                    texts[i].push_str(&sentence.text);
                }
                None => {
                    ranks.push(sentence.passage);
                    texts.push(sentence.text.clone());
                    citations.push(citation(&retrieval.passages[sentence.passage], citations.len() as u32 + 1));
                }
            }
        }
    }
    let mut context = String::new();
    for (c, text) in citations.iter().zip(&texts) {
        let heading = c.section.clone().unwrap_or_else(|| c.title.clone());
        context.push_str(&format!("[{}] ({heading}) {text}\n", c.index));
    }
    let system = if citations.is_empty() {
        format!("{GROUNDED_SYSTEM_PROMPT}\n\nThere are no facts: say that the knowledge base does not say.")
    } else {
        format!("{GROUNDED_SYSTEM_PROMPT}\n\n{}", context.trim_end())
    };
    // The model sees each heading with its facts and may name it.
    let evidence = citations.iter().zip(texts).map(|(c, text)| format!("{}\n{text}", c.section.clone().unwrap_or_default())).collect();
    GroundedPrompt { system, user: question.trim().to_string(), citations, evidence }
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
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Passage, Snapshot};
    use crate::store::ChunkRecord;

    fn retrieval(passages: &[(&str, &str)]) -> Retrieval {
        let passages = passages
            .iter()
            .enumerate()
            .map(|(i, (section, text))| Passage {
                chunk: Arc::new(ChunkRecord {
                    id: i as u64,
                    doc_id: "d".into(),
                    ordinal: i as u32,
                    section: vec![(*section).to_owned()],
                    text: (*text).to_owned(),
                    code_terms: Vec::new(),
                }),
                document: "handbook.html".into(),
                title: "Handbook".into(),
                score: 1.0 / (i as f32 + 1.0),
                bm25_rank: Some(i + 1),
                graph_rank: None,
                dense_rank: None,
            })
            .collect();
        Retrieval { passages, seeds: Vec::new(), expanded: 0, broad: false, snapshot: Arc::new(Snapshot::default()), collections: None }
    }

    const JOURNAL: &str = "If the messages are not enough to diagnose the problem, check the logs gathered by journald \
        about that service. The messages can be displayed later on, with a little help from the journalctl command. \
        Most of the time, it will be used with a service identifier:\n# journalctl -u ssh.service\n\
        -- Logs begin at Tue 2015-03-31 10:08:49 CEST. --\nMar 31 10:08:55 mirtuel sshd[430]: Server listening on 0.0.0.0 port 22.";

    #[test]
    fn a_how_question_gets_the_command_line_and_not_its_output() {
        let r = retrieval(&[("9.1.1. The systemd init system", JOURNAL)]);
        let answer = synthesize("How do I read the logs of a systemd service?", &r);
        assert!(answer.text.contains("# journalctl -u ssh.service [1]"), "{}", answer.text);
        assert!(!answer.text.contains("Server listening"), "the listing's output is not the answer: {}", answer.text);
        assert_eq!(answer.citations.len(), 1);
    }

    #[test]
    fn the_sentence_after_the_best_one_is_read_before_other_passages_fill_the_answer() {
        // The best sentence restates the question; the one after it holds the answer
        // (no_root_squash) but shares no word with it, and two other passages share more.
        let r = retrieval(&[
            (
                "11.4.2. Configuring the NFS Server",
                "By default, the NFS server treats requests from the root user of a client machine as requests from the \
                 nobody user. Trusted setups set no_root_squash instead, at their own risk.",
            ),
            ("11.4.1. Securing NFS", "Each export of the NFS server lists the client machines allowed and their options."),
            ("11.4.3. NFS Client", "What happens when an option is turned on or off is written in the exports(5) manual page."),
        ]);
        let question = "On an NFS server, what happens by default to requests from the root user of a client machine, and which export option turns that off?";
        let answer = synthesize_capped(question, &r, 3, 120);
        assert!(answer.text.contains("no_root_squash"), "{}", answer.text);
        assert!(answer.text.contains("nobody"), "{}", answer.text);
    }

    #[test]
    fn a_question_the_passages_do_not_answer_gets_the_closest_sources() {
        let r = retrieval(&[
            ("1.1. Associations", "Local associations support Debian, for example https://france.debian.net/ in France."),
            ("6.1.4. Mirrors", "Mirrors are managed by content delivery networks all over the world."),
        ]);
        let answer = synthesize("What is the capital of France?", &r);
        assert!(answer.text.starts_with("The knowledge base does not say."), "{}", answer.text);
        assert!(answer.text.contains("1.1. Associations [1]"), "{}", answer.text);
        assert_eq!(answer.citations.len(), 2);
        // The same passages do answer a question about them.
        let answer = synthesize("Which association supports Debian in France?", &r);
        assert!(answer.text.contains("france.debian.net"), "{}", answer.text);
    }

    #[test]
    fn chatter_is_left_out_of_the_terms() {
        assert_eq!(question_terms("Hi, quick question: how do I read the logs?"), vec!["read", "log"]);
        assert_eq!(stem("configured"), stem("configuration"));
        assert_eq!(stem("messages"), stem("message"));
    }

    #[test]
    fn long_sentences_keep_the_window_with_the_question_terms() {
        let filler = "word ".repeat(80);
        let s = format!("{filler}journalctl -u ssh.service shows the logs {filler}");
        let w = best_window(&s, &["journalctl".to_owned(), "log".to_owned()]);
        assert!(w.contains("journalctl -u ssh.service"), "{w}");
        assert_eq!(w.split_whitespace().count(), WINDOW_WORDS);
    }

    #[test]
    fn cited_indices_keep_order_and_drop_invented_numbers() {
        assert_eq!(cited_indices("A [2]. B [1, 2]. C [7]. D [x]", 3), vec![2, 1]);
        assert_eq!(cited_indices("no citations", 3), Vec::<u32>::new());
        assert_eq!(cited_indices("unclosed [1", 3), Vec::<u32>::new());
    }
}
