//! Routing: from a request to an ordered chain of targets, then fallback along the chain.
//!
//! Resolution order for a request: an explicit `provider` field; else its `model` as a route
//! alias, a provider name, a `provider/model` pair, or a model some provider offers; else the
//! default chain. Along the chain, a target is retried (bounded, exponential backoff with full
//! jitter) and then left for the next one only on transient failures (connect errors,
//! timeouts, 429, 5xx); any other 4xx ends the request. Each provider has a circuit breaker.
//! A stream may fall back only before its first token reached the client.

use crate::ratelimit::ProviderSlot;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde::Serialize;

use crate::circuit::Permit;
use crate::config::{RoutesConfig, TargetSpec};
use crate::error::ProviderError;
use crate::metrics::Metrics;
use crate::provider::{EventStream, ProviderCall, RequestContext};
use crate::registry::{ProviderEntry, Registry};
use crate::types::{Event, InferenceRequest, InferenceResponse, Timings};

/// The longest pause between two retries of one target.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown provider `{0}`; GET /v1/providers lists them")]
    UnknownProvider(String),
    #[error("unknown model `{0}`; GET /v1/models lists the models and aliases")]
    UnknownModel(String),
    #[error("provider `{0}` has no default model; name one as `{0}/MODEL` or set `models` in its config")]
    NoModel(String),
}

/// One resolved step of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

#[derive(Debug)]
pub struct FallbackRouter {
    registry: Arc<Registry>,
    default_chain: Vec<TargetSpec>,
    aliases: HashMap<String, Vec<TargetSpec>>,
    max_retries: u32,
    backoff_base: Duration,
    metrics: Arc<Metrics>,
}

impl FallbackRouter {
    pub fn new(registry: Arc<Registry>, routes: &RoutesConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            registry,
            default_chain: routes.default.iter().map(|t| TargetSpec::parse(t)).collect(),
            aliases: routes
                .aliases
                .iter()
                .map(|(alias, chain)| (alias.clone(), chain.iter().map(|t| TargetSpec::parse(t)).collect()))
                .collect(),
            max_retries: routes.max_retries,
            backoff_base: Duration::from_millis(routes.retry_backoff_ms),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.aliases.keys().map(String::as_str)
    }

    /// The chain of targets for `req`.
    pub async fn plan(&self, req: &InferenceRequest) -> Result<Vec<Target>, RouteError> {
        let model = req.model.as_deref().map(str::trim).filter(|m| !m.is_empty() && *m != "default");
        if let Some(provider) = req.provider.as_deref() {
            let entry = self.registry.get(provider).ok_or_else(|| RouteError::UnknownProvider(provider.to_owned()))?;
            let model = model.map(|m| m.strip_prefix(provider).and_then(|m| m.strip_prefix('/')).unwrap_or(m));
            return Ok(vec![self.target(entry, model)?]);
        }
        let Some(model) = model else { return self.chain(&self.default_chain) };
        if let Some(chain) = self.aliases.get(model) {
            return self.chain(chain);
        }
        if let Some(entry) = self.registry.get(model) {
            return Ok(vec![self.target(entry, None)?]);
        }
        if let Some((provider, rest)) = model.split_once('/')
            && let Some(entry) = self.registry.get(provider)
        {
            return Ok(vec![self.target(entry, Some(rest))?]);
        }
        for entry in self.registry.entries() {
            if let Ok(models) = entry.provider.list_models().await
                && models.iter().any(|m| m == model)
            {
                return Ok(vec![self.target(entry, Some(model))?]);
            }
        }
        Err(RouteError::UnknownModel(model.to_owned()))
    }

    fn target(&self, entry: &ProviderEntry, model: Option<&str>) -> Result<Target, RouteError> {
        let name = entry.provider.name();
        let model = match model {
            Some(m) => m.to_owned(),
            None => entry.provider.default_model().ok_or_else(|| RouteError::NoModel(name.to_owned()))?,
        };
        Ok(Target { provider: name.to_owned(), model })
    }

