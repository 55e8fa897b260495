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
                        if matches!(event, Event::Delta { .. }) && first_token.is_none() {
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
