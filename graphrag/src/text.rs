//! Text utilities shared by chunking, extraction and answering: sentences, words,
//! stop-words, normalisation.

/// Splits `text` into sentences: after `.`, `!` or `?` followed by whitespace and an
/// uppercase letter, digit, quote or bracket, except after common abbreviations.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b'.' | b'!' | b'?') && i + 2 < bytes.len() && bytes[i + 1] == b' ' {
            let next = bytes[i + 2];
            let word_start = text[..i].rfind(' ').map_or(0, |p| p + 1);
            let word = &text[word_start..i];
            let abbreviation =
                matches!(word.to_ascii_lowercase().as_str(), "e.g" | "i.e" | "etc" | "vs" | "cf" | "dr" | "mr" | "no" | "fig");
            if !abbreviation && (next.is_ascii_uppercase() || next.is_ascii_digit() || matches!(next, b'"' | b'(' | b'[' | b'\'')) {
                let s = text[start..=i].trim();
                if !s.is_empty() {
                    out.push(s);
                }
                start = i + 2;
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    let rest = text[start.min(text.len())..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Words for matching: lowercase, split on anything that is not alphanumeric.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// Words with stop-words removed and a light plural folding, for overlap scoring.
pub fn content_words(text: &str) -> Vec<String> {
    words(text).filter(|w| !is_stopword(w) && w.len() > 1).map(|w| fold_plural(&w)).collect()
}

/// `packages` -> `package`; leaves `bus`, `class`, `status`, short words alone.
pub fn fold_plural(w: &str) -> String {
    if w.len() > 4 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        if let Some(stem) = w.strip_suffix("ies") {
            return format!("{stem}y");
        }
        return w[..w.len() - 1].to_owned();
    }
    w.to_owned()
}

/// Words of a visitor's question that are talk, not content ("hi, quick question: ..."); they
/// must not pull in passages or sentences that happen to say "question". Sorted.
const CHATTER: &[&str] = &[
    "actually",
    "anybody",
    "anyone",
    "appreciate",
    "basically",
    "buddy",
    "cheer",
    "cheers",
    "colleague",
    "friend",
    "guy",
    "guys",
    "hello",
    "help",
    "hey",
    "hi",
    "hope",
    "idea",
    "kind",
    "maybe",
    "okay",
    "please",
    "possible",
    "question",
    "quick",
    "somebody",
    "someone",
    "sorry",
    "tell",
    "thank",
    "thanks",
    "thing",
    "tip",
    "want",
    "wonder",
    "wondering",
];

/// Whether `w` (lowercase) is a word of talk, not content.
pub fn is_chatter(w: &str) -> bool {
    CHATTER.binary_search(&w).is_ok()
}

/// `question` without its words of talk, for searching: "hi, quick question: can I cap apt's
/// bandwidth?" searches for "can I cap apt's bandwidth?".
pub fn without_chatter(question: &str) -> String {
    question
        .split_whitespace()
        .filter(|raw| {
            let w: String = raw.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
            !is_chatter(&fold_plural(&w)) && !is_chatter(&w)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key two words match on when an answer is put together or checked: `-ing` and a plural
/// `-s` off, then the first six letters (`logs`/`log`, `reading`/`read`,
/// `configured`/`configuration`, `messages`/`message`). Both sides go through it, so a key
/// need not be a word. (Entity extraction keeps [`fold_plural`]: its keys are stored.)
pub fn match_key(w: &str) -> String {
    let n = w.chars().count();
    let base = if n >= 6 && w.ends_with("ing") {
        &w[..w.len() - 3]
    } else if n >= 4 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        &w[..w.len() - 1]
    } else {
        w
    };
    base.chars().take(6).collect()
}

pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.binary_search(&w).is_ok()
}

/// English function words and question words (sorted, for binary search).
const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because",
    "been", "before", "being", "below", "between", "both", "but", "by", "can", "cannot", "could", "did", "do", "does", "doing", "done",
    "down", "during", "each", "either", "else", "even", "ever", "every", "few", "for", "from", "further", "get", "gets", "given", "had",
    "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "however", "i", "if", "in", "into", "is", "it", "its",
    "itself", "just", "less", "let", "like", "may", "me", "might", "more", "most", "much", "must", "my", "need", "needs", "no", "nor",
    "not", "now", "of", "off", "often", "on", "once", "one", "only", "or", "other", "others", "our", "out", "over", "own", "per", "rather",
    "same", "shall", "she", "should", "since", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "though", "through", "thus", "to", "too", "under", "until", "up", "upon", "us", "use", "used", "uses",
    "using", "very", "via", "was", "we", "well", "were", "what", "when", "where", "whether", "which", "while", "who", "whom", "whose",
    "why", "will", "with", "within", "without", "would", "yet", "you", "your",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_are_sorted() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(CHATTER.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn chatter_is_left_out_of_searches() {
        assert_eq!(without_chatter("Hi guys, quick question: can I cap APT's bandwidth? Thanks!"), "can I cap APT's bandwidth?");
    }

    #[test]
    fn sentences_split_on_terminal_punctuation_only() {
        let s = sentences("APT is a tool, e.g. for packages. It uses dpkg! Version 2.0 is out? Yes. see /etc/apt/sources.list.");
        assert_eq!(s, vec!["APT is a tool, e.g. for packages.", "It uses dpkg!", "Version 2.0 is out?", "Yes. see /etc/apt/sources.list."]);
    }

    #[test]
    fn content_words_fold_plurals() {
        assert_eq!(content_words("The packages of the libraries"), vec!["package", "library"]);
    }
}
