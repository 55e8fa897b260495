//! The shared backend: Redis, so several gateways answer from one cache.
//!
//! Answers are `SET` with `EX` (Redis expires them); a sorted set indexes their keys by write
//! time, and one Lua script writes, indexes and trims the oldest beyond `max_entries`
//! atomically. Semantic records of one partition are a list (newest first) trimmed to
//! `max_candidates`, expiring with the partition's last write.
//!
//! Every call has a short timeout. After a failure the backend is skipped for a second, so a
//! Redis that is down or black-holed costs each request at most one fast failure, never a
//! wait; the caller counts every failure in `uag_cache_backend_errors_total{backend="redis"}`
//! and serves the request without the cache.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::CacheError;

/// A Redis call slower than this counts as Redis being unreachable.
const TIMEOUT: Duration = Duration::from_millis(500);
/// How long the cache leaves Redis alone after a failure.
const BACKOFF: Duration = Duration::from_secs(1);
const PREFIX: &str = "uag:cache:v1";

/// SET the answer with its TTL, index it by time, drop index rows past the TTL, and delete
/// the oldest answers while the index holds more than the cap.
const PUT_LUA: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do
    redis.call('DEL', oldest[i])
  end
end
return 1
";

pub(super) struct RedisStore {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Until when calls fail fast after a failure.
    resting_until: std::sync::Mutex<Option<Instant>>,
    put_script: redis::Script,
    ttl: Duration,
    max_entries: usize,
    max_candidates: usize,
}

fn error(message: impl Into<String>) -> CacheError {
    CacheError::Backend { backend: "redis", message: message.into() }
}

impl RedisStore {
    pub(super) fn new(url: &str, ttl: Duration, max_entries: usize, max_candidates: usize) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError::RedisUrl(e.to_string()))?;
        Ok(Self {
            client,
            connection: tokio::sync::Mutex::new(None),
            resting_until: std::sync::Mutex::new(None),
            put_script: redis::Script::new(PUT_LUA),
            ttl,
            max_entries,
            max_candidates,
        })
    }

    fn answer_key(key: &str) -> String {
        format!("{PREFIX}:a:{key}")
    }

    fn index_key() -> String {
        format!("{PREFIX}:index")
    }

    fn semantic_key(partition: &str) -> String {
        format!("{PREFIX}:s:{partition}")
    }

    fn rest(&self) {
        *self.resting_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + BACKOFF);
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CacheError> {
        let resting = *self.resting_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if resting.is_some_and(|until| Instant::now() < until) {
            return Err(error("unavailable after a recent failure; retrying shortly"));
        }
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connected = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection()).await;
        match connected {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                self.rest();
                Err(error(format!("connect: {e}")))
            }
            Err(_) => {
                self.rest();
                Err(error("connect timed out"))
            }
        }
    }

    /// Runs one call with the timeout; a failure drops the connection and rests the backend.
    async fn call<T, F>(&self, f: impl FnOnce(MultiplexedConnection) -> F) -> Result<T, CacheError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        let result = tokio::time::timeout(TIMEOUT, f(connection)).await;
        let failure = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => error(e.to_string()),
            Err(_) => error("command timed out"),
        };
        *self.connection.lock().await = None;
        self.rest();
        Err(failure)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let key = Self::answer_key(key);
        self.call(|mut c| async move { redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut c).await }).await
    }

    pub(super) async fn put(&self, key: &str, value: &[u8], now_ms: u64) -> Result<(), CacheError> {
        let ttl_s = self.ttl.as_secs().max(1);
        let cutoff = now_ms.saturating_sub(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let mut invocation = self.put_script.key(Self::answer_key(key));
        invocation.key(Self::index_key()).arg(value).arg(ttl_s).arg(now_ms).arg(self.max_entries).arg(cutoff);
        self.call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await }).await.map(|_| ())
    }

    pub(super) async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let key = Self::answer_key(key);
        self.call(|mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("ZREM")
                .arg(Self::index_key())
                .arg(&key)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn semantic_add(&self, partition: &str, record: &[u8]) -> Result<(), CacheError> {
        let list = Self::semantic_key(partition);
        let keep = isize::try_from(self.max_candidates).unwrap_or(isize::MAX).saturating_sub(1);
        let ttl_s = self.ttl.as_secs().max(1);
        self.call(|mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&list)
                .arg(record)
                .ignore()
                .cmd("LTRIM")
                .arg(&list)
                .arg(0)
                .arg(keep)
                .ignore()
                .cmd("EXPIRE")
                .arg(&list)
                .arg(ttl_s)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn semantic_scan(&self, partition: &str) -> Result<Vec<Vec<u8>>, CacheError> {
        let list = Self::semantic_key(partition);
        self.call(|mut c| async move { redis::cmd("LRANGE").arg(list).arg(0).arg(-1).query_async::<Vec<Vec<u8>>>(&mut c).await }).await
    }
}
