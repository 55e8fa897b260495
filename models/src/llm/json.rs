//! Constrained decoding for JSON mode (`response_format: {"type": "json_object"}`): the reply is
//! one JSON object, because at every step only the tokens that keep the text a valid prefix of
//! one can be sampled, and once the object is closed only the end of the turn can.
//!
//! [`JsonPrefix`] is an incremental JSON recogniser small enough to copy (a bit stack for the
//! containers, the lexical state in a few bytes), so checking a token is copying the state and
//! feeding it the token's characters: about 50,000 tokens a step, microseconds each.

/// Containers nest at most this deep (the bit stack's width).
const MAX_DEPTH: u8 = 64;

/// What the recogniser expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing yet: only `{` may start the reply.
    Start,
    /// A value (after `:`, after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the container's closer.
    CommaOrClose,
    /// Inside a string (`key`: it is an object key, so `:` follows).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// Inside a `\u` escape, with this many of its four hex digits still to come.
    Unicode { key: bool, left: u8 },
    /// Inside a number.
    Number(Num),
    /// Inside `true`, `false` or `null`: which one, and how many letters are done.
    Literal { word: u8, done: u8 },
    /// The object is closed: nothing but the end of the turn.
    Done,
}

/// The parts of a number (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    /// Whether a number may end here.
    fn can_end(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

const LITERALS: [&str; 3] = ["true", "false", "null"];

/// A valid prefix of one JSON object, fed a character at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JsonPrefix {
    mode: Mode,
    /// Open containers, innermost in the lowest bit: 1 = object, 0 = array.
    stack: u64,
    depth: u8,
    /// Whitespace since the last token of the structure: pretty-printing (a newline and an
    /// indent) passes, blank lines and long runs do not, so a small model cannot spend its
    /// budget on them.
    space: u8,
    newline: bool,
}

/// The most whitespace between two tokens of the structure (a newline and 16 spaces).
const MAX_SPACE: u8 = 17;

impl Default for JsonPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonPrefix {
    pub(super) fn new() -> Self {
        Self { mode: Mode::Start, stack: 0, depth: 0, space: 0, newline: false }
    }

    /// The object is complete: the reply must end now.
    pub(super) fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Feeds `text`; false (and the state is then meaningless) when it cannot continue a JSON
    /// object. U+FFFD stands for a token that ends inside a multi-byte character, which only a
    /// string can hold.
    pub(super) fn push_str(&mut self, text: &str) -> bool {
        text.chars().all(|c| self.push(c))
    }

    fn in_object(&self) -> bool {
        self.stack & 1 == 1
    }

    fn open(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        self.stack = (self.stack << 1) | u64::from(object);
        self.depth += 1;
        self.mode = if object { Mode::KeyOrClose } else { Mode::ValueOrClose };
        true
    }

    fn close(&mut self, object: bool) -> bool {
        if self.depth == 0 || self.in_object() != object {
            return false;
        }
        self.stack >>= 1;
        self.depth -= 1;
        self.mode = if self.depth == 0 { Mode::Done } else { Mode::CommaOrClose };
        true
    }

    /// The start of a value.
    fn value(&mut self, c: char) -> bool {
        match c {
            '{' => self.open(true),
            '[' => self.open(false),
            '"' => {
                self.mode = Mode::Str { key: false };
                true
            }
            '-' => {
                self.mode = Mode::Number(Num::Minus);
                true
            }
            '0' => {
                self.mode = Mode::Number(Num::Zero);
                true
            }
            '1'..='9' => {
                self.mode = Mode::Number(Num::Int);
                true
            }
            't' | 'f' | 'n' => {
                let word = LITERALS.iter().position(|w| w.starts_with(c)).unwrap_or(0) as u8;
                self.mode = Mode::Literal { word, done: 1 };
                true
            }
            _ => false,
        }
    }

