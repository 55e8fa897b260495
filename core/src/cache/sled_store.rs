//! The embedded backend: a sled database under `<data_dir>/cache`, one per gateway process.
//!
//! Each value is stored with an 8-byte big-endian timestamp (ms since the epoch) in front, so
//! expiry needs no decoding. A second tree orders keys by that timestamp: eviction pops its
//! oldest rows while the entry count is over the cap or the oldest entry has expired (oldest
//! first, not least recently used: a hit costs no write). Expired entries are also dropped
//! when read. sled operations are in-memory page-cache work (it flushes in the background),
//! cheap enough for the async workers.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sled::Tree;

use super::CacheError;

const STAMP: usize = 8;

/// A tree of timestamped values with a count cap and expiry.
struct Capped {
    data: Tree,
    by_time: Tree,
    count: AtomicUsize,
    cap: usize,
    ttl_ms: u64,
    /// Keeps the count in step with the trees while one writer inserts and evicts.
    write: Mutex<()>,
}

fn stamp_of(bytes: &[u8]) -> Option<u64> {
    bytes.get(..STAMP).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes)
}

impl Capped {
    fn open(db: &sled::Db, name: &str, cap: usize, ttl_ms: u64) -> sled::Result<Self> {
        let data = db.open_tree(format!("{name}/data"))?;
        let by_time = db.open_tree(format!("{name}/by_time"))?;
        let count = AtomicUsize::new(data.len());
        Ok(Self { data, by_time, count, cap, ttl_ms, write: Mutex::new(()) })
    }

    fn expired(&self, stamp: u64, now: u64) -> bool {
        stamp.saturating_add(self.ttl_ms) <= now
    }

    fn put(&self, key: &[u8], payload: &[u8], now: u64) -> sled::Result<()> {
        let _writer = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut value = Vec::with_capacity(STAMP + payload.len());
        value.extend_from_slice(&now.to_be_bytes());
        value.extend_from_slice(payload);
        if self.data.insert(key, value)?.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        let mut row = now.to_be_bytes().to_vec();
        row.extend_from_slice(key);
        self.by_time.insert(row, &[])?;
        self.evict(now)
    }

