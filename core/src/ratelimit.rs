//! Rate limits: config `[rate_limits]`; absent, nothing is limited.
//!
//! Scopes (label `scope` of `uag_rate_limit_rejections_total`):
//! - `user`: requests per minute per caller (the authenticated subject, else the client IP);
//! - `route`: requests per minute per route template, all callers together;
//! - `tokens`: a caller's token budget per minute, counted from the usage providers report
//!   after each answer; a caller over budget gets 429 on the next request;
//! - `provider`: requests per minute and concurrent requests per provider. These are checked
//!   where the router calls the provider, so an exhausted provider is skipped like a
//!   rate-limited upstream and the chain falls back.
//!
//! Backends: `memory` (governor's GCRA per process; the token budget is a fixed window) or
//! `redis`, a fixed one-minute window per key counted by one atomic Lua script, shared by every
//! gateway pointing at the same Redis. When Redis cannot be reached, `on_redis_error = "open"`
//! allows the request (and counts `uag_rate_limit_backend_errors_total`), `"closed"` answers 503.
//! The provider concurrency cap is always per process (a semaphore).
//!
//! WebSocket connections are limited at the upgrade; the requests on one connection are bounded
//! by `server.ws_max_in_flight`, and their tokens count against the caller's budget.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ProviderError;
use crate::metrics::Metrics;

const WINDOW: Duration = Duration::from_secs(60);
/// A Redis call slower than this counts as Redis being unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Keyed in-memory limiters forget idle callers once they hold this many.
const MAX_TRACKED_CALLERS: usize = 10_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendError {
    /// Allow the request (availability over strictness).
    #[default]
    Open,
    /// Refuse it with 503.
    Closed,
}

/// `[rate_limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub backend: BackendKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    pub on_redis_error: OnBackendError,
    /// Per caller (subject, else client IP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_requests_per_minute: Option<u32>,
    /// Input + output tokens per caller per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_tokens_per_minute: Option<u64>,
    /// Paths never limited (probes and scrapes).
    pub exempt_routes: Vec<String>,
    /// Route template (`/v1/chat/completions`) -> requests per minute, all callers together.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, u32>,
    /// Provider name -> its limits.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderLimitConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Memory,
            redis_url: None,
            on_redis_error: OnBackendError::Open,
            user_requests_per_minute: None,
            user_tokens_per_minute: None,
            routes: BTreeMap::new(),
            providers: BTreeMap::new(),
            exempt_routes: ["/healthz", "/readyz", "/metrics"].map(str::to_owned).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimitConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once (streams until their end); more fall back to the next target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
}

impl RateLimitConfig {
    /// Load-time checks; `providers` are the configured provider names.
    pub fn validate<'a>(&self, providers: impl Iterator<Item = &'a str>) -> Result<(), (String, String)> {
        let known: HashSet<&str> = providers.collect();
        match (self.backend, &self.redis_url) {
            (BackendKind::Redis, None) => {
                return Err(("rate_limits.redis_url".into(), "required for backend = \"redis\" (e.g. \"redis://127.0.0.1:6379\")".into()));
            }
            (_, Some(url)) => match url::Url::parse(url) {
                Ok(u) if u.scheme() == "redis" && u.host().is_some() => {}
                _ => return Err(("rate_limits.redis_url".into(), format!("`{url}` must be a redis:// URL with a host"))),
            },
            _ => {}
        }
        if self.user_requests_per_minute == Some(0) {
            return Err(("rate_limits.user_requests_per_minute".into(), "must be at least 1 (leave it out for no limit)".into()));
        }
        if self.user_tokens_per_minute == Some(0) {
            return Err(("rate_limits.user_tokens_per_minute".into(), "must be at least 1 (leave it out for no limit)".into()));
        }
        for (route, limit) in &self.routes {
            if !route.starts_with('/') {
                return Err((format!("rate_limits.routes.\"{route}\""), "must be a route path starting with `/`".into()));
            }
            if *limit == 0 {
                return Err((format!("rate_limits.routes.\"{route}\""), "must be at least 1".into()));
            }
        }
        for (name, limits) in &self.providers {
            let at = |field: &str| format!("rate_limits.providers.{name}.{field}");
            if !known.contains(name.as_str()) {
                let mut names: Vec<&str> = known.iter().copied().collect();
                names.sort_unstable();
                return Err((format!("rate_limits.providers.{name}"), format!("unknown provider (known: {})", names.join(", "))));
            }
            if limits.requests_per_minute == Some(0) {
                return Err((at("requests_per_minute"), "must be at least 1".into()));
            }
            if limits.max_concurrent == Some(0) {
                return Err((at("max_concurrent"), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// What a limit is on; bounded, so usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Route,
    Provider,
    Tokens,
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Route => "route",
            Scope::Provider => "provider",
            Scope::Tokens => "tokens",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Scope::User => "user_rate_limit_exceeded",
            Scope::Route => "route_rate_limit_exceeded",
            Scope::Provider => "provider_rate_limit_exceeded",
            Scope::Tokens => "token_budget_exceeded",
        }
    }
}

/// The state of one limit after a request counted against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is whole again (fixed window: the window's end).
    pub reset: Duration,
}

impl LimitState {
    /// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (seconds).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", ceil_secs(self.reset).to_string()),
        ]
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit exceeded ({}): retry later", scope.label())]
    Exceeded { scope: Scope, limit: LimitState, retry_after: Duration },
    #[error("the rate-limit backend is unavailable")]
    BackendUnavailable,
}