    /// One character; false when it cannot continue the object.
    pub(super) fn push(&mut self, c: char) -> bool {
        let structural =
            !matches!(self.mode, Mode::Str { .. } | Mode::Escape { .. } | Mode::Unicode { .. } | Mode::Number(_) | Mode::Literal { .. });
        if structural && matches!(c, ' ' | '\n' | '\t' | '\r') {
            let line_break = matches!(c, '\n' | '\r');
            if matches!(self.mode, Mode::Start | Mode::Done) || self.space >= MAX_SPACE || (line_break && self.newline) {
                return false;
            }
            self.space += 1;
            self.newline |= line_break;
            return true;
        }
        self.space = 0;
        self.newline = false;
        match self.mode {
            Mode::Start => c == '{' && self.open(true),
            Mode::Done => false,
            Mode::Value => self.value(c),
            Mode::ValueOrClose => c == ']' && self.close(false) || c != ']' && self.value(c),
            Mode::KeyOrClose | Mode::Key => match c {
                '"' => {
                    self.mode = Mode::Str { key: true };
                    true
                }
                '}' if self.mode == Mode::KeyOrClose => self.close(true),
                _ => false,
            },
            Mode::Colon => {
                if c == ':' {
                    self.mode = Mode::Value;
                    true
                } else {
                    false
                }
            }
            Mode::CommaOrClose => match c {
                ',' => {
                    self.mode = if self.in_object() { Mode::Key } else { Mode::Value };
                    true
                }
                '}' => self.close(true),
                ']' => self.close(false),
                _ => false,
            },
            Mode::Str { key } => match c {
                '"' => {
                    self.mode = if key { Mode::Colon } else { Mode::CommaOrClose };
                    true
                }
                '\\' => {
                    self.mode = Mode::Escape { key };
                    true
                }
                c => c >= ' ',
            },
            Mode::Escape { key } => match c {
                '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => {
                    self.mode = Mode::Str { key };
                    true
                }
                'u' => {
                    self.mode = Mode::Unicode { key, left: 4 };
                    true
                }
                _ => false,
            },
            Mode::Unicode { key, left } => {
                if !c.is_ascii_hexdigit() {
                    return false;
                }
                self.mode = if left == 1 { Mode::Str { key } } else { Mode::Unicode { key, left: left - 1 } };
                true
            }
            Mode::Number(n) => {
                let next = match (n, c) {
                    (Num::Minus, '0') => Some(Num::Zero),
                    (Num::Minus, '1'..='9') => Some(Num::Int),
                    (Num::Int, '0'..='9') => Some(Num::Int),
                    (Num::Zero | Num::Int, '.') => Some(Num::Dot),
                    (Num::Dot | Num::Frac, '0'..='9') => Some(Num::Frac),
                    (Num::Zero | Num::Int | Num::Frac, 'e' | 'E') => Some(Num::Exp),
                    (Num::Exp, '+' | '-') => Some(Num::ExpSign),
                    (Num::Exp | Num::ExpSign | Num::ExpDigits, '0'..='9') => Some(Num::ExpDigits),
                    _ => None,
                };
                match next {
                    Some(n) => {
                        self.mode = Mode::Number(n);
                        true
                    }
                    // The number ends here; the character is the next one after a value.
                    None if n.can_end() => {
                        self.mode = Mode::CommaOrClose;
                        self.push(c)
                    }
                    None => false,
                }
            }
            Mode::Literal { word, done } => {
                let literal = LITERALS[usize::from(word)].as_bytes();
                if literal.get(usize::from(done)) != Some(&(c as u8)) || !c.is_ascii() {
                    return false;
                }
                self.mode =
                    if usize::from(done) + 1 == literal.len() { Mode::CommaOrClose } else { Mode::Literal { word, done: done + 1 } };
                true
            }
        }
    }
}

/// Which tokens may come next: `texts[id]` is token `id`'s text (`None`: a special token, which
/// never belongs to the JSON), `stop` says whether an id ends the turn. Ending is allowed
/// exactly when the object is complete.
pub(super) fn allowed_tokens(state: &JsonPrefix, texts: &[Option<String>], stop: impl Fn(u32) -> bool) -> Vec<bool> {
    texts
        .iter()
        .enumerate()
        .map(|(id, text)| {
            if state.is_complete() {
                return stop(id as u32);
            }
            match text {
                Some(t) if !t.is_empty() => {
                    let mut next = *state;
                    next.push_str(t)
                }
                _ => false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> Option<bool> {
        let mut s = JsonPrefix::new();
        s.push_str(text).then(|| s.is_complete())
    }

    #[test]
    fn whole_objects_complete_and_prefixes_do_not() {
        for whole in [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"city": "Paris", "population": 2.1e6, "capital": true, "mayor": null}"#,
            r#"{"list": [1, -0.5, "x", [], {}, [false]], "nested": {"k": "v\n\"q\" \u00e9"}}"#,
            "{\n \"a\": [\n 1,\n 2\n ]\n}",
        ] {
            assert_eq!(accepts(whole), Some(true), "{whole}");
        }
        for prefix in [r#"{"#, r#"{"a""#, r#"{"a":"#, r#"{"a": 12"#, r#"{"a": tr"#, r#"{"a": [1,"#, r#"{"a": "x\"#, r#"{"a": "\u00"#] {
            assert_eq!(accepts(prefix), Some(false), "{prefix}");
        }
    }

    #[test]
    fn what_cannot_continue_an_object_is_refused() {
        for bad in [
            "[1]",
            " {}",
            r#"{"a":1}}"#,
            r#"{"a":1} "#,
            r#"{a:1}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":True}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a":"x"]"#,
            "{\"a\":\"line\nbreak\"}",
            r#"{"a":"\x"}"#,
            "{\n\n\"a\":1}",
            "{                  \"a\":1}",
            "{\"a\":\u{FFFD}}",
        ] {
            assert_ne!(accepts(bad), Some(true), "{bad}");
        }
        // A partial UTF-8 token inside a string is fine.
        assert_eq!(accepts("{\"a\":\"caf\u{FFFD}\"}"), Some(true));
    }

    #[test]
    fn tokens_are_allowed_by_what_they_would_make_and_the_end_only_when_complete() {
        let texts: Vec<Option<String>> =
            ["{", "}", "\"city\"", ":", " \"Paris\"", "[", "hello", "", "<|im_end|>"].iter().map(|t| Some((*t).to_owned())).collect();
        let mut texts = texts;
        texts[8] = None;
        let stop = |id: u32| id == 8;
        let allowed = |s: &JsonPrefix| -> Vec<usize> {
            allowed_tokens(s, &texts, stop).iter().enumerate().filter(|(_, a)| **a).map(|(i, _)| i).collect()
        };
        let mut s = JsonPrefix::new();
        assert_eq!(allowed(&s), [0]);
        s.push_str("{");
        assert_eq!(allowed(&s), [1, 2, 4], "a key, with or without a space before it");
        s.push_str("\"city\":");
        assert_eq!(allowed(&s), [0, 2, 4, 5], "any value");
        s.push_str(" \"Paris\"}");
        assert!(s.is_complete());
        assert_eq!(allowed(&s), [8], "only the end of the turn");
    }
}
