//! What ingest does to an uploaded file before anything is stored: parse (text, Markdown or
//! HTML, by the first byte), chunk, extract entities and relations. Never panics on any input,
//! and every mention points at a chunk of this document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uag_graphrag::chunk::{ChunkLimits, chunk};
use uag_graphrag::extract::{ExtractChunk, extract};
use uag_graphrag::parse::{Format, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let (format, name) = match selector % 3 {
        0 => (Format::Text, "fuzz.txt"),
        1 => (Format::Markdown, "fuzz.md"),
        _ => (Format::Html, "fuzz.html"),
    };
    // Invalid input is an error, never a panic.
    let Ok(doc) = parse(format, name, bytes) else { return };
    let limits = ChunkLimits { max_words: 40, overlap_words: 8 };
    let drafts = chunk(&doc, limits);
    let ids: Vec<u64> = (0..drafts.len() as u64).collect();
    let chunks: Vec<ExtractChunk<'_>> =
        drafts.iter().zip(&ids).map(|(d, id)| ExtractChunk { id: *id, text: &d.text, code_terms: &d.code_terms }).collect();
    let graph = extract(&chunks);
    for (_, chunk, _) in &graph.mentions {
        assert!(ids.contains(chunk), "a mention of chunk {chunk}, which does not exist");
    }
});