/// Redis could not answer (connect, timeout, script error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BackendError(String);

type KeyedGcra = Gcra<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;
type DirectGcra = Gcra<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Limits of one process, or shared through Redis. Built once per gateway.
pub struct RateLimiter {
    config: RateLimitConfig,
    backend: Backend,
    metrics: Arc<Metrics>,
    slots: HashMap<String, Arc<Semaphore>>,
    exempt: HashSet<String>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter").field("backend", &self.config.backend).finish_non_exhaustive()
    }
}

enum Backend {
    Memory(Memory),
    Redis(RedisCounter),
}

struct Memory {
    user: Option<KeyedGcra>,
    routes: HashMap<String, DirectGcra>,
    providers: HashMap<String, DirectGcra>,
    /// caller -> (window start, tokens used in it)
    tokens: Mutex<HashMap<String, (Instant, u64)>>,
    /// For the wait of a refused request (the limiters' own clocks are private).
    clock: DefaultClock,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
}

type GcraOutcome = Result<governor::middleware::StateSnapshot, governor::NotUntil<<DefaultClock as Clock>::Instant>>;

fn gcra_state(limit: u32, outcome: GcraOutcome, clock: &DefaultClock) -> (bool, LimitState) {
    let per_cell = WINDOW / limit.max(1);
    match outcome {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let reset = per_cell * limit.saturating_sub(remaining);
            (true, LimitState { limit: u64::from(limit), remaining: u64::from(remaining), reset })
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(clock.now());
            (false, LimitState { limit: u64::from(limit), remaining: 0, reset: wait.max(Duration::from_millis(1)) })
        }
    }
}

impl Memory {
    fn hit(&self, scope: Scope, key: &str, limit: u32) -> (bool, LimitState) {
        match scope {
            Scope::User => match &self.user {
                Some(gcra) => {
                    if gcra.len() > MAX_TRACKED_CALLERS {
                        gcra.retain_recent();
                    }
                    gcra_state(limit, gcra.check_key(&key.to_owned()), &self.clock)
                }
                None => (true, LimitState { limit: u64::from(limit), remaining: u64::from(limit), reset: Duration::ZERO }),
            },
            Scope::Route | Scope::Provider => {
                let table = if scope == Scope::Route { &self.routes } else { &self.providers };
                match table.get(key) {
                    Some(gcra) => gcra_state(limit, gcra.check(), &self.clock),
                    None => (true, LimitState { limit: u64::from(limit), remaining: u64::from(limit), reset: Duration::ZERO }),
                }
            }
            Scope::Tokens => self.tokens(key, 0, u64::from(limit)),
        }
    }

    /// Adds `used` tokens and reports the caller's budget state (over budget at `>= budget`).
    fn tokens(&self, key: &str, used: u64, budget: u64) -> (bool, LimitState) {
        let now = Instant::now();
        let Ok(mut table) = self.tokens.lock() else {
            return (true, LimitState { limit: budget, remaining: budget, reset: Duration::ZERO });
        };
        if table.len() > MAX_TRACKED_CALLERS {
            table.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = table.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(used);
        let reset = WINDOW.saturating_sub(now.duration_since(entry.0));
        (entry.1 < budget, LimitState { limit: budget, remaining: budget.saturating_sub(entry.1), reset })
    }
}

/// A fixed window per key: `INCRBY` the cost, start the window's expiry on its first hit,
/// and return the count and the window's remaining milliseconds, atomically.
const FIXED_WINDOW_LUA: &str = r"
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}
";

