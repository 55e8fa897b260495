//! Checks an answer against the passages it was written from, sentence by sentence, before
//! it is sent or spoken.
//!
//! Two tests, both cheap enough to run on every sentence of a streamed answer:
//! - **technical tokens** (paths, options, config keys, numbers, file names, shell operators,
//!   code spans): each must occur in the evidence as written. A small model that invents
//!   `/var/log/journalctl` or `dhcpd -D` fails here, whatever the rest of the sentence says.
//! - **content words**: nearly every content word of the sentence must occur in the evidence
//!   or the question (matched on a short prefix, so `configuring` finds `configuration`). A
//!   sentence about `ipconfig` on Windows fails here.
//!
//! A sentence that fails is dropped, never repaired: what is left is what the passages say.

use std::collections::HashSet;

use crate::text::{is_stopword, match_key as key, words};

/// The text an answer may draw on: the passages (or evidence sentences) it was given, and
/// the question (whose own words a sentence may repeat).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Whitespace-collapsed passage text, for exact matches of technical tokens.
    text: String,
    /// The same, lowercased, for case-insensitive matches of words.
    lower: String,
    /// Content-word keys of the passages and the question.
    keys: HashSet<String>,
    /// Content-word keys of each sentence (and listing line) of the passages.
    sentence_keys: Vec<HashSet<String>>,
    /// Content-word keys of the question.
    question_keys: HashSet<String>,
}

/// Why a sentence was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsupported {
    /// A technical token found nowhere in the evidence.
    Token(String),
    /// Content words found nowhere in the evidence or the question.
    Words(Vec<String>),
    /// Words of several passage sentences joined into a claim none of them makes ("opens the
    /// vents every morning" from "opens the vents at 28 degrees" and "waters every morning").
    Mixed,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsupported::Token(t) => write!(f, "`{t}` is not in the passages"),
            Unsupported::Words(w) => write!(f, "{} not in the passages", w.join(", ")),
            Unsupported::Mixed => f.write_str("no passage sentence says this; it mixes several"),
        }
    }
}

/// Content words a sentence may add beyond the evidence: connectives and the everyday verbs
/// of instructions ("run", "check") that carry no fact of their own. Sorted.
const GLUE: &[&str] = &[
    "able",
    "add",
    "already",
    "another",
    "answer",
    "around",
    "ask",
    "available",
    "based",
    "basic",
    "best",
    "case",
    "cases",
    "change",
    "check",
    "command",
    "commands",
    "correct",
    "default",
    "different",
    "directly",
    "easy",
    "enter",
    "example",
    "file",
    "files",
    "find",
    "first",
    "following",
    "found",
    "general",
    "help",
    "important",
    "information",
    "instead",
    "keep",
    "know",
    "last",
    "later",
    "line",
    "look",
    "make",
    "makes",
    "many",
    "mean",
    "means",
    "mentioned",
    "method",
    "new",
    "next",
    "note",
    "number",
    "option",
    "options",
    "order",
    "part",
    "passage",
    "passages",
    "possible",
    "provide",
    "provides",
    "question",
    "read",
    "really",
    "related",
    "run",
    "running",
    "second",
    "see",
    "set",
    "several",
    "show",
    "shows",
    "simple",
    "simply",
    "specific",
    "start",
    "step",
    "steps",
    "sure",
    "system",
    "take",
    "tell",
    "thing",
    "things",
    "time",
    "tool",
    "try",
    "type",
    "usually",
    "want",
    "way",
    "ways",
    "work",
    "works",
    "yes",
];

/// Sentences with at least this many content words must be made by one passage sentence.
const MIN_CLAIM_WORDS: usize = 4;
/// The share of such a sentence one passage sentence must make (the question's words count a quarter).
const SINGLE_SOURCE_SHARE: f32 = 0.7;

/// Content-word keys of `text`: no stop-words, no glue, no words of two letters.
fn content_keys(text: &str) -> impl Iterator<Item = String> + '_ {
    words(text)
        .filter(|w| w.len() > 2 && !is_stopword(w) && GLUE.binary_search(&w.as_str()).is_err() && w.chars().any(char::is_alphabetic))
        .map(|w| key(&w))
}

