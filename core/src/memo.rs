//! [`RecentResults`]: results of recent work by key, each trusted until its deadline. The policy
//! (decisions by input document) and authentication (verified JWTs) consult one on every
//! request, so it is one mutex around a `HashMap`, with a hard cap instead of an eviction order.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub struct RecentResults<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
    cap: usize,
}

/// The number of entries only: keys can be credentials (verified JWTs) and must never be logged.
impl<V> std::fmt::Debug for RecentResults<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.entries.lock().map_or(0, |e| e.len());
        f.debug_struct("RecentResults").field("entries", &len).finish_non_exhaustive()
    }
}

impl<V: Clone> RecentResults<V> {
    /// Holds at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), cap }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, (Instant, V)>> {
        // Each change is one map call, so a panicking holder cannot leave it half-done.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key`, if its deadline has not passed.
    pub fn get(&self, key: &str) -> Option<V> {
        let now = Instant::now();
        self.entries().get(key).filter(|(until, _)| now < *until).map(|(_, value)| value.clone())
    }

    /// Remembers `value` under `key` for `ttl`. At the cap the expired entries go first, then
    /// all of them (callers' keys are few in practice; a flood only costs recomputation).
    pub fn insert(&self, key: String, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries();
        if entries.len() >= self.cap && !entries.contains_key(&key) {
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= self.cap {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_live_until_their_deadline_and_the_cap_holds() {
        let memo = RecentResults::new(2);
        memo.insert("a".into(), 1, Duration::from_secs(60));
        memo.insert("gone".into(), 2, Duration::ZERO);
        assert_eq!(memo.get("a"), Some(1));
        assert_eq!(memo.get("gone"), None, "past its deadline");
        // Full: the expired entry makes room and the live one stays.
        memo.insert("b".into(), 3, Duration::from_secs(60));
        assert_eq!((memo.get("a"), memo.get("b")), (Some(1), Some(3)));
        // Full of live entries: all go.
        memo.insert("c".into(), 4, Duration::from_secs(60));
        assert_eq!((memo.get("a"), memo.get("b"), memo.get("c")), (None, None, Some(4)));
    }
}
