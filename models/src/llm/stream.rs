//! Streaming the reply: stop strings are cut out of the text before the caller sees it.

/// Holds back the end of the streamed text while it could still become a stop string, so that
/// a stop string split across tokens is never shown in part.
pub(super) struct StopFilter {
    stops: Vec<String>,
    held: String,
}

/// What to pass on after a piece of text, and whether a stop string ended the reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Filtered {
    pub(super) text: String,
    pub(super) stopped: bool,
}

impl StopFilter {
    pub(super) fn new(stops: &[String]) -> Self {
        // An empty stop string would end every reply before its first character.
        let stops = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        StopFilter { stops, held: String::new() }
    }

    pub(super) fn push(&mut self, piece: &str) -> Filtered {
        self.held.push_str(piece);
        // Everything before `held` was passed on only because no stop string could start
        // there, so a stop string can only start inside `held`.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let text = self.held[..at].to_owned();
            self.held.clear();
            return Filtered { text, stopped: true };
        }
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let text = self.held[..keep_from].to_owned();
        self.held.drain(..keep_from);
        Filtered { text, stopped: false }
    }

    /// The held-back text once the reply ended without a stop string.
    pub(super) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut filter = StopFilter::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            let f = filter.push(piece);
            out.push_str(&f.text);
            if f.stopped {
                return (out, true);
            }
        }
        out.push_str(&filter.finish());
        (out, false)
    }

    #[test]
    fn passes_text_without_stop_strings() {
        assert_eq!(run(&[], &["Hello", " world"]), ("Hello world".into(), false));
        assert_eq!(run(&[""], &["Hello"]), ("Hello".into(), false));
    }

    #[test]
    fn cuts_at_a_stop_string_split_across_pieces() {
        assert_eq!(run(&["\nUser:"], &["Hi", " there\nUs", "er: more"]), ("Hi there".into(), true));
        assert_eq!(run(&["END"], &["aEN", "D"]), ("a".into(), true));
        // Of two stop strings the earlier one in the text wins.
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
    }

    #[test]
    fn releases_a_held_prefix_that_did_not_become_a_stop_string() {
        let stops = vec!["STOP".to_string()];
        let mut filter = StopFilter::new(&stops);
        assert_eq!(filter.push("a ST"), Filtered { text: "a ".into(), stopped: false });
        assert_eq!(filter.push("ART"), Filtered { text: "START".into(), stopped: false });
        assert_eq!(filter.push("xS"), Filtered { text: "x".into(), stopped: false });
        assert_eq!(filter.finish(), "S");
    }

    #[test]
    fn handles_multibyte_text() {
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        assert_eq!(run(&["éx"], &["café", " ok"]), ("café ok".into(), false));
    }
}
