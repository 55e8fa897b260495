//! The tantivy indexes.
//!
//! - [`ChunkIndex`] (on disk): BM25 over chunks, fields title, headings, text and source,
//!   English stemming. Its commit payload records the store generation it reflects, so
//!   start-up can tell when it is behind sled and rebuild it.
//! - [`EntityIndex`] (in memory, rebuilt with the graph): entity names and aliases, for fuzzy
//!   entity linking of question words.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, FuzzyTermQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use crate::error::{EngineError, Result};
use crate::store::{ChunkRecord, DocRecord};

const WRITER_HEAP: usize = 50_000_000;

#[derive(Clone, Copy)]
struct ChunkFields {
    chunk_id: Field,
    doc_id: Field,
    title: Field,
    headings: Field,
    text: Field,
    source: Field,
}

pub struct ChunkIndex {
    index: Index,
    reader: IndexReader,
    /// Started with the first change, not at open: a kiosk that only answers never runs
    /// tantivy's indexing, segment-updater and merge threads, nor pages in their code (idle
    /// memory, issue 19). Once started it stays for the next ingest.
    writer: Mutex<Option<IndexWriter>>,
    fields: ChunkFields,
    parser: QueryParser,
}

impl std::fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkIndex")
    }
}

fn stemmed() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer("en_stem").set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

impl ChunkIndex {
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| EngineError::Read { path: path.to_path_buf(), source })?;
        let mut schema = Schema::builder();
        let fields = ChunkFields {
            chunk_id: schema.add_u64_field("chunk_id", INDEXED | STORED),
            doc_id: schema.add_text_field("doc_id", STRING),
            title: schema.add_text_field("title", stemmed()),
            headings: schema.add_text_field("headings", stemmed()),
            text: schema.add_text_field("text", stemmed()),
            source: schema.add_text_field("source", stemmed()),
        };
        let dir = MmapDirectory::open(path).map_err(|e| EngineError::Index(e.to_string()))?;
        let index = Index::open_or_create(dir, schema.build())?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let mut parser = QueryParser::for_index(&index, vec![fields.title, fields.headings, fields.text, fields.source]);
        parser.set_field_boost(fields.headings, 2.0);
        parser.set_field_boost(fields.title, 1.5);
        parser.set_field_boost(fields.source, 0.5);
        Ok(Self { index, reader, writer: Mutex::new(None), fields, parser })
    }

    /// Reads what start-up relies on: the commit payload and every file's checksum (tantivy
    /// keeps one in each file's footer); an error names what is unreadable.
    pub fn check(&self) -> Result<()> {
        self.generation()?;
        let corrupt = self.index.validate_checksum()?;
        if corrupt.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = corrupt.iter().map(|p| p.display().to_string()).collect();
        Err(EngineError::Index(format!("{} index files fail their checksum: {}", names.len(), names.join(", "))))
    }

    /// The store generation of the last commit.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.index.load_metas()?.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    /// Runs `change` with the index writer, started on first use.
    fn with_writer<T>(&self, change: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut slot = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let writer = match &mut *slot {
            Some(writer) => writer,
            empty @ None => {
                // One indexing thread and one merge thread (tantivy starts four merge threads
                // by default): merges are rare on an appliance's knowledge base, and every idle
                // thread is memory a Pi keeps for nothing.
                let options =
                    IndexWriterOptions::builder().memory_budget_per_thread(WRITER_HEAP).num_worker_threads(1).num_merge_threads(1).build();
                empty.insert(self.index.writer_with_options(options)?)
            }
        };
        change(writer)
    }

    fn add(&self, writer: &IndexWriter, doc: &DocRecord, chunk: &ChunkRecord) -> Result<()> {
        let f = self.fields;
        writer.add_document(doc!(
            f.chunk_id => chunk.id,
            f.doc_id => doc.id.as_str(),
            f.title => doc.title.as_str(),
            f.headings => chunk.section.join(" / "),
            f.text => chunk.text.as_str(),
            f.source => doc.source.as_str(),
        ))?;
        Ok(())
    }

    /// Stages the replacement of a document's chunks; visible after [`ChunkIndex::commit`].
    pub fn stage_document(&self, doc: &DocRecord, chunks: &[ChunkRecord]) -> Result<()> {
        self.with_writer(|writer| {
            writer.delete_term(Term::from_field_text(self.fields.doc_id, &doc.id));
            for chunk in chunks {
                self.add(writer, doc, chunk)?;
            }
            Ok(())
        })
    }

    pub fn stage_delete(&self, doc_id: &str) -> Result<()> {
        self.with_writer(|writer| {
            writer.delete_term(Term::from_field_text(self.fields.doc_id, doc_id));
            Ok(())
        })
    }

    /// Commits staged changes as reflecting store `generation`.
    pub fn commit(&self, generation: u64) -> Result<()> {
        self.with_writer(|writer| {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&generation.to_string());
            prepared.commit()?;
            Ok(())
        })?;
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces the whole index with `chunks` (start-up found it behind the store).
    pub fn rebuild<'a>(&self, items: impl Iterator<Item = (&'a DocRecord, &'a ChunkRecord)>, generation: u64) -> Result<()> {
        self.with_writer(|writer| {
            writer.delete_all_documents()?;
            for (doc, chunk) in items {
                self.add(writer, doc, chunk)?;
            }
            Ok(())
        })?;
        self.commit(generation)
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// BM25 top `limit` chunks for free text (query syntax errors are ignored, not fatal),
    /// among the chunks of `only_docs` when given: the filter is part of the query, so chunks
    /// of other documents are never scored and cannot crowd the allowed ones out of the top.
    pub fn search(&self, text: &str, limit: usize, only_docs: Option<&[&str]>) -> Result<Vec<(u64, f32)>> {
        // User text is not query syntax: keep words (and hyphens or dots inside them, which
        // become phrase queries: `apt-get`), drop operators (`-x` would exclude, `NOT` negate).
        let spaced: String = text.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '.' { c } else { ' ' }).collect();
        let cleaned = spaced
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| c == '-' || c == '.').to_lowercase())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let (query, _errors) = self.parser.parse_query_lenient(&cleaned);
        let query: Box<dyn Query> = match only_docs {
            None => query,
            // A constant-score clause: it filters without changing the BM25 order.
            Some(ids) => {
                let allowed = TermSetQuery::new(ids.iter().map(|id| Term::from_field_text(self.fields.doc_id, id)));
                Box::new(BooleanQuery::new(vec![(Occur::Must, query), (Occur::Must, Box::new(allowed))]))
            }
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let stored: TantivyDocument = searcher.doc(address)?;
            if let Some(id) = stored.get_first(self.fields.chunk_id).and_then(|v| v.as_u64()) {
                out.push((id, score));
            }
        }
        Ok(out)
    }
}

