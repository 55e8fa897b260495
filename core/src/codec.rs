//! Incremental decoders for upstream streaming formats: Server-Sent Events and NDJSON.
//!
//! Network chunks split lines anywhere (even inside a UTF-8 character), so both decoders keep
//! a byte buffer and only hand out complete lines. Neither ever panics on input.

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Upper bound on one buffered line: an upstream that never sends a newline cannot make the
/// gateway buffer without limit.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("a line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// Splits a byte stream into lines, accepting `\n`, `\r\n` and `\r` endings.
#[derive(Debug, Default)]
struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<String>) -> Result<(), CodecError> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' => {
                    out.push(String::from_utf8_lossy(&self.buf[start..i]).into_owned());
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    // A `\r` at the very end may be the first half of `\r\n`: wait for more.
                    if i + 1 == self.buf.len() {
                        break;
                    }
                    out.push(String::from_utf8_lossy(&self.buf[start..i]).into_owned());
                    i += if self.buf[i + 1] == b'\n' { 2 } else { 1 };
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE_BYTES {
            self.buf.clear();
            return Err(CodecError::LineTooLong);
        }
        Ok(())
    }

    /// The unterminated rest at end of stream.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        (!rest.is_empty()).then(|| String::from_utf8_lossy(rest).into_owned())
    }
}

/// Server-Sent Events decoder following the WHATWG event-stream parsing rules.
#[derive(Debug, Default)]
pub struct SseDecoder {
    lines: LineSplitter,
    event: Option<String>,
    data: Vec<String>,
    pending: Vec<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one network chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, CodecError> {
        let mut lines = std::mem::take(&mut self.pending);
        lines.clear();
        self.lines.push(chunk, &mut lines)?;
        let mut events = Vec::new();
        for line in lines.drain(..) {
            self.line(line, &mut events);
        }
        self.pending = lines;
        Ok(events)
    }

    /// End of stream: an event without its closing blank line is still dispatched, since
    /// some servers close right after the last `data:` line.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if let Some(line) = self.lines.finish() {
            self.line(line, &mut events);
        }
        self.dispatch(&mut events);
        events
    }

    fn line(&mut self, line: String, events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {} // `id`, `retry` and unknown fields do not matter to the gateway
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        events.push(SseEvent { event, data });
    }
}

/// Newline-delimited JSON decoder: hands out complete, non-blank lines.
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    lines: LineSplitter,
}

impl NdjsonDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        let mut out = Vec::new();
        self.lines.push(chunk, &mut out)?;
        out.retain(|l| !l.trim().is_empty());
        Ok(out)
    }

    pub fn finish(&mut self) -> Option<String> {
        self.lines.finish().filter(|l| !l.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.push(c).unwrap());
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn sse_events_survive_any_split() {
        let stream = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\ndata: \xc3\xa9t\xc3\xa9\n\n";
        let whole = sse_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                SseEvent { event: Some("message_start".into()), data: "{\"a\":1}".into() },
                SseEvent { event: None, data: "x\ny".into() },
                SseEvent { event: None, data: "été".into() },
            ]
        );
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(sse_all(&[a, b]), whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(sse_all(&bytes), whole);
    }

    #[test]
    fn sse_last_event_without_blank_line_is_kept() {
        assert_eq!(sse_all(&[b"data: [DONE]"]), vec![SseEvent { event: None, data: "[DONE]".into() }]);
    }

    #[test]
    fn ndjson_lines_split_across_chunks() {
        let mut d = NdjsonDecoder::new();
        assert!(d.push(b"{\"a\":").unwrap().is_empty());
        assert_eq!(d.push(b"1}\n\n{\"b\"").unwrap(), vec!["{\"a\":1}".to_owned()]);
        assert_eq!(d.push(b":2}\r\n").unwrap(), vec!["{\"b\":2}".to_owned()]);
        assert!(d.push(b"{\"c\":3}").unwrap().is_empty());
        assert_eq!(d.finish().as_deref(), Some("{\"c\":3}"));
    }

    #[test]
    fn runaway_line_is_an_error_not_unbounded_memory() {
        let mut d = NdjsonDecoder::new();
        let big = vec![b'x'; MAX_LINE_BYTES + 1];
        assert_eq!(d.push(&big), Err(CodecError::LineTooLong));
    }
}