struct RedisCounter {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
}

impl RedisCounter {
    /// Adds `cost` to `key`'s current window; returns (count, window left).
    async fn add(&self, key: &str, cost: u64) -> Result<(u64, Duration), BackendError> {
        let mut slot = self.connection.lock().await;
        let mut connection = match slot.as_ref() {
            Some(c) => c.clone(),
            None => {
                let c = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| BackendError("connect timed out".into()))?
                    .map_err(|e| BackendError(e.to_string()))?;
                *slot = Some(c.clone());
                c
            }
        };
        drop(slot);
        let window_ms = u64::try_from(WINDOW.as_millis()).unwrap_or(60_000);
        let mut invocation = self.script.key(key);
        invocation.arg(cost).arg(window_ms);
        let result: Result<redis::RedisResult<(i64, i64)>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection)).await;
        match result {
            Ok(Ok((count, ttl_ms))) => {
                Ok((u64::try_from(count).unwrap_or(0), Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(window_ms))))
            }
            Ok(Err(e)) => {
                *self.connection.lock().await = None;
                Err(BackendError(e.to_string()))
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(BackendError("command timed out".into()))
            }
        }
    }
}

/// What travels with a request (in its extensions and its `RequestContext`) so the router
/// can apply provider limits and charge the caller's tokens.
#[derive(Clone)]
pub struct RequestLimits {
    limiter: Arc<RateLimiter>,
    caller: String,
}

impl fmt::Debug for RequestLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestLimits").field("caller", &self.caller).finish_non_exhaustive()
    }
}

/// Holds a provider's concurrency slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ProviderSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestLimits {
    /// Admits one more request of a connection admitted once (a request on a WebSocket, a
    /// voice turn): the same token budget, caller and route limits as an HTTP request, so a
    /// socket is not a way around them.
    pub async fn admit(&self, route: &str) -> Result<(), RateLimitError> {
        if self.limiter.exempt.contains(route) {
            return Ok(());
        }
        self.limiter.admit(&self.caller, route).await.map(drop)
    }

    /// Counts one request against `provider`'s limits; refusals look like an upstream 429,
    /// so the router falls back to the next target.
    pub async fn acquire_provider(&self, provider: &str) -> Result<ProviderSlot, ProviderError> {
        let limiter = &self.limiter;
        let Some(limits) = limiter.config.providers.get(provider) else {
            return Ok(ProviderSlot { _permit: None });
        };
        let permit = match limiter.slots.get(provider) {
            Some(semaphore) => match Arc::clone(semaphore).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    limiter.count_rejection(Scope::Provider);
                    return Err(ProviderError::RateLimited { retry_after: Some(Duration::from_secs(1)) });
                }
            },
            None => None,
        };
        if let Some(rpm) = limits.requests_per_minute {
            match limiter.hit(Scope::Provider, provider, u64::from(rpm)).await {
                Ok(()) => {}
                Err(RateLimitError::Exceeded { retry_after, .. }) => {
                    return Err(ProviderError::RateLimited { retry_after: Some(retry_after) });
                }
                Err(RateLimitError::BackendUnavailable) => {
                    return Err(ProviderError::RateLimited { retry_after: Some(Duration::from_secs(1)) });
                }
            }
        }
        Ok(ProviderSlot { _permit: permit })
    }

    /// Charges the tokens a provider reported to the caller's budget.
    pub async fn record_tokens(&self, tokens: u64) {
        let Some(budget) = self.limiter.config.user_tokens_per_minute else { return };
        if tokens == 0 {
            return;
        }
        match &self.limiter.backend {
            Backend::Memory(m) => {
                m.tokens(&self.caller, tokens, budget);
            }
            Backend::Redis(r) => {
                if let Err(e) = r.add(&redis_key(Scope::Tokens, &self.caller), tokens).await {
                    self.limiter.count_backend_error(&e);
                }
            }
        }
    }
}

fn redis_key(scope: Scope, key: &str) -> String {
    format!("uag:rl:{}:{key}", scope.label())
}

