//! The one inference path. Every front door (`POST /v1/inference`, `/v1/chat/completions`, the
//! WebSocket API, the voice assistant, and what comes next) translates its wire shape into an
//! [`InferenceRequest`] and a [`Caller`], calls [`Pipeline::answer`], and frames what comes back.
//! No handler plans, authorizes or looks up the cache itself.
//!
//! The order is fixed here, once:
//!
//! 1. **validate** the request;
//! 2. **cache**: a stored answer (exact, semantic, or the one an identical request in flight is
//!    about to give) is replayed if the policy lets this caller have it;
//! 3. **plan**: the router's chain of targets;
//! 4. **authorize**: the policy decides per target (authorization follows routing, so a fallback
//!    target the caller may not use is skipped, never called) and narrows the knowledge-base
//!    collections;
//! 5. **route**: the router calls the targets in order, whole or streamed;
//! 6. **store**: a complete answer is written to the cache (after the response, see `cache`).
//!
//! Admission against the caller's rate limits is separate ([`Pipeline::admit`]): HTTP requests
//! are admitted by the rate-limit layer before their body is read, while each request on a
//! WebSocket and each voice turn is admitted by its session (a voice turn before whisper runs).
//!
//! This module knows no wire format and no HTTP: errors are [`PipelineError`], turned into HTTP
//! statuses in `uag-gateway`'s `error.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use uag_models::runtime::ModelRuntimes;

use crate::cache::{CacheOutcome, CacheSlot, ResponseCache, caller_scope};
use crate::config::ProviderKind;
use crate::error::ProviderError;
use crate::metrics::Metrics;
use crate::policy::{self, PolicyDenied, PolicyEngine, PolicyInput, Route};
use crate::provider::{EventStream, Identity, RequestContext};
use crate::ratelimit::{RateLimitError, RequestLimits};
use crate::routing::{FallbackRouter, RouteError, Target};
use crate::types::{Event, InferenceRequest, InferenceResponse};

/// Who is asking, and through which front door.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified identity; `None`: anonymous.
    pub identity: Option<Identity>,
    /// The caller's limits (`[rate_limits]`): provider slots and the token budget.
    pub limits: Option<RequestLimits>,
    /// The client's address: the cache scope of an anonymous caller.
    pub peer: Option<IpAddr>,
    /// The route as the policy sees it (`input.route`, `input.method`).
    pub route: Route,
}

/// Whether the cache may answer this request, as the front door decided from its wire shape
/// (`x-uag-cache: bypass`, `Cache-Control: no-cache`); `metadata.cache = false` in the body is
/// read here, the same for every front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheUse {
    #[default]
    Allowed,
    Bypass,
}

/// The answer: whole, or a stream of events (whichever `request.stream` asked for).
pub enum Answer {
    Whole(InferenceResponse),
    Stream(EventStream),
}

impl Answer {
    /// The answer as events, for front doors that speak only events (sockets, voice): a whole
    /// answer becomes its text, its sources and `done`.
    pub fn into_events(self) -> EventStream {
        match self {
            Answer::Stream(events) => events,
            Answer::Whole(r) => {
                let mut events = Vec::new();
                if !r.output.is_empty() || r.tool_calls.is_empty() {
                    events.push(Event::delta(r.output));
                }
                for (index, call) in (0u32..).zip(r.tool_calls) {
                    events.extend(Event::tool_call(index, call));
                }
                if !r.sources.is_empty() {
                    events.push(Event::Sources { sources: r.sources });
                }
                events.push(Event::Done {
                    finish_reason: r.finish_reason,
                    usage: r.usage,
                    timings: r.timings,
                    provider: Some(r.provider),
                    model: Some(r.model),
                });
                Box::pin(futures::stream::iter(events.into_iter().map(Ok)))
            }
        }
    }
}

/// An answer (or why there is none) and what the cache did for the request.
pub struct Answered {
    pub answer: Result<Answer, PipelineError>,
    /// `None` when no cache is configured or the request was invalid; else what was served
    /// (`miss` also when a stored answer was refused to this caller, the backend could not be
    /// asked, or the answer failed: a failure is never stored).
    pub cache: Option<CacheStatus>,
}