    /// Pops the oldest rows while over the cap or expired. A row whose entry was rewritten
    /// since (another timestamp) is only dropped from the index.
    fn evict(&self, now: u64) -> sled::Result<()> {
        while let Some((row, _)) = self.by_time.first()? {
            let Some(stamp) = stamp_of(&row) else {
                self.by_time.remove(&row)?;
                continue;
            };
            if self.count.load(Ordering::Relaxed) <= self.cap && !self.expired(stamp, now) {
                break;
            }
            self.by_time.remove(&row)?;
            let key = &row[STAMP..];
            if self.data.get(key)?.is_some_and(|v| stamp_of(&v) == Some(stamp)) && self.data.remove(key)?.is_some() {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8], now: u64) -> sled::Result<Option<Vec<u8>>> {
        let Some(value) = self.data.get(key)? else { return Ok(None) };
        match stamp_of(&value) {
            Some(stamp) if !self.expired(stamp, now) => Ok(Some(value[STAMP..].to_vec())),
            _ => {
                self.remove(key)?;
                Ok(None)
            }
        }
    }

    fn remove(&self, key: &[u8]) -> sled::Result<()> {
        if self.data.remove(key)?.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The live values under `prefix`, oldest first, with their keys.
    fn scan(&self, prefix: &[u8], now: u64) -> sled::Result<Vec<(sled::IVec, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.data.scan_prefix(prefix) {
            let (key, value) = item?;
            match stamp_of(&value) {
                Some(stamp) if !self.expired(stamp, now) => out.push((key, value[STAMP..].to_vec())),
                _ => self.remove(&key)?,
            }
        }
        Ok(out)
    }
}

pub(super) struct SledStore {
    // Kept open for as long as the trees are used.
    _db: sled::Db,
    answers: Capped,
    semantic: Capped,
    max_candidates: usize,
    /// Orders semantic records written within the same millisecond.
    seq: AtomicU64,
}

impl SledStore {
    pub(super) fn open(dir: &Path, max_entries: usize, max_candidates: usize, ttl_ms: u64) -> Result<Self, CacheError> {
        let open_err = |source: sled::Error| CacheError::Open { path: dir.display().to_string(), source };
        let db = sled::Config::new().path(dir).cache_capacity(16 * 1024 * 1024).open().map_err(open_err)?;
        let answers = Capped::open(&db, "answers", max_entries, ttl_ms).map_err(open_err)?;
        // The semantic index refers to answers; it never needs more records than there are answers.
        let semantic = Capped::open(&db, "semantic", max_entries, ttl_ms).map_err(open_err)?;
        Ok(Self { _db: db, answers, semantic, max_candidates, seq: AtomicU64::new(0) })
    }

    pub(super) fn get(&self, key: &str, now: u64) -> Result<Option<Vec<u8>>, CacheError> {
        self.answers.get(key.as_bytes(), now).map_err(backend)
    }

    pub(super) fn put(&self, key: &str, value: &[u8], now: u64) -> Result<(), CacheError> {
        self.answers.put(key.as_bytes(), value, now).map_err(backend)
    }

    pub(super) fn remove(&self, key: &str) -> Result<(), CacheError> {
        self.answers.remove(key.as_bytes()).map_err(backend)
    }

    /// Adds a record to `partition`, dropping its oldest beyond `max_candidates`.
    pub(super) fn semantic_add(&self, partition: &str, record: &[u8], now: u64) -> Result<(), CacheError> {
        let mut key = format!("{partition}/").into_bytes();
        key.extend_from_slice(&now.to_be_bytes());
        key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        self.semantic.put(&key, record, now).map_err(backend)?;
        let records = self.semantic.scan(format!("{partition}/").as_bytes(), now).map_err(backend)?;
        for (old, _) in records.iter().take(records.len().saturating_sub(self.max_candidates)) {
            self.semantic.remove(old).map_err(backend)?;
        }
        Ok(())
    }

    pub(super) fn semantic_scan(&self, partition: &str, now: u64) -> Result<Vec<Vec<u8>>, CacheError> {
        let records = self.semantic.scan(format!("{partition}/").as_bytes(), now).map_err(backend)?;
        Ok(records.into_iter().map(|(_, v)| v).collect())
    }
}

fn backend(e: sled::Error) -> CacheError {
    CacheError::Backend { backend: "sled", message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_are_evicted_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 3, 2, 1000).unwrap();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            store.put(key, key.as_bytes(), 10 + i as u64).unwrap();
        }
        assert_eq!(store.get("a", 20).unwrap().as_deref(), Some(&b"a"[..]));
        // Rewriting `a` makes it the newest; the fourth entry then evicts `b`.
        store.put("a", b"a2", 30).unwrap();
        store.put("d", b"d", 31).unwrap();
        assert_eq!(store.get("b", 40).unwrap(), None);
        assert_eq!(store.get("a", 40).unwrap().as_deref(), Some(&b"a2"[..]));
        assert!(store.get("c", 40).unwrap().is_some());
        assert!(store.get("d", 40).unwrap().is_some());
        assert_eq!(store.answers.count.load(Ordering::Relaxed), 3);
        // Past the TTL nothing is served, and the next write sweeps expired rows.
        assert_eq!(store.get("c", 1012).unwrap(), None);
        store.put("e", b"e", 1031).unwrap();
        assert_eq!(store.answers.count.load(Ordering::Relaxed), 1);
        store.remove("e").unwrap();
        assert_eq!(store.get("e", 1032).unwrap(), None);
    }

    #[test]
    fn semantic_partitions_keep_their_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 100, 2, 1000).unwrap();
        for (i, r) in ["r1", "r2", "r3"].iter().enumerate() {
            store.semantic_add("p", r.as_bytes(), 10 + i as u64).unwrap();
        }
        store.semantic_add("q", b"other", 10).unwrap();
        let records = store.semantic_scan("p", 20).unwrap();
        assert_eq!(records, vec![b"r2".to_vec(), b"r3".to_vec()]);
        assert_eq!(store.semantic_scan("q", 20).unwrap().len(), 1);
        assert!(store.semantic_scan("p", 5000).unwrap().is_empty());
    }

    #[test]
    #[allow(clippy::disallowed_methods, reason = "a plain test thread, no tokio worker to block")]
    fn the_store_survives_a_reopen() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 10, 2, 1000).unwrap();
            store.put("k", b"v", 10).unwrap();
        }
        // sled's flusher thread lets go of the file lock shortly after the last handle drops
        // (later on a loaded machine): wait for it, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match SledStore::open(dir.path(), 10, 2, 1000) {
                Ok(store) => break store,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("the store did not reopen within 10 s: {e}"),
            }
        };
        assert_eq!(store.get("k", 20).unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(store.answers.count.load(Ordering::Relaxed), 1);
    }
}