/// How many content words of a sentence may be missing from the evidence: one in a short
/// sentence, a fifth of a long one (small models rephrase; they must not add facts).
fn allowed_novel(content_words: usize) -> usize {
    (content_words / 5).max(1)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Evidence {
    pub fn new<'a>(passages: impl IntoIterator<Item = &'a str>, question: &str) -> Self {
        let mut text = String::new();
        for p in passages {
            if !text.is_empty() {
                text.push_str(" \n ");
            }
            text.push_str(&collapse(p));
        }
        let keys = words(&text).chain(words(question)).map(|w| key(&w)).collect();
        let lower = text.to_lowercase();
        let sentence_keys = text
            .split(" \n ")
            .flat_map(crate::text::sentences)
            .map(|s| content_keys(s).collect())
            .filter(|k: &HashSet<String>| !k.is_empty())
            .collect();
        let question_keys = content_keys(question).collect();
        Self { text, lower, keys, sentence_keys, question_keys }
    }

    /// How much of a claim one passage sentence makes: its content words found in that
    /// sentence, the question's own words counting a quarter (the question sets the topic, the
    /// passage must supply the rest). The best sentence's share.
    fn single_source_share(&self, claim: &[String]) -> f32 {
        let mut best = 0.0f32;
        for sentence in &self.sentence_keys {
            let found: f32 = claim
                .iter()
                .map(|k| {
                    if sentence.contains(k) {
                        1.0
                    } else if self.question_keys.contains(k) {
                        0.25
                    } else {
                        0.0
                    }
                })
                .sum();
            best = best.max(found / claim.len().max(1) as f32);
        }
        best
    }

    /// Whether `token` occurs in the passages: exactly for most tokens, case-insensitively
    /// for plain words in capitals (`APT` and `apt` are one name).
    pub fn contains_token(&self, token: &str) -> bool {
        if occurs_bounded(&self.text, token) {
            return true;
        }
        let plain = token.chars().all(|c| c.is_alphabetic());
        plain && occurs_bounded(&self.lower, &token.to_lowercase())
    }

    /// Whether `text` occurs in the passages as written (whitespace collapsed): the test for
    /// a line of a code listing.
    pub fn contains_text(&self, text: &str) -> bool {
        let text = collapse(text);
        !text.is_empty() && self.text.contains(&text)
    }

    /// Whether a line of a code listing is in the passages as written (its shell prompt
    /// aside): a model writing a listing of its own is the worst kind of invention.
    pub fn holds_listing_line(&self, line: &str) -> bool {
        self.contains_text(line.trim().trim_start_matches("$ ").trim_start_matches("# "))
    }

    /// The first reason `sentence` is not supported, or `None` when it is.
    pub fn check(&self, sentence: &str) -> Option<Unsupported> {
        let body = strip_citations(sentence);
        for token in technical_tokens(&body) {
            if !self.contains_token(&token) {
                return Some(Unsupported::Token(token));
            }
        }
        let content: Vec<String> = words(&body).filter(|w| w.len() > 2 && !is_stopword(w) && w.chars().any(char::is_alphabetic)).collect();
        let novel: Vec<String> =
            content.iter().filter(|w| !self.keys.contains(&key(w)) && GLUE.binary_search(&w.as_str()).is_err()).cloned().collect();
        if novel.len() > allowed_novel(content.len()) {
            return Some(Unsupported::Words(novel));
        }
        // A claim of some length must come from one sentence of the passages, not from words
        // of several put together.
        let claim: Vec<String> = content_keys(&body).collect();
        if claim.len() >= MIN_CLAIM_WORDS && self.single_source_share(&claim) < SINGLE_SOURCE_SHARE {
            return Some(Unsupported::Mixed);
        }
        None
    }

    /// The technical tokens of `answer` that the evidence does not hold (the evaluation's
    /// "unsupported technical tokens"), with how many technical tokens there were.
    pub fn unsupported_tokens(&self, answer: &str) -> (Vec<String>, usize) {
        let tokens = technical_tokens(&strip_citations(answer));
        let total = tokens.len();
        (tokens.into_iter().filter(|t| !self.contains_token(t)).collect(), total)
    }
}