/// Entity names and aliases in RAM, for fuzzy linking.
pub struct EntityIndex {
    reader: IndexReader,
    entity: Field,
    name: Field,
}

impl std::fmt::Debug for EntityIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntityIndex")
    }
}

impl EntityIndex {
    /// `names`: (entity number, every name and alias of it).
    pub fn build<'a>(names: impl Iterator<Item = (u32, &'a str)>) -> Result<Self> {
        let mut schema = Schema::builder();
        let entity = schema.add_u64_field("entity", STORED);
        let name = schema.add_text_field("name", tantivy::schema::TEXT);
        let index = Index::create_in_ram(schema.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000)?;
        for (id, n) in names {
            writer.add_document(doc!(entity => u64::from(id), name => n))?;
        }
        writer.commit()?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { reader, entity, name })
    }

    /// Entities whose name has a word within one edit of `word`.
    pub fn fuzzy(&self, word: &str, limit: usize) -> Result<Vec<(u32, f32)>> {
        let term = Term::from_field_text(self.name, &word.to_lowercase());
        let queries: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, Box::new(FuzzyTermQuery::new(term, 1, true)))];
        let query = BooleanQuery::new(queries);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut out = Vec::new();
        for (score, address) in top {
            let stored: TantivyDocument = searcher.doc(address)?;
            if let Some(id) = stored.get_first(self.entity).and_then(|v| v.as_u64()) {
                out.push((u32::try_from(id).unwrap_or(u32::MAX), score));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_started(index: &ChunkIndex) -> bool {
        index.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    #[test]
    fn the_writer_starts_with_the_first_change_and_a_reopened_index_answers_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let doc = DocRecord {
            id: "d1".into(),
            source: "greenhouse.md".into(),
            title: "Greenhouse".into(),
            content_hash: String::new(),
            collection: "default".into(),
            chunk_ids: vec![7],
            bytes: 0,
            ingested_at: 0,
        };
        let chunk = ChunkRecord {
            id: 7,
            doc_id: "d1".into(),
            ordinal: 0,
            section: vec!["Roof".into()],
            text: "The roof fence opens at dawn.".into(),
            code_terms: vec![],
        };
        {
            let index = ChunkIndex::open(dir.path()).unwrap();
            assert!(!writer_started(&index), "opening the index started its writer");
            assert!(index.search("roof fence", 5, None).unwrap().is_empty());
            assert!(!writer_started(&index), "a search started the writer");
            index.stage_document(&doc, std::slice::from_ref(&chunk)).unwrap();
            assert!(writer_started(&index));
            index.commit(1).unwrap();
        }
        // The first index (and its writer's lock) is gone; the reopened one reads without one.
        let index = ChunkIndex::open(dir.path()).unwrap();
        assert_eq!(index.generation().unwrap(), 1);
        assert_eq!(index.search("roof fence", 5, None).unwrap().first().map(|(id, _)| *id), Some(7));
        assert!(!writer_started(&index));
        index.stage_delete("d1").unwrap();
        index.commit(2).unwrap();
        assert!(index.search("roof fence", 5, None).unwrap().is_empty());
    }
}