    fn chain(&self, specs: &[TargetSpec]) -> Result<Vec<Target>, RouteError> {
        let mut targets = Vec::with_capacity(specs.len());
        let mut first_error = None;
        for spec in specs {
            let entry = self.registry.get(&spec.provider).ok_or_else(|| RouteError::UnknownProvider(spec.provider.clone()))?;
            match self.target(entry, spec.model.as_deref()) {
                Ok(t) => targets.push(t),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (targets.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(targets),
        }
    }

    fn entry(&self, target: &Target) -> Result<&ProviderEntry, ProviderError> {
        // Targets come from `plan`, so a miss means the registry changed under us.
        self.registry.get(&target.provider).ok_or_else(|| ProviderError::NotInstalled {
            what: format!("provider `{}`", target.provider),
            hint: "it is not in the registry".into(),
        })
    }

    fn backoff(&self, retry: u32, err: &ProviderError) -> Duration {
        if let ProviderError::RateLimited { retry_after: Some(after) } = err
            && *after <= MAX_BACKOFF
        {
            return *after;
        }
        let ceiling = self.backoff_base.saturating_mul(1 << retry.min(16)).min(MAX_BACKOFF);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Waits out a backoff; false when the wait would pass the deadline or the client left.
    async fn pause(&self, retry: u32, err: &ProviderError, ctx: &RequestContext) -> bool {
        let delay = self.backoff(retry, err);
        if delay >= ctx.remaining() {
            return false;
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Answers `req` in one piece along `targets`.
    pub async fn infer(
        &self,
        targets: &[Target],
        req: &InferenceRequest,
        ctx: &RequestContext,
    ) -> Result<InferenceResponse, ProviderError> {
        let started = Instant::now();
        let mut last = None;
        for target in targets {
            match self.infer_one(target, req, ctx).await {
                Ok(mut response) => {
                    response.id.clone_from(&ctx.request_id);
                    response.provider.clone_from(&target.provider);
                    response.timings = Timings { total_ms: millis(started.elapsed()), time_to_first_token_ms: None };
                    return Ok(response);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(request_id = %ctx.request_id, provider = %target.provider, error = %e, "falling back");
                    self.metrics.count_fallback(&target.provider);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(empty_route))
    }

    async fn infer_one(&self, target: &Target, req: &InferenceRequest, ctx: &RequestContext) -> Result<InferenceResponse, ProviderError> {
        let (response, permit, started, _slot) =
            self.call_target(target, req, ctx, |provider, call| async move { provider.infer(call).await }).await?;
        permit.success();
        self.metrics.observe_upstream(&target.provider, "ok", started.elapsed());
        self.metrics.observe_tokens(&target.provider, response.usage.input_tokens, response.usage.output_tokens);
        if let Some(limits) = &ctx.limits {
            limits.record_tokens(u64::from(response.usage.input_tokens) + u64::from(response.usage.output_tokens)).await;
        }
        Ok(response)
    }

    /// Calls one target with bounded retries: takes a circuit-breaker permit, applies the
    /// attempt timeout (capped by the deadline) and the client's cancellation, records and
    /// reports failures, and backs off between attempts. On success it hands back the value
    /// with the still-open permit: a stream reports its outcome only when it ends.
    async fn call_target<T, F, Fut>(
        &self,
        target: &Target,
        req: &InferenceRequest,
        ctx: &RequestContext,
        mut attempt: F,
    ) -> Result<(T, Permit, Instant, Option<ProviderSlot>), ProviderError>
    where
        F: FnMut(Arc<dyn crate::provider::Provider>, ProviderCall) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let entry = self.entry(target)?;
        let mut retry = 0;
        loop {
            // Provider limits first: a refusal is the gateway's own, not the provider's health.
            let slot = match &ctx.limits {
                Some(limits) => Some(limits.acquire_provider(&target.provider).await?),
                None => None,
            };
            let permit = entry.breaker.try_acquire().ok_or_else(|| ProviderError::CircuitOpen { provider: target.provider.clone() })?;
            let timeout = entry.timeout.min(ctx.remaining());
            let call = ProviderCall { model: target.model.clone(), request: req.clone(), ctx: ctx.clone(), timeout };
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => Err(ProviderError::Cancelled),
                r = tokio::time::timeout(timeout, attempt(Arc::clone(&entry.provider), call)) => r.unwrap_or(Err(ProviderError::Timeout)),
            };
            let err = match result {
                Ok(value) => return Ok((value, permit, started, slot)),
                Err(e) => e,
            };
            self.metrics.observe_upstream(&target.provider, err.code(), started.elapsed());
            report(permit, &err);
            if !same_target_retryable(&err) || retry >= self.max_retries {
                return Err(err);
            }
            retry += 1;
            if !self.pause(retry, &err, ctx).await {
                return Err(err);
            }
        }
    }

    /// Opens a stream on the first target along `targets` that produces an event; the error of
    /// the last target tried when none does.
    async fn open(
        &self,
        targets: &mut std::vec::IntoIter<Target>,
        req: &InferenceRequest,
        ctx: &RequestContext,
    ) -> Result<OpenStream, ProviderError> {
        let mut last = None;
        for target in targets.by_ref() {
            match self.open_one(&target, req, ctx).await {
                Ok(open) => return Ok(open),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(request_id = %ctx.request_id, provider = %target.provider, error = %e, "stream falling back");
                    self.metrics.count_fallback(&target.provider);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(empty_route))
    }

    async fn open_one(&self, target: &Target, req: &InferenceRequest, ctx: &RequestContext) -> Result<OpenStream, ProviderError> {
        let idle_timeout = self.entry(target)?.timeout;
        let ((stream, first), permit, _, slot) = self
            .call_target(target, req, ctx, |provider, call| async move {
                let mut stream = provider.stream_infer(call).await?;
                match stream.next().await {
                    Some(Ok(first)) => Ok((stream, first)),
                    Some(Err(e)) => Err(e),
                    None => Err(ProviderError::StreamInterrupted("the stream ended before its first event".into())),
                }
            })
            .await?;
        Ok(OpenStream { target: target.clone(), stream, first: Some(first), permit: Some(permit), idle_timeout, _slot: slot })
    }

    /// Streams an answer along `targets`. Fails (for a proper HTTP status) when no target
    /// produces a first event; afterwards failures arrive as `Err` items, and a failure before
    /// the first delta falls back to the next target with a `fallback` status event.
    pub async fn stream(
        self: &Arc<Self>,
        targets: Vec<Target>,
        req: InferenceRequest,
        ctx: RequestContext,
    ) -> Result<EventStream, ProviderError> {
        let started = Instant::now();
        let mut remaining = targets.into_iter();
        let mut current = self.open(&mut remaining, &req, &ctx).await?;
        let router = Arc::clone(self);
        Ok(Box::pin(async_stream::stream! {
            let mut first_token: Option<Duration> = None;
            loop {
                let item = match current.first.take() {
                    Some(first) => Some(Ok(first)),
                    None => tokio::select! {
                        biased;
                        () = ctx.cancel.cancelled() => Some(Err(ProviderError::Cancelled)),
                        next = tokio::time::timeout(current.idle_timeout, current.stream.next()) => next.unwrap_or(Some(Err(ProviderError::Timeout))),
                    },
                };
                let item = item.unwrap_or_else(|| Err(ProviderError::StreamInterrupted("the stream ended without `done`".into())));
                match item {
                    Ok(Event::Done { finish_reason, usage, .. }) => {
                        if let Some(p) = current.permit.take() { p.success(); }
                        router.metrics.observe_upstream(&current.target.provider, "ok", started.elapsed());
                        router.metrics.observe_tokens(&current.target.provider, usage.input_tokens, usage.output_tokens);
                        if let Some(limits) = &ctx.limits {
                            limits.record_tokens(u64::from(usage.input_tokens) + u64::from(usage.output_tokens)).await;
                        }
                        yield Ok(Event::Done {
                            finish_reason,
                            usage,
                            timings: Timings { total_ms: millis(started.elapsed()), time_to_first_token_ms: first_token.map(millis) },
                            provider: Some(current.target.provider.clone()),
                            model: Some(current.target.model.clone()),
                        });
                        return;
                    }
                    Ok(event) => {
                        if matches!(event, Event::Delta { .. } | Event::ToolCallStart { .. }) && first_token.is_none() {
                            first_token = Some(started.elapsed());
                            router.metrics.observe_first_token(&current.target.provider, started.elapsed());
                        }
                        yield Ok(event);
                    }
                    Err(err) => {
                        if let Some(p) = current.permit.take() { report(p, &err); }
                        router.metrics.observe_upstream(&current.target.provider, err.code(), started.elapsed());
                        if first_token.is_some() || !err.is_retryable() {
                            yield Err(err);
                            return;
                        }
                        if remaining.len() == 0 {
                            yield Err(err);
                            return;
                        }
                        tracing::warn!(request_id = %ctx.request_id, provider = %current.target.provider, error = %err, "stream falling back before its first token");
                        router.metrics.count_fallback(&current.target.provider);
                        match router.open(&mut remaining, &req, &ctx).await {
                            Ok(next) => {
                                yield Ok(Event::status("fallback", format!("{} failed; answering with {}", current.target.provider, next.target.provider)));
                                current = next;
                            }
                            Err(e) => {
                                yield Err(e);
                                return;
                            }
                        }
                    }
                }
            }
        }))
    }
}

struct OpenStream {
    target: Target,
    stream: EventStream,
    first: Option<Event>,
    permit: Option<Permit>,
    idle_timeout: Duration,
    /// The provider's concurrency slot, held until the stream ends or falls back.
    _slot: Option<ProviderSlot>,
}

/// Retrying the same target only helps with transient upstream trouble; a missing component
/// or an open circuit will not change within a backoff.
fn same_target_retryable(err: &ProviderError) -> bool {
    err.is_retryable() && !matches!(err, ProviderError::NotInstalled { .. } | ProviderError::CircuitOpen { .. })
}

fn empty_route() -> ProviderError {
    ProviderError::NotInstalled { what: "a route target".into(), hint: "the route has no targets left".into() }
}

fn report(permit: Permit, err: &ProviderError) {
    if err.counts_against_provider() {
        permit.failure();
    } else {
        permit.neutral();
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    //! The router against scripted providers: each answers from a list of outcomes, one per
    //! call, and counts its calls. No sockets, no upstream: these run in milliseconds.

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::circuit::CircuitBreaker;
    use crate::config::ProviderKind;
    use crate::provider::{Capabilities, Health, Provider};
    use crate::types::{FinishReason, Usage};

    /// What one call of a scripted provider does.
    #[derive(Debug, Clone)]
    enum Outcome {
        Answer(&'static str),
        Fail(ProviderError),
        /// Streams one delta, then fails (a stream broken after its first token).
        BreakAfterFirstToken(ProviderError),
    }

    #[derive(Debug)]
    struct Scripted {
        name: &'static str,
        script: Mutex<VecDeque<Outcome>>,
        /// When the script runs out.
        then: Outcome,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(name: &'static str, script: Vec<Outcome>, then: Outcome) -> Arc<Self> {
            Arc::new(Self { name, script: Mutex::new(script.into()), then, calls: AtomicU32::new(0) })
        }
        fn next(&self) -> Outcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.then.clone())
        }
        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
        fn response(&self, model: &str, text: &str) -> InferenceResponse {
            InferenceResponse {
                id: "r".into(),
                provider: self.name.into(),
                model: model.into(),
                output: text.into(),
                tool_calls: Vec::new(),
                sources: Vec::new(),
                finish_reason: FinishReason::Stop,
                usage: Usage::default(),
                timings: Timings::default(),
            }
        }
    }

    fn done() -> Event {
        Event::Done { finish_reason: FinishReason::Stop, usage: Usage::default(), timings: Timings::default(), provider: None, model: None }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> ProviderKind {
            ProviderKind::OpenAiCompatible
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities { streaming: true, citations: false, model_discovery: false }
        }
        fn default_model(&self) -> Option<String> {
            Some(format!("{}-model", self.name))
        }
        async fn infer(&self, call: ProviderCall) -> Result<InferenceResponse, ProviderError> {
            match self.next() {
                Outcome::Answer(text) => Ok(self.response(&call.model, text)),
                Outcome::Fail(e) | Outcome::BreakAfterFirstToken(e) => Err(e),
            }
        }
        async fn stream_infer(&self, _call: ProviderCall) -> Result<EventStream, ProviderError> {
            let items: Vec<Result<Event, ProviderError>> = match self.next() {
                Outcome::Answer(text) => vec![Ok(Event::delta(text)), Ok(done())],
                Outcome::Fail(e) => return Err(e),
                Outcome::BreakAfterFirstToken(e) => vec![Ok(Event::delta("half an ans")), Err(e)],
            };
            Ok(Box::pin(futures::stream::iter(items)))
        }
        async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
            Ok(vec![format!("{}-model", self.name), format!("{}-other", self.name)])
        }
        async fn health(&self) -> Health {
            Health::ok()
        }
    }

    fn router(providers: &[&Arc<Scripted>], routes: RoutesConfig) -> Arc<FallbackRouter> {
        let entries = providers
            .iter()
            .map(|p| ProviderEntry {
                provider: Arc::clone(*p) as Arc<dyn Provider>,
                breaker: CircuitBreaker::new(3, Duration::from_secs(60)),
                timeout: Duration::from_secs(5),
            })
            .collect();
        Arc::new(FallbackRouter::new(Arc::new(Registry::from_entries(entries)), &routes, Metrics::new()))
    }

    fn routes(default: &[&str]) -> RoutesConfig {
        RoutesConfig { default: default.iter().map(|s| (*s).to_owned()).collect(), retry_backoff_ms: 1, ..RoutesConfig::default() }
    }

    fn request(json: &str) -> InferenceRequest {
        serde_json::from_str(json).unwrap()
    }

    fn ctx() -> RequestContext {
        RequestContext::new("t", Duration::from_secs(10))
    }

    fn upstream_503() -> ProviderError {
        ProviderError::Upstream { status: 503, detail: String::new() }
    }

    async fn collect(events: EventStream) -> (String, Vec<String>, Option<ProviderError>) {
        let mut text = String::new();
        let mut kinds = Vec::new();
        let mut failure = None;
        let mut events = events;
        while let Some(item) = events.next().await {
            match item {
                Ok(Event::Delta { text: t }) => text.push_str(&t),
                Ok(e) => kinds.push(e.kind().to_owned()),
                Err(e) => failure = Some(e),
            }
        }
        (text, kinds, failure)
    }

    #[tokio::test]
    async fn a_plan_resolves_aliases_providers_pairs_and_discovered_models() {
        let a = Scripted::new("a", vec![], Outcome::Answer("x"));
        let b = Scripted::new("b", vec![], Outcome::Answer("x"));
        let mut cfg = routes(&["a", "b/big"]);
        cfg.aliases.insert("chat".into(), vec!["b".into(), "a/small".into()]);
        let r = router(&[&a, &b], cfg);
        let t = |p: &str, m: &str| Target { provider: p.into(), model: m.into() };
        assert_eq!(r.plan(&request(r#"{"input":"q"}"#)).await.unwrap(), vec![t("a", "a-model"), t("b", "big")]);
        assert_eq!(r.plan(&request(r#"{"input":"q","model":"chat"}"#)).await.unwrap(), vec![t("b", "b-model"), t("a", "small")]);
        assert_eq!(r.plan(&request(r#"{"input":"q","model":"b"}"#)).await.unwrap(), vec![t("b", "b-model")]);
        assert_eq!(r.plan(&request(r#"{"input":"q","model":"a/tiny"}"#)).await.unwrap(), vec![t("a", "tiny")]);
        assert_eq!(r.plan(&request(r#"{"input":"q","model":"b-other"}"#)).await.unwrap(), vec![t("b", "b-other")]);
        assert_eq!(r.plan(&request(r#"{"input":"q","provider":"a","model":"a/m"}"#)).await.unwrap(), vec![t("a", "m")]);
        assert_eq!(r.plan(&request(r#"{"input":"q","model":"nope"}"#)).await, Err(RouteError::UnknownModel("nope".into())));
        assert_eq!(r.plan(&request(r#"{"input":"q","provider":"c"}"#)).await, Err(RouteError::UnknownProvider("c".into())));
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_then_falls_back() {
        let a = Scripted::new("a", vec![], Outcome::Fail(upstream_503()));
        let b = Scripted::new("b", vec![], Outcome::Answer("from b"));
        let r = router(&[&a, &b], routes(&["a", "b"]));
        let req = request(r#"{"input":"q"}"#);
        let targets = r.plan(&req).await.unwrap();
        let answer = r.infer(&targets, &req, &ctx()).await.unwrap();
        assert_eq!((answer.provider.as_str(), answer.output.as_str()), ("b", "from b"));
        // One try and `max_retries` (1) more on `a`, then `b` once.
        assert_eq!((a.calls(), b.calls()), (2, 1));
    }

    #[tokio::test]
    async fn a_retry_on_the_same_target_can_succeed() {
        let a = Scripted::new("a", vec![Outcome::Fail(ProviderError::Timeout)], Outcome::Answer("second try"));
        let b = Scripted::new("b", vec![], Outcome::Answer("from b"));
        let r = router(&[&a, &b], routes(&["a", "b"]));
        let req = request(r#"{"input":"q"}"#);
        let answer = r.infer(&r.plan(&req).await.unwrap(), &req, &ctx()).await.unwrap();
        assert_eq!((answer.provider.as_str(), answer.output.as_str()), ("a", "second try"));
        assert_eq!((a.calls(), b.calls()), (2, 0));
    }

    #[tokio::test]
    async fn a_client_error_ends_the_request_without_fallback() {
        let a = Scripted::new("a", vec![], Outcome::Fail(ProviderError::Rejected { status: 400, message: "bad".into() }));
        let b = Scripted::new("b", vec![], Outcome::Answer("from b"));
        let r = router(&[&a, &b], routes(&["a", "b"]));
        let req = request(r#"{"input":"q"}"#);
        let err = r.infer(&r.plan(&req).await.unwrap(), &req, &ctx()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Rejected { status: 400, .. }), "{err:?}");
        assert_eq!((a.calls(), b.calls()), (1, 0), "a 4xx is neither retried nor passed on");
    }

    #[tokio::test]
    async fn repeated_failures_open_the_breaker_and_later_requests_skip_the_provider() {
        let a = Scripted::new("a", vec![], Outcome::Fail(upstream_503()));
        let b = Scripted::new("b", vec![], Outcome::Answer("from b"));
        let r = router(&[&a, &b], RoutesConfig { max_retries: 0, ..routes(&["a", "b"]) });
        let req = request(r#"{"input":"q"}"#);
        let targets = r.plan(&req).await.unwrap();
        for _ in 0..3 {
            assert_eq!(r.infer(&targets, &req, &ctx()).await.unwrap().provider, "b");
        }
        assert_eq!(a.calls(), 3, "the breaker opens at the third failure");
        for _ in 0..5 {
            assert_eq!(r.infer(&targets, &req, &ctx()).await.unwrap().provider, "b");
        }
        assert_eq!(a.calls(), 3, "an open breaker is not called during its cooldown");
        assert_eq!(b.calls(), 8);
    }

    #[tokio::test]
    async fn a_stream_falls_back_before_its_first_token_never_after() {
        let a = Scripted::new("a", vec![], Outcome::Fail(upstream_503()));
        let b = Scripted::new("b", vec![], Outcome::Answer("streamed by b"));
        let r = router(&[&a, &b], RoutesConfig { max_retries: 0, ..routes(&["a", "b"]) });
        let req = request(r#"{"input":"q","stream":true}"#);
        let (text, kinds, failure) = collect(r.stream(r.plan(&req).await.unwrap(), req.clone(), ctx()).await.unwrap()).await;
        assert_eq!(text, "streamed by b");
        assert_eq!(kinds, ["done"]);
        assert!(failure.is_none());

        // Broken after the first token reached the client: the error is passed on, no fallback
        // (the client would get two half answers).
        let a = Scripted::new("a", vec![], Outcome::BreakAfterFirstToken(upstream_503()));
        let b = Scripted::new("b", vec![], Outcome::Answer("never"));
        let r = router(&[&a, &b], RoutesConfig { max_retries: 0, ..routes(&["a", "b"]) });
        let (text, _, failure) = collect(r.stream(r.plan(&req).await.unwrap(), req.clone(), ctx()).await.unwrap()).await;
        assert_eq!(text, "half an ans");
        assert!(matches!(failure, Some(ProviderError::Upstream { status: 503, .. })), "{failure:?}");
        assert_eq!(b.calls(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_request_is_not_retried() {
        let a = Scripted::new("a", vec![], Outcome::Fail(upstream_503()));
        let b = Scripted::new("b", vec![], Outcome::Answer("from b"));
        let r = router(&[&a, &b], RoutesConfig { max_retries: 3, retry_backoff_ms: 200, ..routes(&["a", "b"]) });
        let req = request(r#"{"input":"q"}"#);
        let ctx = ctx();
        ctx.cancel.cancel();
        assert!(r.infer(&r.plan(&req).await.unwrap(), &req, &ctx).await.is_err());
        assert_eq!(b.calls(), 0, "nothing is asked for a client that left");
    }
}