/// Whether `token` occurs in `text` as a whole token: `-c` is not in `--contents`, `22` is
/// not in `2022`, but `/etc/fstab` is in `(/etc/fstab)`.
fn occurs_bounded(text: &str, token: &str) -> bool {
    let part_of_token = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | '.' | '=' | '@');
    text.match_indices(token).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        // A trailing dot or colon ends a sentence, not the token.
        let after_ok = match after {
            None => true,
            Some('.' | ':') => text[i + m.len() + 1..].chars().next().is_none_or(|c| !c.is_alphanumeric()),
            Some(c) => !part_of_token(c),
        };
        !before.is_some_and(part_of_token) && after_ok
    })
}

/// Whether `text` has a content word beyond function words and instruction glue: "Here's
/// how you can do it:" and "You can use the following command:" do not.
pub fn says_something(text: &str) -> bool {
    content_keys(&strip_citations(text)).next().is_some()
}

/// `text` without `[1]`, `[2, 3]` citation markers.
pub fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        let after = &rest[start + 1..];
        match after.find(']') {
            Some(end) if !after[..end].is_empty() && after[..end].chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') => {
                out.push_str(&rest[..start]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Punctuation that wraps a token in prose, never part of it.
fn trim_prose(word: &str) -> &str {
    word.trim_matches(|c: char| matches!(c, ',' | ';' | ':' | '(' | ')' | '"' | '\'' | '`' | '“' | '”' | '‘' | '’' | '*' | '!' | '?'))
        .trim_end_matches('.')
        .trim_end_matches([',', ';', ':', ')', '"', '\'', '`'])
}

/// The tokens of `text` that name something exactly: paths, URLs, options, assignments,
/// file names, config keys, identifiers, numbers, names in capitals, shell operators, and
/// every word of an inline code span. Prose words are not technical tokens.
pub fn technical_tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    };
    // Inline code: every word in backticks is technical, whatever it looks like.
    for part in text.split('`').skip(1).step_by(2) {
        for w in part.split_whitespace() {
            push(w);
        }
    }
    let prose: String = text.split('`').enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, p)| p).collect::<Vec<_>>().join(" ");
    for raw in prose.split_whitespace() {
        if matches!(raw, "|" | ">" | ">>" | "<" | "&&" | "||" | "2>" | "2>&1" | "$" | "#") {
            push(raw);
            continue;
        }
        let w = trim_prose(raw);
        if is_technical(w) {
            push(w);
        }
    }
    out
}

fn is_technical(w: &str) -> bool {
    if w.len() < 2 || matches!(w.to_ascii_lowercase().as_str(), "e.g" | "i.e" | "etc" | "and/or" | "vs") {
        return false;
    }
    let has_alnum = w.chars().any(char::is_alphanumeric);
    if !has_alnum {
        return false;
    }
    let inner = |c: char| {
        let t = w.trim_matches(c);
        t.contains(c)
    };
    // Paths and URLs, options, assignments, identifiers, file names and versions.
    if w.starts_with('/') || w.starts_with("~/") || w.starts_with("./") || w.contains("://") || inner('/') {
        return true;
    }
    if w.starts_with('-') && w[1..].starts_with(|c: char| c.is_alphanumeric() || c == '-') {
        return true;
    }
    if w.contains('=') || inner('_') || inner('.') || w.contains('@') || inner(':') {
        return true;
    }
    if w.chars().any(|c| c.is_ascii_digit()) {
        return true;
    }
    // Names in capitals (PRUNEDPATHS, APT) and inner capitals (NetworkManager); a capitalised
    // first letter alone is just the start of a sentence or a name.
    let letters: Vec<char> = w.chars().filter(|c| c.is_alphabetic()).collect();
    let upper = letters.iter().filter(|c| c.is_uppercase()).count();
    if letters.len() >= 2 && upper == letters.len() {
        return true;
    }
    upper >= 2 && w.chars().skip(1).any(char::is_uppercase) && w.chars().any(char::is_lowercase)
}