impl RateLimiter {
    pub fn from_config(config: &RateLimitConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let backend = match config.backend {
            BackendKind::Memory => Backend::Memory(Memory {
                user: config.user_requests_per_minute.map(|n| Gcra::keyed(quota(n)).with_middleware::<StateInformationMiddleware>()),
                routes: config.routes.iter().map(|(r, n)| (r.clone(), Gcra::direct(quota(*n)).with_middleware())).collect(),
                providers: config
                    .providers
                    .iter()
                    .filter_map(|(p, l)| Some((p.clone(), Gcra::direct(quota(l.requests_per_minute?)).with_middleware())))
                    .collect(),
                tokens: Mutex::new(HashMap::new()),
                clock: DefaultClock::default(),
            }),
            BackendKind::Redis => {
                let url = config.redis_url.as_deref().ok_or("rate_limits.redis_url is required for backend = \"redis\"")?;
                let client = redis::Client::open(url).map_err(|e| format!("rate_limits.redis_url: {e}"))?;
                Backend::Redis(RedisCounter {
                    client,
                    connection: tokio::sync::Mutex::new(None),
                    script: redis::Script::new(FIXED_WINDOW_LUA),
                })
            }
        };
        let slots = config
            .providers
            .iter()
            .filter_map(|(p, l)| Some((p.clone(), Arc::new(Semaphore::new(usize::try_from(l.max_concurrent?).unwrap_or(usize::MAX))))))
            .collect();
        let exempt = config.exempt_routes.iter().cloned().collect();
        Ok(Self { config: config.clone(), backend, metrics, slots, exempt })
    }

    fn count_rejection(&self, scope: Scope) {
        self.metrics.count_rate_limit_rejection(scope.label());
    }

    fn count_backend_error(&self, err: &BackendError) {
        tracing::warn!(error = %err, "rate-limit backend unavailable");
        self.metrics.rate_limit_backend_errors.inc();
    }

    /// Counts one unit against `key`'s `limit` in `scope` (tokens: checks the budget only).
    async fn check(&self, scope: Scope, key: &str, limit: u64) -> Result<LimitState, RateLimitError> {
        let (allowed, state) = match &self.backend {
            Backend::Memory(m) => m.hit(scope, key, u32::try_from(limit).unwrap_or(u32::MAX)),
            Backend::Redis(r) => {
                let cost = u64::from(scope != Scope::Tokens);
                match r.add(&redis_key(scope, key), cost).await {
                    Ok((count, reset)) => {
                        let allowed = if scope == Scope::Tokens { count < limit } else { count <= limit };
                        (allowed, LimitState { limit, remaining: limit.saturating_sub(count), reset })
                    }
                    Err(e) => {
                        self.count_backend_error(&e);
                        return match self.config.on_redis_error {
                            OnBackendError::Open => Ok(LimitState { limit, remaining: limit, reset: Duration::ZERO }),
                            OnBackendError::Closed => Err(RateLimitError::BackendUnavailable),
                        };
                    }
                }
            }
        };
        if allowed {
            Ok(state)
        } else {
            self.count_rejection(scope);
            Err(RateLimitError::Exceeded { scope, limit: state, retry_after: state.reset.max(Duration::from_secs(1)) })
        }
    }

    async fn hit(&self, scope: Scope, key: &str, limit: u64) -> Result<(), RateLimitError> {
        self.check(scope, key, limit).await.map(|_| ())
    }

    /// Whether `path` is exempt from every limit (`exempt_routes`: health and metrics).
    pub fn is_exempt(&self, path: &str) -> bool {
        self.exempt.contains(path)
    }

    /// Admits the first request of a connection (an HTTP request, a socket's upgrade) of
    /// `caller` (see `provider::caller_key`) on `route`: the [`RequestLimits`] it carries to the
    /// router and its sessions, and the caller limit's state for the `x-ratelimit-*` headers.
    pub async fn admit_request(
        self: &Arc<Self>,
        caller: String,
        route: &str,
    ) -> Result<(RequestLimits, Option<LimitState>), RateLimitError> {
        let state = self.admit(&caller, route).await?;
        Ok((RequestLimits { limiter: Arc::clone(self), caller }, state))
    }

