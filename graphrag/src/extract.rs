//! Knowledge-graph extraction without an LLM.
//!
//! Entities come from four cheap, explainable signals: inline code spans (commands, files),
//! acronyms (`APT`, `DHCP`), capitalised spans (`Raspberry Pi 5`), and key terms (recurring
//! noun-phrase-like n-grams and frequent content words, scored within the document).
//! Aliases are merged from `Long Form (ACR)` patterns and from suffixes of multi-word names
//! (`Raspberry Pi 5` / `Pi 5`). Relations are co-occurrence counts within sentences and chunks
//! (weighted later with NPMI over the whole corpus) plus typed relations from a few reliable
//! patterns (`X is a Y`, `X requires Y`, `X contains Y`, ...) between adjacent mentions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::text::{fold_plural, is_stopword, sentences};

/// One chunk handed to the extractor.
#[derive(Debug, Clone, Copy)]
pub struct ExtractChunk<'a> {
    pub id: u64,
    pub text: &'a str,
    pub code_terms: &'a [String],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    IsA,
    Requires,
    Contains,
    DependsOn,
    PartOf,
    Provides,
    Uses,
    Replaces,
    BasedOn,
}

impl RelationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RelationKind::IsA => "is_a",
            RelationKind::Requires => "requires",
            RelationKind::Contains => "contains",
            RelationKind::DependsOn => "depends_on",
            RelationKind::PartOf => "part_of",
            RelationKind::Provides => "provides",
            RelationKind::Uses => "uses",
            RelationKind::Replaces => "replaces",
            RelationKind::BasedOn => "based_on",
        }
    }

    /// The phrases between two mentions that state the relation.
    fn from_between(between: &str) -> Option<Self> {
        Some(match between {
            "is a" | "is an" | "are" | "is a kind of" | "is a type of" => RelationKind::IsA,
            "requires" | "require" | "needs" => RelationKind::Requires,
            "contains" | "contain" | "includes" | "include" => RelationKind::Contains,
            "depends on" | "depend on" => RelationKind::DependsOn,
            "is part of" | "are part of" | "belongs to" => RelationKind::PartOf,
            "provides" | "provide" => RelationKind::Provides,
            "uses" | "use" | "relies on" => RelationKind::Uses,
            "replaces" | "replaced" | "supersedes" => RelationKind::Replaces,
            "is based on" | "are based on" => RelationKind::BasedOn,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    pub from: String,
    pub kind: RelationKind,
    pub to: String,
    pub chunk: u64,
}

/// Everything one document contributes to the knowledge graph. Stored with the document, so
/// deleting the document removes exactly its contribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocGraph {
    /// Entity key -> the surface form used most in this document.
    pub names: BTreeMap<String, String>,
    /// (entity key, chunk id, mentions in that chunk).
    pub mentions: Vec<(String, u64, u32)>,
    /// (key a, key b) with a < b: co-occurrences in sentences and in chunks.
    pub pairs: Vec<(String, String, u32, u32)>,
    pub relations: Vec<Relation>,
    /// (alias key, canonical key).
    pub aliases: Vec<(String, String)>,
    /// Keys seen in this document only as a capitalised sentence-initial word: entities only
    /// if another document names them mid-sentence ("Dpkg reads ..." vs "Then ...").
    #[serde(default)]
    pub weak: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    Acronym,
    Capitalised,
    /// A capitalised word that starts a sentence: an entity only if it also appears
    /// capitalised elsewhere ("Samba" yes, "Then" no).
    InitialCapital,
    KeyPhrase,
    KeyWord,
}

#[derive(Debug, Clone)]
struct Mention {
    key: String,
    surface: String,
    start: usize,
    end: usize,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

/// Most sentences list few entities; beyond this many, pairs say little and cost a lot.
const MAX_SENTENCE_ENTITIES: usize = 12;
const MAX_CHUNK_ENTITIES: usize = 30;
const MAX_KEYWORDS_PER_DOC: usize = 30;

/// Words too generic to be entities on their own in technical prose.
const GENERIC: &[&str] = &[
    "able",
    "case",
    "cases",
    "example",
    "file",
    "files",
    "first",
    "following",
    "information",
    "instance",
    "line",
    "lines",
    "many",
    "means",
    "name",
    "names",
    "new",
    "number",
    "order",
    "part",
    "point",
    "possible",
    "program",
    "section",
    "set",
    "several",
    "simply",
    "system",
    "thing",
    "time",
    "times",
    "two",
    "type",
    "user",
    "users",
    "value",
    "way",
    "work",
    "chapter",
    "note",
];

fn tokens(sentence: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    let is_tok = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '\'' | '~');
    for (i, c) in sentence.char_indices().chain(std::iter::once((sentence.len(), ' '))) {
        match (is_tok(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let raw = &sentence[s..i];
                let trimmed_start = raw.trim_start_matches(['\'', '-', '.', '~']);
                let t = trimmed_start.trim_end_matches(['.', '\'', '-', '/', '+']);
                if t.chars().any(char::is_alphanumeric) {
                    let offset = s + (raw.len() - trimmed_start.len());
                    out.push(Token { text: t, start: offset, end: offset + t.len() });
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn is_acronym(t: &str) -> bool {
    let upper = t.chars().filter(char::is_ascii_uppercase).count();
    let lower = t.chars().filter(char::is_ascii_lowercase).count();
    (2..=8).contains(&t.len()) && upper >= 2 && lower <= 1 && t.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_capitalised(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(char::is_uppercase) && chars.any(char::is_lowercase)
}

/// The entity key: lowercase, single spaces, no possessive.
pub fn normalize(name: &str) -> String {
    let lower = name.to_lowercase();
    let lower = lower.trim().trim_end_matches(['.', ',', ':', ';']);
    let lower = lower.strip_suffix("'s").unwrap_or(lower);
    lower.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn phrase_key(words: &[&str]) -> String {
    let mut parts: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    if let Some(last) = parts.last_mut() {
        *last = fold_plural(last);
    }
    parts.join(" ")
}

/// Candidates of one sentence, before document-level filtering.
fn sentence_candidates(sentence: &str, code_terms: &[String]) -> Vec<Mention> {
    let toks = tokens(sentence);
    let mut out = Vec::new();
    for term in code_terms {
        if term.split_whitespace().count() > 4 || term.len() < 2 || !term.chars().any(char::is_alphabetic) {
            continue;
        }
        if let Some(start) = sentence.find(term.as_str()) {
            out.push(Mention { key: normalize(term), surface: term.clone(), start, end: start + term.len(), kind: Kind::Code });
        }
    }
    // Capitalised spans and acronyms.
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text;
        if is_acronym(t) {
            out.push(Mention { key: normalize(t), surface: t.to_owned(), start: toks[i].start, end: toks[i].end, kind: Kind::Acronym });
            i += 1;
            continue;
        }
        if is_capitalised(t) {
            let mut j = i + 1;
            while j < toks.len() {
                let n = toks[j].text;
                // A span is one run of words: "(APT)" after "Tool" starts a new one.
                if sentence[toks[j - 1].end..toks[j].start] != *" " {
                    break;
                }
                let joins_next = n == "of" && j + 1 < toks.len() && is_capitalised(toks[j + 1].text);
                if is_capitalised(n) || is_acronym(n) || (n.chars().all(|c| c.is_ascii_digit() || c == '.') && j > i) || joins_next {
                    j += 1;
                } else {
                    break;
                }
                if j - i >= 5 {
                    break;
                }
            }
            let mut first = i;
            // Drop leading function words ("The Debian Project") and a lone sentence-initial word.
            while first < j && is_stopword(&toks[first].text.to_lowercase()) {
                first += 1;
            }
            if first < j {
                let lone_initial = j - first == 1 && toks[first].start == 0;
                let surface = &sentence[toks[first].start..toks[j - 1].end];
                if !GENERIC.contains(&normalize(surface).as_str()) {
                    out.push(Mention {
                        key: normalize(surface),
                        surface: surface.to_owned(),
                        start: toks[first].start,
                        end: toks[j - 1].end,
                        kind: if lone_initial { Kind::InitialCapital } else { Kind::Capitalised },
                    });
                }
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    // Key-term candidates: runs of lowercase content words.
    // A sentence-initial capital ("Security updates ...") does not stop a key term.
    let lowered: Vec<String> = toks.iter().map(|t| if t.start == 0 { t.text.to_lowercase() } else { t.text.to_owned() }).collect();
    let content = |i: usize| {
        let w = lowered[i].as_str();
        w.len() >= 3 && w.chars().all(|c| c.is_lowercase() || c == '-') && !is_stopword(w) && !GENERIC.contains(&w)
    };
    for n in [3usize, 2] {
        for start in 0..toks.len().saturating_sub(n - 1) {
            if (start..start + n).all(content) {
                let words: Vec<&str> = lowered[start..start + n].iter().map(String::as_str).collect();
                out.push(Mention {
                    key: phrase_key(&words),
                    surface: sentence[toks[start].start..toks[start + n - 1].end].to_owned(),
                    start: toks[start].start,
                    end: toks[start + n - 1].end,
                    kind: Kind::KeyPhrase,
                });
            }
        }
    }
    for (i, t) in toks.iter().enumerate() {
        let w = lowered[i].as_str();
        if content(i) && w.len() >= 4 && w.chars().all(char::is_alphabetic) {
            out.push(Mention { key: fold_plural(w), surface: w.to_owned(), start: t.start, end: t.end, kind: Kind::KeyWord });
        }
    }
    out
}

/// `Advanced Package Tool (APT)`: the acronym and the long form it abbreviates.
fn acronym_definitions(sentence: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = sentence;
    let mut offset = 0;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')') else { break };
        let inner = rest[open + 1..open + close].trim();
        if is_acronym(inner) {
            let before: Vec<&str> = sentence[..offset + open].split_whitespace().collect();
            let letters: Vec<char> = inner.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).collect();
            // Walk back over words, skipping connectors, until the initials spell the acronym.
            let mut initials = Vec::new();
            let mut taken = 0;
            for w in before.iter().rev() {
                taken += 1;
                let lw = w.to_lowercase();
                if matches!(lw.as_str(), "of" | "and" | "for" | "the" | "to" | "a") {
                    continue;
                }
                initials.push(lw.chars().next().unwrap_or(' '));
                if initials.len() == letters.len() || taken > letters.len() + 3 {
                    break;
                }
            }
            initials.reverse();
            if initials == letters {
                let long = before[before.len() - taken..].join(" ");
                out.push((normalize(inner), normalize(&long)));
            }
        }
        offset += open + close + 1;
        rest = &sentence[offset..];
    }
    out
}

/// Extracts one document's entities, co-occurrences, relations and aliases.
pub fn extract(chunks: &[ExtractChunk<'_>]) -> DocGraph {
    // Pass 1: candidates per sentence, and document-level counts for key terms.
    let mut per_sentence: Vec<(u64, &str, Vec<Mention>)> = Vec::new();
    let mut phrase_counts: HashMap<String, u32> = HashMap::new();
    let mut word_counts: HashMap<String, u32> = HashMap::new();
    let mut strong_keys: BTreeSet<String> = BTreeSet::new();
    let mut definitions: Vec<(String, String, u64)> = Vec::new();
    for chunk in chunks {
        for sentence in sentences(chunk.text) {
            let cands = sentence_candidates(sentence, chunk.code_terms);
            for m in &cands {
                match m.kind {
                    Kind::KeyPhrase => *phrase_counts.entry(m.key.clone()).or_default() += 1,
                    Kind::KeyWord => *word_counts.entry(m.key.clone()).or_default() += 1,
                    Kind::InitialCapital => {}
                    _ => {
                        strong_keys.insert(m.key.clone());
                    }
                }
            }
            for (acr, long) in acronym_definitions(sentence) {
                definitions.push((acr, long, chunk.id));
            }
            per_sentence.push((chunk.id, sentence, cands));
        }
    }
    let mut keywords: Vec<(&String, &u32)> = word_counts.iter().filter(|(_, c)| **c >= 3).collect();
    keywords.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let keywords: BTreeSet<&str> = keywords.into_iter().take(MAX_KEYWORDS_PER_DOC).map(|(k, _)| k.as_str()).collect();
    let keep = |m: &Mention| match m.kind {
        Kind::Code | Kind::Acronym | Kind::Capitalised => true,
        Kind::KeyPhrase => phrase_counts.get(&m.key).is_some_and(|c| *c >= 2) || strong_keys.contains(&m.key),
        Kind::KeyWord => keywords.contains(m.key.as_str()) || strong_keys.contains(&m.key),
        Kind::InitialCapital => !is_stopword(&m.key) && m.key.len() >= 3,
    };
    let mut weak: BTreeSet<String> = BTreeSet::new();

    // Pass 2: mentions, pairs, relations.
    let mut surfaces: HashMap<String, HashMap<String, u32>> = HashMap::new();
    let mut mentions: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    let mut chunk_keys: BTreeMap<u64, HashMap<String, u32>> = BTreeMap::new();
    let mut relations: BTreeSet<(String, RelationKind, String, u64)> = BTreeSet::new();
    for (chunk_id, sentence, cands) in &per_sentence {
        let mut kept: Vec<&Mention> = cands.iter().filter(|m| keep(m) && !m.key.is_empty()).collect();
        kept.sort_by_key(|m| (m.start, std::cmp::Reverse(m.end)));
        let mut seen: Vec<&str> = Vec::new();
        for m in &kept {
            if m.kind == Kind::InitialCapital && !strong_keys.contains(&m.key) && !phrase_counts.contains_key(&m.key) {
                weak.insert(m.key.clone());
            }
            *surfaces.entry(m.key.clone()).or_default().entry(m.surface.clone()).or_default() += 1;
            *mentions.entry((m.key.clone(), *chunk_id)).or_default() += 1;
            *chunk_keys.entry(*chunk_id).or_default().entry(m.key.clone()).or_default() += 1;
            if !seen.contains(&m.key.as_str()) {
                seen.push(&m.key);
            }
        }
        seen.truncate(MAX_SENTENCE_ENTITIES);
        for (i, a) in seen.iter().enumerate() {
            for b in &seen[i + 1..] {
                let key = if a < b { ((*a).to_owned(), (*b).to_owned()) } else { ((*b).to_owned(), (*a).to_owned()) };
                pairs.entry(key).or_default().0 += 1;
            }
        }
        // Typed relations between adjacent, non-overlapping mentions.
        let strong: Vec<&&Mention> = kept.iter().filter(|m| m.kind != Kind::KeyWord).collect();
        for w in strong.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.start <= a.end || a.key == b.key {
                continue;
            }
            let between = sentence[a.end..b.start].trim().to_lowercase();
            if let Some(kind) = RelationKind::from_between(&between) {
                relations.insert((a.key.clone(), kind, b.key.clone(), *chunk_id));
            }
        }
    }
    for keys in chunk_keys.values() {
        let mut ranked: Vec<(&String, &u32)> = keys.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<&String> = ranked.into_iter().take(MAX_CHUNK_ENTITIES).map(|(k, _)| k).collect();
        for (i, a) in top.iter().enumerate() {
            for b in &top[i + 1..] {
                let key = if a < b { ((*a).clone(), (*b).clone()) } else { ((*b).clone(), (*a).clone()) };
                pairs.entry(key).or_default().1 += 1;
            }
        }
    }

    let mut names: BTreeMap<String, String> = surfaces
        .into_iter()
        .map(|(key, forms)| {
            let best = forms.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(s, _)| s).unwrap_or_default();
            (key, best)
        })
        .collect();

    // Aliases: acronym definitions, and suffixes of multi-word names that are entities too.
    let mut aliases: BTreeSet<(String, String)> = BTreeSet::new();
    for (acr, long, chunk) in definitions {
        if acr != long && names.contains_key(&acr) {
            names.entry(long.clone()).or_insert_with(|| long.clone());
            *mentions.entry((long.clone(), chunk)).or_default() += 1;
            aliases.insert((long, acr));
        }
    }
    let keys: Vec<String> = names.keys().cloned().collect();
    for key in &keys {
        let words: Vec<&str> = key.split(' ').collect();
        if words.len() < 3 {
            continue;
        }
        for cut in 1..words.len() - 1 {
            let suffix = words[cut..].join(" ");
            let specific = words.len() - cut >= 2 || suffix.chars().any(|c| c.is_ascii_digit());
            if specific && names.contains_key(&suffix) && !aliases.iter().any(|(a, _)| a == key) {
                aliases.insert((suffix, key.clone()));
            }
        }
    }

    DocGraph {
        names,
        mentions: mentions.into_iter().map(|((k, c), n)| (k, c, n)).collect(),
        pairs: pairs.into_iter().map(|((a, b), (s, c))| (a, b, s, c)).collect(),
        relations: relations.into_iter().map(|(from, kind, to, chunk)| Relation { from, kind, to, chunk }).collect(),
        aliases: aliases.into_iter().collect(),
        weak,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(texts: &[&str], code: &[&str]) -> DocGraph {
        let code: Vec<String> = code.iter().map(|s| (*s).to_owned()).collect();
        let chunks: Vec<ExtractChunk<'_>> =
            texts.iter().enumerate().map(|(i, t)| ExtractChunk { id: i as u64, text: t, code_terms: &code }).collect();
        extract(&chunks)
    }

    #[test]
    fn entities_from_code_acronyms_capitals_and_key_terms() {
        let g = run(
            &[
                "The Advanced Package Tool (APT) is a front end. APT requires dpkg to install packages.",
                "Security updates come from the security mirror. Apply security updates with apt-get daily.",
                "The Raspberry Pi 5 needs a power supply. The Pi 5 runs Debian.",
            ],
            &["dpkg", "apt-get"],
        );
        for key in ["apt", "advanced package tool", "dpkg", "apt-get", "raspberry pi 5", "pi 5", "security update", "debian"] {
            assert!(g.names.contains_key(key), "missing {key}: {:?}", g.names.keys().collect::<Vec<_>>());
        }
        assert!(!g.names.contains_key("the"), "function words are not entities");
        assert!(g.aliases.contains(&("advanced package tool".into(), "apt".into())), "{:?}", g.aliases);
        assert!(g.aliases.contains(&("pi 5".into(), "raspberry pi 5".into())), "{:?}", g.aliases);
        assert!(g.relations.iter().any(|r| r.from == "apt" && r.kind == RelationKind::Requires && r.to == "dpkg"), "{:?}", g.relations);
        assert!(g.pairs.iter().any(|(a, b, s, _)| a == "apt" && b == "dpkg" && *s >= 1));
        assert!(g.mentions.iter().any(|(k, c, _)| k == "raspberry pi 5" && *c == 2));
    }

    #[test]
    fn is_a_relation_and_sentence_initial_words() {
        let g = run(&["Then Samba is a server. Samba provides SMB shares. The file server is Samba."], &[]);
        assert!(!g.names.contains_key("then"));
        assert!(g.relations.iter().any(|r| r.from == "samba" && r.kind == RelationKind::Provides && r.to == "smb"), "{:?}", g.relations);
    }
}