/// Degeneration: the newest sentence repeats an earlier one (most of its words), or repeats
/// an 8-word run of the answer so far.
pub fn repeats(earlier: &[String], sentence: &str) -> bool {
    let new: Vec<String> = words(strip_citations(sentence).as_str()).collect();
    if new.len() < 3 {
        return false;
    }
    let content = |ws: &[String]| -> HashSet<String> { ws.iter().filter(|w| !is_stopword(w)).cloned().collect() };
    let new_set = content(&new);
    for old in earlier {
        let old_words: Vec<String> = words(strip_citations(old).as_str()).collect();
        let old_set = content(&old_words);
        let smaller = new_set.len().min(old_set.len());
        let shared = new_set.intersection(&old_set).count();
        if smaller >= 3 && shared as f32 >= 0.7 * smaller as f32 {
            return true;
        }
    }
    const RUN: usize = 8;
    if new.len() >= RUN {
        let before: Vec<String> = earlier.iter().flat_map(|s| words(strip_citations(s).as_str()).collect::<Vec<_>>()).collect();
        let runs: HashSet<&[String]> = before.windows(RUN).collect();
        let mut own: HashSet<&[String]> = HashSet::new();
        for w in new.windows(RUN) {
            if runs.contains(w) || !own.insert(w) {
                return true;
            }
        }
    }
    false
}

/// Splits streamed LLM text into finished sentences and the unfinished rest. A sentence ends
/// at `.`, `!`, `?` or `:` (with the citation markers right after it) followed by whitespace
/// and the start of the next sentence, or at a line break; `1.` of a list does not end one.
pub fn split_finished(buffer: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = buffer.char_indices().collect();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c == '\n' {
            let piece = buffer[start..pos].trim();
            if !piece.is_empty() && !is_list_number(piece) {
                out.push(piece.to_owned());
                start = pos + 1;
            } else if piece.is_empty() {
                start = pos + 1;
            }
            i += 1;
            continue;
        }
        if matches!(c, '.' | '!' | '?' | ':') {
            // Take citation markers that follow: "... logs. [1] Next".
            let mut j = i + 1;
            let mut end = pos + c.len_utf8();
            loop {
                let mut k = j;
                while k < chars.len() && chars[k].1 == ' ' {
                    k += 1;
                }
                if k < chars.len() && chars[k].1 == '[' {
                    let mut m = k + 1;
                    while m < chars.len() && (chars[m].1.is_ascii_digit() || chars[m].1 == ',' || chars[m].1 == ' ') {
                        m += 1;
                    }
                    if m < chars.len() && chars[m].1 == ']' && m > k + 1 {
                        end = chars[m].0 + 1;
                        j = m + 1;
                        continue;
                    }
                }
                break;
            }
            // The next sentence must have begun, so the boundary is certain.
            let mut k = j;
            let mut spaced = false;
            while k < chars.len() && chars[k].1.is_whitespace() {
                spaced = true;
                k += 1;
            }
            if spaced && k < chars.len() {
                let next = chars[k].1;
                let piece = buffer[start..end].trim();
                let starts_new = next.is_uppercase() || next.is_ascii_digit() || matches!(next, '"' | '(' | '`' | '*' | '-' | '#' | '$');
                if starts_new && !is_list_number(piece) && !ends_with_abbreviation(piece) {
                    if !piece.is_empty() {
                        out.push(piece.to_owned());
                    }
                    start = chars[k].0;
                    i = k;
                    continue;
                }
            }
        }
        i += 1;
    }
    (out, buffer[start.min(buffer.len())..].to_owned())
}

