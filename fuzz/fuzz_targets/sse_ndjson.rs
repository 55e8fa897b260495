//! The incremental SSE and NDJSON decoders of upstream streams (core/src/codec.rs).
//! Property: the events/lines decoded from the stream in one chunk equal those decoded when
//! the same bytes arrive split at fuzzer-chosen points (the first two bytes pick the chunk
//! sizes), and equal those decoded one byte at a time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uag_gateway::codec::{NdjsonDecoder, SseDecoder, SseEvent};

fn chunks<'a>(stream: &'a [u8], a: u8, b: u8) -> Vec<&'a [u8]> {
    let sizes = [usize::from(a % 17), usize::from(b) + 1]; // 0-byte chunks included
    let (mut out, mut rest, mut i) = (Vec::new(), stream, 0);
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(sizes[i % 2].min(rest.len()));
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

fn sse(parts: &[&[u8]]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for part in parts {
        events.extend(decoder.push(part).expect("fuzz inputs are far below the line limit"));
    }
    events.extend(decoder.finish());
    events
}

fn ndjson(parts: &[&[u8]]) -> Vec<String> {
    let mut decoder = NdjsonDecoder::new();
    let mut lines = Vec::new();
    for part in parts {
        lines.extend(decoder.push(part).expect("fuzz inputs are far below the line limit"));
    }
    lines.extend(decoder.finish());
    lines
}

fuzz_target!(|data: &[u8]| {
    let [a, b, stream @ ..] = data else { return };
    let split = chunks(stream, *a, *b);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();

    let whole = sse(&[stream]);
    assert_eq!(sse(&split), whole, "SSE events depend on chunking");
    assert_eq!(sse(&bytes), whole, "SSE events differ byte by byte");
    for event in &whole {
        assert!(!event.data.contains('\r'), "a CR inside SSE data");
        assert!(event.event.as_deref().is_none_or(|e| !e.contains(['\r', '\n'])), "a line break in an event name");
    }

    let whole = ndjson(&[stream]);
    assert_eq!(ndjson(&split), whole, "NDJSON lines depend on chunking");
    assert_eq!(ndjson(&bytes), whole, "NDJSON lines differ byte by byte");
    for line in &whole {
        assert!(!line.contains(['\r', '\n']) && !line.trim().is_empty(), "bad NDJSON line {line:?}");
    }
});