/// What the cache did for one request (the `x-uag-cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Served(CacheOutcome),
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Served(outcome) => outcome.as_str(),
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// Why the pipeline gave no answer. `error.rs` maps each to its HTTP status and JSON body.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request itself is invalid; `field` names the part at fault (`params.temperature`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Denied(#[from] PolicyDenied),
    #[error(transparent)]
    Limited(#[from] RateLimitError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// The inference path and what it needs; one per gateway.
pub struct Pipeline {
    router: Arc<FallbackRouter>,
    cache: Option<Arc<ResponseCache>>,
    policy: Option<Arc<PolicyEngine>>,
    metrics: Arc<Metrics>,
    /// The type of each configured provider, for the policy input (`provider_type`).
    provider_kinds: HashMap<String, ProviderKind>,
    /// The knowledge base (its generation keys the answers of `local` providers in the cache).
    engine: Option<Arc<uag_graphrag::Engine>>,
    /// The embedding model of the semantic cache.
    models: Option<Arc<ModelRuntimes>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("cache", &self.cache.is_some())
            .field("policy", &self.policy.is_some())
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The parts a [`Pipeline`] is built from.
pub struct PipelineParts {
    pub router: Arc<FallbackRouter>,
    pub cache: Option<Arc<ResponseCache>>,
    pub policy: Option<Arc<PolicyEngine>>,
    pub metrics: Arc<Metrics>,
    pub provider_kinds: HashMap<String, ProviderKind>,
    pub engine: Option<Arc<uag_graphrag::Engine>>,
    pub models: Option<Arc<ModelRuntimes>>,
    pub request_timeout: Duration,
}

impl Pipeline {
    pub fn new(parts: PipelineParts) -> Self {
        let PipelineParts { router, cache, policy, metrics, provider_kinds, engine, models, request_timeout } = parts;
        Self { router, cache, policy, metrics, provider_kinds, engine, models, request_timeout }
    }

    /// A fresh context for one request of `caller`: its id, deadline, identity and limits.
    pub fn context(&self, request_id: impl Into<String>, caller: &Caller) -> RequestContext {
        let mut ctx = RequestContext::new(request_id, self.request_timeout);
        ctx.identity.clone_from(&caller.identity);
        ctx.limits.clone_from(&caller.limits);
        ctx
    }

    /// Counts one request against the caller's limits (a request on a socket, a voice turn).
    pub async fn admit(&self, caller: &Caller) -> Result<(), PipelineError> {
        match &caller.limits {
            Some(limits) => Ok(limits.admit(caller.route.path).await?),
            None => Ok(()),
        }
    }

    /// Answers `req` for `caller` (see the module docs for the order). `ctx` comes from
    /// [`Pipeline::context`]; its cancel token stops upstream work when the front door drops it.
    pub async fn answer(&self, req: InferenceRequest, caller: &Caller, mut ctx: RequestContext, cache_use: CacheUse) -> Answered {
        // 1. Invalid requests are refused before the cache is asked.
        if let Err(e) = req.validate() {
            return Answered { answer: Err(PipelineError::Invalid { field: e.field.to_owned(), message: e.message }), cache: None };
        }

        // What the request asks of uag itself, read once (the cache key reads its own copy).
        let options = req.options();

        // 2. The cache: a stored answer is replayed only when the policy lets this caller have it.
        // Tool calls are actions the client takes next: a stored call replayed to another
        // conversation would act on a stale decision. Requests with tools are not cached.
        let cache_use = if options.use_cache && !req.uses_tools() { cache_use } else { CacheUse::Bypass };
        let (slot, status) = self.lookup(&req, caller, cache_use).await;
        if let Some(slot) = &slot
            && let Some(stored) = slot.answer()
            && self.may_replay(caller, &options.collections, &stored.provider, &stored.model, !stored.sources.is_empty())
        {
            record_target(&stored.provider, &stored.model);
            let replayed = if req.stream {
                slot.replay_events().map(Answer::Stream)
            } else {
                slot.replay_response(&ctx.request_id).map(Answer::Whole)
            };
            if let Some(answer) = replayed {
                return Answered { answer: Ok(answer), cache: Some(CacheStatus::Served(slot.outcome())) };
            }
        }
        // A stored answer refused to this caller, or none: what is served is a miss.
        let cache = status.map(|s| if matches!(s, CacheStatus::Served(_)) { CacheStatus::Served(CacheOutcome::Miss) } else { s });
        let answer = self.route(req, &options.collections, caller, &mut ctx, slot.as_ref()).await;
        Answered { answer: answer.map_err(|e| self.name_who_can(e)), cache }
    }

    /// A local model's refusal of tools or images names the configured providers that can take
    /// them, so the client knows which `provider/model` to ask instead.
    fn name_who_can(&self, e: PipelineError) -> PipelineError {
        match e {
            PipelineError::Provider(ProviderError::Unsupported { provider, param: param @ ("tools" | "images"), hint })
                if self.provider_kind(&provider) == Some(ProviderKind::Local) =>
            {
                let mut remote: Vec<&str> =
                    self.provider_kinds.iter().filter(|(_, kind)| **kind != ProviderKind::Local).map(|(name, _)| name.as_str()).collect();
                remote.sort_unstable();
                let hint = if remote.is_empty() {
                    format!("{hint}; none is configured here")
                } else {
                    format!("{hint}; configured here: {}", remote.join(", "))
                };
                PipelineError::Provider(ProviderError::Unsupported { provider, param, hint })
            }
            other => other,
        }
    }

    /// Steps 3-6: plan, authorize each target of the chain, route, and store what comes back
    /// complete in `slot`.
    async fn route(
        &self,
        req: InferenceRequest,
        requested: &[String],
        caller: &Caller,
        ctx: &mut RequestContext,
        slot: Option<&CacheSlot>,
    ) -> Result<Answer, PipelineError> {
        let targets = self.router.plan(&req).await?;
        let (targets, collections) = self.authorize_targets(caller, requested, targets)?;
        ctx.allowed_collections = collections;
        if req.stream {
            if let Some(first) = targets.first() {
                record_target(&first.provider, &first.model);
            }
            let mut events = self.router.stream(targets, req, ctx.clone()).await?;
            if let Some(slot) = slot {
                events = slot.tap(events);
            }
            return Ok(Answer::Stream(events));
        }
        let response = self.router.infer(&targets, &req, ctx).await?;
        record_target(&response.provider, &response.model);
        if let Some(slot) = slot {
            slot.fill(&response);
        }
        Ok(Answer::Whole(response))
    }

    /// The cache's part: a slot (hit to replay, or where to store the answer) and the status to
    /// report; `(None, None)` without a cache.
    async fn lookup(&self, req: &InferenceRequest, caller: &Caller, cache_use: CacheUse) -> (Option<CacheSlot>, Option<CacheStatus>) {
        let Some(cache) = &self.cache else { return (None, None) };
        if cache_use == CacheUse::Bypass {
            cache.count_bypass();
            return (None, Some(CacheStatus::Bypass));
        }
        let scope = caller_scope(cache.scope(), caller.identity.as_ref(), caller.peer);
        match cache.lookup(req, &scope, self.models.as_ref(), self.engine.as_ref()).await {
            Some(slot) => {
                let outcome = slot.outcome();
                (Some(slot), Some(CacheStatus::Served(outcome)))
            }
            // The cache could not be asked (backend down): answered without it, so a miss.
            None => (None, Some(CacheStatus::Served(CacheOutcome::Miss))),
        }
    }

    fn provider_kind(&self, provider: &str) -> Option<ProviderKind> {
        self.provider_kinds.get(provider).copied()
    }

    /// The targets of a routed chain the caller may use, and the collections the knowledge base
    /// may retrieve from (requested ∩ allowed). Without `[policy]` the chain is unchanged and
    /// only the requested collections apply. No allowed target: [`PolicyDenied`].
    fn authorize_targets(
        &self,
        caller: &Caller,
        requested: &[String],
        targets: Vec<Target>,
    ) -> Result<(Vec<Target>, Option<Vec<String>>), PolicyDenied> {
        let Some(engine) = &self.policy else {
            return Ok((targets, policy::effective_collections(None, requested)));
        };
        let identity = caller.identity.as_ref();
        let mut allowed = Vec::with_capacity(targets.len());
        let mut denied = Vec::new();
        let mut collections: Option<Option<Vec<String>>> = None;
        for target in targets {
            let kind = self.provider_kind(&target.provider);
            let input = PolicyInput::inference(identity, caller.route, &target.provider, kind, &target.model, requested.to_vec());
            match policy::decide(engine, &self.metrics, &input) {
                Some(decision) if decision.allow => {
                    // The knowledge base is read by local targets; the first allowed one decides.
                    if kind == Some(ProviderKind::Local) && collections.is_none() {
                        collections = Some(decision.collections);
                    }
                    allowed.push(target);
                }
                _ => denied.push(format!("{}/{}", target.provider, target.model)),
            }
        }
        let effective = policy::effective_collections(collections.flatten(), requested);
        policy::log_decision(identity, caller.route.path, "inference", &allowed, &denied, effective.as_deref());
        if allowed.is_empty() {
            let what = denied.first().map_or_else(|| "this route".to_owned(), |t| format!("`{t}`"));
            return Err(PolicyDenied(format!("the access policy does not allow {what} for this caller")));
        }
        Ok((allowed, effective))
    }

    /// Whether a stored answer may be replayed to this caller: its provider must be allowed, and
    /// an answer with citations only when the policy does not restrict the caller's collections
    /// (the cache does not know which collections the cited chunks came from; the requested
    /// ones are part of its key).
    fn may_replay(&self, caller: &Caller, requested: &[String], provider: &str, model: &str, cites: bool) -> bool {
        let Some(engine) = &self.policy else { return true };
        let kind = self.provider_kind(provider);
        let input = PolicyInput::inference(caller.identity.as_ref(), caller.route, provider, kind, model, requested.to_vec());
        match policy::decide(engine, &self.metrics, &input) {
            Some(d) if d.allow => !cites || d.collections.is_none(),
            _ => false,
        }
    }
}

/// Adds the answering provider and model to the request's log span.
fn record_target(provider: &str, model: &str) {
    let span = tracing::Span::current();
    span.record("provider", provider);
    span.record("model", model);
}
