//! Streamed answer text cut into pieces a synthesiser can speak while the rest is written.

/// What a synthesiser should read: without citation marks (`[1]`) or markdown emphasis.
pub fn speakable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            // Skip `[1]`, `[1, 2]`; keep other brackets' contents.
            let rest: String = chars.clone().take_while(|c| *c != ']').collect();
            if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') {
                for _ in 0..=rest.chars().count() {
                    chars.next();
                }
                continue;
            }
        }
        if matches!(c, '*' | '_' | '#' | '`') {
            continue;
        }
        out.push(c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ").replace(" .", ".").replace(" ,", ",")
}

/// Cuts streamed answer text into pieces to speak: whole sentences, and for the very first
/// piece a clause ending in a comma (or similar) once it has enough words, so the first audio
/// does not wait for a long first sentence.
#[derive(Debug)]
pub struct SpeechChunker {
    buffer: String,
    first_chunk_words: usize,
    emitted: usize,
}

impl SpeechChunker {
    pub fn new(first_chunk_words: usize) -> Self {
        Self { buffer: String::new(), first_chunk_words, emitted: 0 }
    }

    /// Adds text; returns the pieces now complete.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buffer.push_str(text);
        let mut ready = Vec::new();
        loop {
            let sentences = uag_models::tts::split_sentences(&self.buffer);
            // The last piece may still grow; earlier ones are complete only if followed by
            // more text (split_sentences needs the next word to rule out "Dr." and "3.5").
            if sentences.len() >= 2 {
                let first = sentences[0].clone();
                if let Some(pos) = self.buffer.find(first.trim_start()) {
                    self.buffer.drain(..pos + first.trim_start().len());
                    self.emitted += 1;
                    ready.push(first);
                    continue;
                }
            }
            break;
        }
        if self.emitted == 0
            && self.first_chunk_words > 0
            && let Some(cut) = clause_end(&self.buffer, self.first_chunk_words)
        {
            let clause: String = self.buffer.drain(..cut).collect();
            self.emitted += 1;
            ready.push(clause.trim().to_owned());
        }
        ready
    }

    /// The rest, at the end of the answer.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// Byte offset just after a clause mark (`,` `;` `:` `—`) followed by a space, with at least
/// `min_words` words before it.
fn clause_end(text: &str, min_words: usize) -> Option<usize> {
    let mut words = 0usize;
    let mut in_word = false;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
        }
        if matches!(c, ',' | ';' | ':' | '—') && words >= min_words && iter.peek().is_some_and(|(_, n)| n.is_whitespace()) {
            return Some(i + c.len_utf8());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_speaks_sentences_as_they_complete() {
        let mut c = SpeechChunker::new(0);
        assert!(c.push("Debian uses APT").is_empty());
        assert!(c.push(".").is_empty(), "a sentence is complete only once the next one begins");
        assert_eq!(c.push(" It installs"), ["Debian uses APT."]);
        assert!(c.push(" packages from Dr. Smith's").is_empty());
        assert_eq!(c.push(" mirror. Done"), ["It installs packages from Dr. Smith's mirror."]);
        assert_eq!(c.finish().as_deref(), Some("Done"));
        assert_eq!(c.finish(), None);
    }

    #[test]
    fn chunker_speaks_an_early_first_clause() {
        let mut c = SpeechChunker::new(4);
        assert!(c.push("Yes, it").is_empty(), "too few words for an early cut");
        assert_eq!(c.push(" can be done with apt-get, which"), ["Yes, it can be done with apt-get,"]);
        // Only the first piece is cut early; later ones wait for the sentence.
        assert!(c.push(" needs root, as usual").is_empty());
        assert_eq!(c.push(". Then"), ["which needs root, as usual."]);
        assert!(c.push(" reboot.").is_empty());
        assert_eq!(c.finish().as_deref(), Some("Then reboot."));
    }

    #[test]
    fn speakable_drops_citations_and_markup() {
        assert_eq!(speakable("APT installs packages [1]. It is **fast** [2, 3]."), "APT installs packages. It is fast.");
        assert_eq!(speakable("See [the manual] for `apt`."), "See [the manual] for apt.");
    }
}