fn is_list_number(piece: &str) -> bool {
    let p = piece.trim_start_matches(['-', '*', ' ']);
    let digits = p.trim_end_matches(['.', ')']);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

fn ends_with_abbreviation(piece: &str) -> bool {
    let last = piece.rsplit(' ').next().unwrap_or_default().to_ascii_lowercase();
    matches!(last.as_str(), "e.g." | "i.e." | "etc." | "vs." | "cf.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: &str = "9.1.1. Logs of a service: journalctl -u ssh.service shows the log of the ssh service. \
        The journal is kept under /var/log/journal when persistent.";

    #[test]
    fn invented_paths_and_options_are_caught() {
        let e = Evidence::new([JOURNAL], "How do I read the logs of a systemd service?");
        assert_eq!(e.check("Run journalctl -u ssh.service to read the log of the ssh service. [1]"), None);
        // The answer the issue quotes: a path that does not exist in the passage.
        assert_eq!(
            e.check("Run journalctl -u ssh | grep error > /var/log/journalctl to keep them. [1]"),
            Some(Unsupported::Token("|".into()))
        );
        assert_eq!(e.check("Use /var/log/journalctl. [1]"), Some(Unsupported::Token("/var/log/journalctl".into())));
        assert_eq!(e.check("Use journalctl --since today."), Some(Unsupported::Token("--since".into())));
        assert!(matches!(e.check("On Windows, ipconfig shows the network adapters."), Some(Unsupported::Words(_))));
    }

    #[test]
    fn a_claim_put_together_from_two_sentences_is_caught() {
        // What SmolLM2-135M answered in the test suite: every word is in the passage, the claim is not.
        let doc = "The greenhouse controller is called Fernwood. Fernwood opens the roof vents when the temperature \
                   passes 28 degrees Celsius. Fernwood waters the tomatoes every morning at six.";
        let e = Evidence::new([doc], "When does Fernwood open the roof vents?");
        assert_eq!(e.check("Fernwood opens the roof vents every morning at six."), Some(Unsupported::Mixed));
        assert_eq!(e.check("Fernwood opens the roof vents when the temperature passes 28 degrees Celsius. [1]"), None);
        assert_eq!(e.check("It opens them at 28 degrees Celsius."), None);
        assert_eq!(e.check("Fernwood waters the tomatoes every morning at six. [1]"), None);
    }

    #[test]
    fn technical_tokens_are_what_names_things_exactly() {
        let t = technical_tokens("Edit /etc/updatedb.conf and set PRUNEDPATHS=\"/tmp\" with `update-rc.d ssh defaults`, then port 22.");
        assert_eq!(t, vec!["update-rc.d", "ssh", "defaults", "/etc/updatedb.conf", "PRUNEDPATHS=\"/tmp", "22"]);
        assert!(technical_tokens("The Debian project is big, e.g. it has many users.").is_empty());
        assert_eq!(technical_tokens("NetworkManager and APT"), vec!["NetworkManager", "APT"]);
        assert_eq!(technical_tokens("apt-get install -y foo.deb"), vec!["-y", "foo.deb"]);
    }

    #[test]
    fn tokens_match_whole_tokens_only() {
        let e = Evidence::new(["Use --contents file.deb (or -c) in 2022; see /etc/fstab. Port 22."], "");
        assert!(e.contains_token("-c") && e.contains_token("/etc/fstab") && e.contains_token("22"));
        assert!(!e.contains_token("-co") && !e.contains_token("/etc") && !e.contains_token("202") && !e.contains_token("file"));
        let e = Evidence::new(["Run -cp here."], "");
        assert!(!e.contains_token("-c"));
    }

    #[test]
    fn citation_markers_are_not_words() {
        assert_eq!(strip_citations("A b. [1] C [2, 3]. [x] d"), "A b.  C . [x] d");
    }

    #[test]
    fn streamed_text_splits_into_finished_sentences() {
        let (done, rest) = split_finished("Run journalctl -u ssh.service. [1] It shows the log. [2] Then");
        assert_eq!(done, vec!["Run journalctl -u ssh.service. [1]", "It shows the log. [2]"]);
        assert_eq!(rest, "Then");
        let (done, rest) = split_finished("Steps:\n1. Edit the file.\n2. Restart it");
        assert_eq!(done, vec!["Steps:", "1. Edit the file."]);
        assert_eq!(rest, "2. Restart it");
        let (done, rest) = split_finished("Use e.g. Apt here. Or");
        assert_eq!(done, vec!["Use e.g. Apt here."]);
        assert_eq!(rest, "Or");
        let (done, rest) = split_finished("Not finished.");
        assert!(done.is_empty());
        assert_eq!(rest, "Not finished.");
    }

    #[test]
    fn repetition_and_invented_listings_are_caught() {
        let said = vec!["The journal keeps the logs of every service.".to_owned()];
        assert!(repeats(&said, "The journal keeps the logs of each service. [1]"));
        assert!(!repeats(&said, "Use journalctl -u to read one unit."));
        let e = Evidence::new([JOURNAL], "");
        assert!(e.holds_listing_line("journalctl -u ssh.service"));
        assert!(!e.holds_listing_line("$ rm -rf /var/log"));
    }

    #[test]
    fn glue_is_sorted() {
        assert!(GLUE.windows(2).all(|w| w[0] < w[1]));
    }
}