    /// Admits one request of `caller` on `route`: token budget, caller limit, route limit.
    /// Returns the caller limit's state for the response headers.
    async fn admit(&self, caller: &str, route: &str) -> Result<Option<LimitState>, RateLimitError> {
        if let Some(budget) = self.config.user_tokens_per_minute {
            self.check(Scope::Tokens, caller, budget).await?;
        }
        let user = match self.config.user_requests_per_minute {
            Some(n) => Some(self.check(Scope::User, caller, u64::from(n)).await?),
            None => None,
        };
        if let Some(n) = self.config.routes.get(route) {
            self.check(Scope::Route, route, u64::from(*n)).await?;
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    //! The memory backend's limits, scope by scope, without a server.

    use super::*;

    fn limits(config: RateLimitConfig, caller: &str) -> (Arc<RateLimiter>, RequestLimits) {
        let limiter = Arc::new(RateLimiter::from_config(&config, Metrics::new()).unwrap());
        let limits = RequestLimits { limiter: Arc::clone(&limiter), caller: caller.to_owned() };
        (limiter, limits)
    }

    fn scope_of(result: Result<(), RateLimitError>) -> Option<Scope> {
        match result {
            Ok(()) => None,
            Err(RateLimitError::Exceeded { scope, .. }) => Some(scope),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[tokio::test]
    async fn each_caller_has_its_own_request_budget() {
        let config = RateLimitConfig { user_requests_per_minute: Some(3), ..RateLimitConfig::default() };
        let (limiter, alice) = limits(config, "sub:alice");
        for _ in 0..3 {
            assert_eq!(scope_of(alice.admit("/v1/inference").await), None);
        }
        assert_eq!(scope_of(alice.admit("/v1/inference").await), Some(Scope::User));
        // The same budget on another route: it is the caller's, not the route's.
        assert_eq!(scope_of(alice.admit("/v1/voice").await), Some(Scope::User));
        let bob = RequestLimits { limiter, caller: "sub:bob".into() };
        assert_eq!(scope_of(bob.admit("/v1/inference").await), None);
    }

    #[tokio::test]
    async fn a_route_limit_is_shared_by_every_caller_and_exempt_routes_are_free() {
        let mut config = RateLimitConfig { user_requests_per_minute: Some(1), ..RateLimitConfig::default() };
        config.routes.insert("/v1/chat/completions".into(), 2);
        let (limiter, a) = limits(config, "ip:10.0.0.1");
        let b = RequestLimits { limiter: Arc::clone(&limiter), caller: "ip:10.0.0.2".into() };
        let c = RequestLimits { limiter, caller: "ip:10.0.0.3".into() };
        assert_eq!(scope_of(a.admit("/v1/chat/completions").await), None);
        assert_eq!(scope_of(b.admit("/v1/chat/completions").await), None);
        assert_eq!(scope_of(c.admit("/v1/chat/completions").await), Some(Scope::Route));
        for _ in 0..5 {
            assert_eq!(scope_of(a.admit("/healthz").await), None, "probes are never limited");
        }
    }

    #[tokio::test]
    async fn reported_tokens_spend_the_callers_budget() {
        let config = RateLimitConfig { user_tokens_per_minute: Some(100), ..RateLimitConfig::default() };
        let (_, alice) = limits(config, "sub:alice");
        assert_eq!(scope_of(alice.admit("/v1/inference").await), None);
        alice.record_tokens(60).await;
        assert_eq!(scope_of(alice.admit("/v1/inference").await), None, "40 tokens left");
        alice.record_tokens(60).await;
        assert_eq!(scope_of(alice.admit("/v1/inference").await), Some(Scope::Tokens));
    }

    #[tokio::test]
    async fn a_providers_concurrency_cap_refuses_like_an_upstream_429_until_a_slot_frees() {
        let mut config = RateLimitConfig::default();
        config.providers.insert("openai".into(), ProviderLimitConfig { requests_per_minute: None, max_concurrent: Some(1) });
        let (_, limits) = limits(config, "sub:alice");
        let held = limits.acquire_provider("openai").await.unwrap();
        let refused = limits.acquire_provider("openai").await.unwrap_err();
        // Retryable: the router moves on to the next target of the chain.
        assert!(matches!(refused, ProviderError::RateLimited { .. }) && refused.is_retryable(), "{refused:?}");
        assert!(limits.acquire_provider("ollama").await.is_ok(), "other providers are not capped");
        drop(held);
        assert!(limits.acquire_provider("openai").await.is_ok());
    }

    #[tokio::test]
    async fn a_providers_request_rate_is_counted_across_callers() {
        let mut config = RateLimitConfig::default();
        config.providers.insert("openai".into(), ProviderLimitConfig { requests_per_minute: Some(2), max_concurrent: None });
        let (limiter, a) = limits(config, "sub:a");
        let b = RequestLimits { limiter, caller: "sub:b".into() };
        assert!(a.acquire_provider("openai").await.is_ok());
        assert!(b.acquire_provider("openai").await.is_ok());
        assert!(matches!(a.acquire_provider("openai").await, Err(ProviderError::RateLimited { retry_after: Some(_) })));
    }
}
