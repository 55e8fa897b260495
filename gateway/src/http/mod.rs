//! The HTTP edge: routes, the layer stack, and the server loop with graceful shutdown.
//!
//! - [`inference`]: `POST /v1/inference` (JSON, or SSE when `"stream": true`)
//! - [`ws`]: `GET /v1/inference/stream` (WebSocket, several requests per connection)
//! - [`openai`]: OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`
//! - [`anthropic`]: the Anthropic Messages API, `POST /v1/messages`
//! - [`responses`]: the OpenAI Responses API (stateless), `POST /v1/responses`
//! - [`discovery`]: `GET /v1/providers`, `/healthz`, `/readyz`
//! - [`audio`]: `POST /v1/audio/transcriptions`, `/v1/audio/speech`, `/v1/embeddings` (local models)
//! - [`voice`]: `GET /v1/voice` (WebSocket voice assistant: audio in, text and speech out)
//! - [`realtime`]: `GET /v1/realtime` (the OpenAI Realtime protocol onto the same voice sessions)
//! - [`kiosk`]: the kiosk web page at `/`, embedded in the binary
//! - [`extract`]: the JSON body extractor whose errors name the offending field

pub mod access;
pub mod anthropic;
pub mod audio;
pub mod client_address;
pub mod discovery;
pub mod documents;
pub mod extract;
pub mod inference;
pub mod kiosk;
pub mod openai;
pub mod realtime;
pub mod responses;
mod server;
mod socket;
pub mod voice;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{Method, Request, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{HttpLabels, Metrics};
use crate::registry::{Registry, RegistryError};

use crate::ratelimit::RateLimiter;
use crate::routing::FallbackRouter;
pub use documents::prepare_knowledge_base;
use uag_models::runtime::ModelRuntimes;

/// Why the application could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("cannot open the knowledge base: {0}")]
    KnowledgeBase(#[from] uag_graphrag::EngineError),
    #[error("cannot start the local model runtimes: {0}")]
    Models(#[from] uag_models::ModelError),
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("rate limits: {0}")]
    RateLimits(String),
    #[error("response cache: {0}")]
    Cache(String),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
}

/// Everything a handler needs: one shared [`AppStateInner`], so the clone each middleware and
/// handler takes per request is one reference count, not one per field (it showed in profiles).
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Debug)]
pub struct AppStateInner {
    pub config: Arc<Config>,
    pub router: Arc<FallbackRouter>,
    /// The GraphRAG engine behind provider `local` and the documents API.
    pub engine: Option<Arc<uag_graphrag::Engine>>,
    /// Local ASR, LLM, embeddings and TTS, each on its own worker thread.
    pub models: Option<Arc<ModelRuntimes>>,
    pub metrics: Arc<Metrics>,
    /// Fired once on SIGTERM/SIGINT: WebSockets drain and close, `/readyz` turns 503.
    pub shutdown: CancellationToken,
    /// Work that outlives its HTTP request (upgraded WebSockets); shutdown waits for it.
    pub tasks: TaskTracker,
    /// `[auth]`; `None`: anonymous everywhere.
    pub auth: Option<Arc<Authenticator>>,
    /// `[rate_limits]`; `None`: unlimited.
    pub limiter: Option<Arc<RateLimiter>>,
    /// `[cache]`; `None`: nothing is cached.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    /// `[policy]`; `None`: every caller may use every provider and collection.
    pub policy: Option<Arc<crate::policy::PolicyEngine>>,
    /// The one inference path every front door calls (over the router, cache and policy above).
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    /// What every voice session needs (the pipeline, models, `[voice]`), built once.
    pub voice: uag_voice::VoiceDeps,
    /// Where the Wyoming server listens, once `serve` has bound it (`[wyoming]`).
    pub wyoming_addr: std::sync::OnceLock<SocketAddr>,
}

impl AppState {
    /// Opens the knowledge base under the data directory and builds the providers.
    pub fn new(config: Config) -> Result<Self, StartupError> {
        let engine = Arc::new(uag_graphrag::Engine::open(&config.graphrag_dir())?);
        let manifest = uag_models::manifest::Manifest::embedded()?;
        let models = ModelRuntimes::start(manifest, config.model_runtime_config())?;
        crate::embedder::attach(&engine, &models, config.graphrag.dense);
        let registry = Registry::from_config(config.registry_config(), Some(Arc::clone(&engine)), Some(Arc::clone(&models)))?;
        Ok(Self(Arc::new(Self::build(config, registry, Some(engine), Some(models))?)))
    }

    /// State over a ready-made registry (tests plug in their own providers).
    pub fn with_registry(config: Config, registry: Registry, engine: Option<Arc<uag_graphrag::Engine>>) -> Result<Self, StartupError> {
        Ok(Self(Arc::new(Self::build(config, registry, engine, None)?)))
    }

    /// Builds every part once. A part that cannot be built stops start-up with the reason:
    /// nothing here falls back to "not limiting", "not caching" or "anonymous" on its own.
    fn build(
        config: Config,
        registry: Registry,
        engine: Option<Arc<uag_graphrag::Engine>>,
        models: Option<Arc<ModelRuntimes>>,
    ) -> Result<AppStateInner, StartupError> {
        let metrics = Metrics::new();
        let router = Arc::new(FallbackRouter::new(Arc::new(registry), &config.routes, Arc::clone(&metrics)));
        let auth = match &config.auth {
            Some(a) => {
                let client =
                    crate::provider::upstream::http_client().map_err(|e| StartupError::Registry(RegistryError::Client(e.to_string())))?;
                Some(Arc::new(Authenticator::from_config(a, client)?))
            }
            None => None,
        };
        let limiter = match &config.rate_limits {
            Some(l) => Some(Arc::new(RateLimiter::from_config(l, Arc::clone(&metrics)).map_err(StartupError::RateLimits)?)),
            None => None,
        };
        let policy = match &config.policy {
            Some(p) => Some(Arc::new(crate::policy::PolicyEngine::load(p, Arc::clone(&metrics))?)),
            None => None,
        };
        let cache = match config.cache.as_ref().filter(|c| c.enabled) {
            Some(c) => {
                let local = config.providers.iter().filter(|p| p.kind() == crate::config::ProviderKind::Local).map(|p| p.name().to_owned());
                // Opened once: sled takes a lock on its directory.
                let cache = crate::cache::ResponseCache::open(c, &config.storage.data_dir, local.collect(), Arc::clone(&metrics))
                    .map_err(|e| StartupError::Cache(e.to_string()))?;
                Some(Arc::new(cache))
            }
            None => None,
        };
        let pipeline = crate::pipeline::Pipeline::new(crate::pipeline::PipelineParts {
            router: Arc::clone(&router),
            cache: cache.clone(),
            policy: policy.clone(),
            metrics: Arc::clone(&metrics),
            provider_kinds: config.providers.iter().map(|p| (p.name().to_owned(), p.kind())).collect(),
            engine: engine.clone(),
            models: models.clone(),
            request_timeout: config.server.request_timeout(),
        });
        let pipeline = Arc::new(pipeline);
        let voice = uag_voice::VoiceDeps {
            pipeline: Arc::clone(&pipeline),
            models: models.clone(),
            metrics: Arc::clone(&metrics),
            config: Arc::new(config.voice.clone()),
        };
        Ok(AppStateInner {
            config: Arc::new(config),
            router,
            engine,
            models,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            auth,
            limiter,
            cache,
            policy,
            pipeline,
            voice,
            wyoming_addr: std::sync::OnceLock::new(),
        })
    }
}

/// The largest body `route` (a route template) accepts: documents and transcriptions take
/// files, everything else JSON. The one place these limits are decided: the routes' own
/// `DefaultBodyLimit` (while reading) and [`refuse_declared_oversize`] (before reading) use it.
pub(crate) fn body_limit(config: &Config, route: Option<&str>) -> usize {
    match route {
        Some("/v1/documents") => config.graphrag.max_document_bytes,
        // Room for the multipart framing around the largest accepted file.
        Some("/v1/audio/transcriptions") => config.models.max_audio_bytes.saturating_add(64 * 1024),
        _ => config.server.max_body_bytes,
    }
}

/// A body whose declared length (`Content-Length`) is over the route's limit is refused at
/// once, unread: waiting for a slow sender to trickle 64 MiB would hold the connection, and the
/// answer would be the same 413.
async fn refuse_declared_oversize(
    State(state): State<AppState>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(declared) = declared {
        let route = request.extensions().get::<axum::extract::MatchedPath>().map(axum::extract::MatchedPath::as_str);
        let limit = body_limit(&state.config, route);
        if declared > limit as u64 {
            return ApiError::payload_too_large(limit).into_response();
        }
    }
    next.run(request).await
}

/// Error bodies of `/v1/messages` in Anthropic's shape ([`anthropic::anthropic_errors`]).
async fn anthropic_shaped_errors(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let anthropic = request.extensions().get::<axum::extract::MatchedPath>().is_some_and(|p| p.as_str() == "/v1/messages");
    let response = next.run(request).await;
    if anthropic { anthropic::anthropic_errors(response).await } else { response }
}

/// The whole HTTP application, without a socket (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    Router::new()
        .route("/healthz", get(discovery::healthz))
        .route("/readyz", get(discovery::readyz))
        .route("/v1/inference", post(inference::infer))
        .route("/v1/inference/stream", get(ws::upgrade))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/responses", post(responses::create))
        .route("/v1/models", get(openai::models))
        .merge(audio::routes(&state.config))
        .route("/v1/providers", get(discovery::providers))
        .route("/metrics", get(discovery::metrics))
        .merge(documents::routes(&state.config))
        .merge(voice_routes(&state))
        // Route layers run after routing (the last added runs first): metrics see every answer,
        // authentication runs before rate limits so callers are limited by subject, not address.
        // Authorization of documents/audio/embeddings routes (inference decides per target).
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::policy_layer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::rate_limit_layer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::authenticate))
        // First of all: a declared body over the route's limit is 413 before anything reads it.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), refuse_declared_oversize))
        // Anthropic's routes answer every error in Anthropic's shape, those of the layers above too.
        .route_layer(axum::middleware::from_fn(anthropic_shaped_errors))
        // The kiosk page is static and holds no data: it loads without credentials (its
        // WebSocket still authenticates, e.g. with `?access_token=`).
        .merge(kiosk_routes(&state))
        // Per-route metrics run after routing, so they see the route template, never the raw path.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), track_http))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Behind a trusted reverse proxy, the client's address from X-Forwarded-For (runs after
        // the peer address is known, before authentication, rate limits and the cache read it).
        .layer(axum::middleware::from_fn_with_state(state.clone(), client_address::resolve))
        // HTTPS connections: the peer address and a verified client certificate, in the shapes
        // the rest of the stack reads (runs before authentication).
        .layer(axum::middleware::from_fn(crate::tls::expose_connect_info))
        // Browsers on other origins (configured) may call the API; preflights are answered
        // here, before authentication.
        .layer(cors_layer(&state.config.server.cors_allowed_origins))
        .layer(
            ServiceBuilder::new()
                // 1. Tag every request first, so every later layer's log lines carry the id.
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                // 2. One span per request: method, path, id; the response line at INFO.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
                            // provider/model/subject are filled in by the handlers once known.
                            tracing::info_span!(
                                "request",
                                method = %req.method(),
                                path = %req.uri().path(),
                                request_id = %id,
                                provider = tracing::field::Empty,
                                model = tracing::field::Empty,
                                subject = tracing::field::Empty,
                            )
                        })
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                // 3. Echo the id so clients can quote it in bug reports.
                .layer(PropagateRequestIdLayer::x_request_id())
                // 4. A handler that panics answers a JSON 500 and the server keeps serving.
                .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| ApiError::internal().into_response()))
                // 5. Bodies over the limit are refused (413) while being read, never buffered whole.
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}

/// CORS for `server.cors_allowed_origins`; with none configured the layer adds nothing, so
/// browsers keep their same-origin rule.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-uag-cache"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-uag-cache"),
            header::RETRY_AFTER,
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600))
}

fn voice_routes(state: &AppState) -> Router<AppState> {
    if state.config.voice.enabled {
        Router::new().route("/v1/voice", get(voice::upgrade)).route("/v1/realtime", get(realtime::upgrade))
    } else {
        Router::new()
    }
}

fn kiosk_routes(state: &AppState) -> Router<AppState> {
    if state.config.voice.enabled { kiosk::routes() } else { Router::new() }
}

async fn not_found(State(state): State<AppState>, method: Method, uri: Uri) -> ApiError {
    state.metrics.observe_http(HttpLabels { route: "unmatched".into(), method: method.to_string(), status: 404 }, Duration::ZERO);
    ApiError::not_found("route_not_found", format!("no route for {method} {}", uri.path()))
}

/// Counts and times every routed request by route template, method and status.
async fn track_http(
    State(state): State<AppState>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_http(HttpLabels { route, method, status: response.status().as_u16() }, started.elapsed());
    response
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Runs the server on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight HTTP and WebSocket work finish within `server.shutdown_grace_ms` (WebSockets get
/// a close frame), and returns.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let grace = state.config.server.shutdown_grace();
    let token = state.shutdown.clone();
    // Policies reload on SIGHUP and file changes while the server runs.
    match &state.policy {
        Some(policy) => policy.spawn_watcher(token.clone()),
        None => crate::policy::ignore_hangup(token.clone()),
    }
    let tasks = state.tasks.clone();
    if let Some(wyoming) = &state.config.wyoming {
        let listener = TcpListener::bind(&wyoming.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen for Wyoming on {}: {e}; set [wyoming] listen", wyoming.listen))
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "wyoming server listening");
        let _ = state.wyoming_addr.set(addr);
        tasks.spawn(crate::wyoming::serve(
            listener,
            wyoming.clone(),
            state.voice.clone(),
            state.limiter.clone(),
            tasks.clone(),
            token.clone(),
        ));
    }
    let stopping_since = Arc::new(std::sync::OnceLock::<Instant>::new());
    let signal = {
        let token = token.clone();
        let stopping_since = Arc::clone(&stopping_since);
        async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
            stopping_since.get_or_init(Instant::now);
            token.cancel();
            tracing::info!("shutting down: no new connections; draining in-flight work");
        }
    };
    let limits = server::ConnectionLimits {
        header_timeout: Duration::from_millis(state.config.server.header_read_timeout_ms),
        max_connections: state.config.server.max_connections,
    };
    let tls = state.config.server.tls.clone();
    let router = app(state);
    let server: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match tls {
        None => Box::pin(server::run(
            listener,
            router,
            limits,
            |_, peer: &SocketAddr| {
                let mut extensions = axum::http::Extensions::new();
                extensions.insert(axum::extract::ConnectInfo(*peer));
                extensions
            },
            signal,
        )),
        Some(tls) => {
            let reloader = crate::tls::TlsReloader::new(tls.clone()).map_err(std::io::Error::other)?;
            reloader.clone().watch(token.clone());
            let handshake = Duration::from_millis(tls.handshake_timeout_ms);
            let listener = crate::tls::TlsListener::new(listener, reloader, handshake, token.clone())?;
            Box::pin(server::run(listener, router, limits, crate::tls::connection_extensions, signal))
        }
    };
    tokio::pin!(server);
    let forced = tokio::select! {
        () = &mut server => false,
        () = async {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        } => true,
    };
    if forced {
        tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; closing remaining HTTP connections");
    }
    // WebSocket sessions drained alongside the HTTP connections; they get what is left.
    tasks.close();
    let elapsed = stopping_since.get().map_or(Duration::ZERO, Instant::elapsed);
    let left = if forced { Duration::ZERO } else { grace.saturating_sub(elapsed) };
    if tokio::time::timeout(left, tasks.wait()).await.is_err() {
        tracing::warn!(open = tasks.len(), "grace period over; dropping remaining WebSocket sessions");
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// The caller of a request (or of every request on an upgraded socket), as the auth and
/// rate-limit layers left it in the request's extensions, for the inference pipeline.
pub(crate) fn caller(extensions: &axum::http::Extensions, route: crate::policy::Route) -> crate::pipeline::Caller {
    crate::pipeline::Caller {
        identity: extensions.get::<crate::provider::Identity>().cloned(),
        limits: extensions.get::<crate::ratelimit::RequestLimits>().cloned(),
        peer: extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        route,
    }
}

/// Whether the client asked by header to skip the cache: `x-uag-cache: bypass` (or `no-cache`,
/// `off`), `Cache-Control: no-cache` or `no-store`.
pub(crate) fn cache_use(headers: &axum::http::HeaderMap) -> crate::pipeline::CacheUse {
    use crate::pipeline::CacheUse;
    let ours = headers.get(crate::cache::CACHE_HEADER).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase());
    if ours.is_some_and(|v| matches!(v.as_str(), "bypass" | "no-cache" | "off")) {
        return CacheUse::Bypass;
    }
    let no_cache = headers
        .get_all(axum::http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-cache" | "no-store"));
    if no_cache { CacheUse::Bypass } else { CacheUse::Allowed }
}

/// One request of a compatibility route (OpenAI chat and Responses, Anthropic Messages) through
/// the one inference path, with what its handler frames.
pub(crate) struct CompatAnswer {
    /// The request id the pipeline used (the routes derive their object ids from it).
    pub request_id: String,
    pub answer: crate::pipeline::Answer,
    pub cache: Option<crate::pipeline::CacheStatus>,
    /// Cancels the upstream call when dropped: disarmed for a whole answer, moved into the
    /// stream for a streamed one (a client that goes away stops the work).
    pub cancel_on_drop: tokio_util::sync::DropGuard,
}

/// Runs `req` for a compatibility route. A pipeline error comes back as the route's error
/// response (with `x-uag-cache`); validation errors and a provider's refusal of a field name
/// the route's own fields: the native `params.` prefix dropped, then `rename` for what else the
/// route calls differently.
pub(crate) async fn answer_compat(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    route: crate::policy::Route,
    req: crate::types::InferenceRequest,
    rename: fn(&mut ApiError),
) -> Result<CompatAnswer, axum::response::Response> {
    let caller = caller(extensions, route);
    let ctx = state.pipeline.context(request_id(headers), &caller);
    let request_id = ctx.request_id.clone();
    let cancel_on_drop = ctx.cancel.clone().drop_guard();
    let answered = state.pipeline.answer(req, &caller, ctx, cache_use(headers)).await;
    match answered.answer {
        Ok(answer) => Ok(CompatAnswer { request_id, answer, cache: answered.cache, cancel_on_drop }),
        Err(e) => {
            let invalid = matches!(
                e,
                crate::pipeline::PipelineError::Invalid { .. }
                    | crate::pipeline::PipelineError::Provider(crate::error::ProviderError::Unsupported { .. })
            );
            let mut e = ApiError::from(e);
            if invalid {
                e.param = e.param.map(|p| p.trim_start_matches("params.").to_owned());
                rename(&mut e);
            }
            Err(with_cache_header(e.into_response(), answered.cache))
        }
    }
}

/// A tool the client offers, read from its route's wire object: `name`, `description` and the
/// arguments' schema under `parameters_key` (`parameters`, Anthropic's `input_schema`).
/// `field` names the tool in an error (`tools[2]`).
pub(crate) fn tool_from(object: &serde_json::Value, field: String, parameters_key: &str) -> Result<crate::types::Tool, ApiError> {
    use serde_json::Value;
    let name = object.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::invalid_field(field, "a tool needs `name`"))?;
    Ok(crate::types::Tool {
        name: name.to_owned(),
        description: object.get("description").and_then(Value::as_str).map(str::to_owned),
        parameters: object.get(parameters_key).filter(|p| !p.is_null()).cloned(),
    })
}

/// The chat-shaped routes' own name for the native `input`: `messages`.
pub(crate) fn input_is_messages(e: &mut ApiError) {
    e.message = e.message.replace("`input`", "`messages`");
}

/// The uag extension object of the compatibility routes: which provider answered, and the
/// citations.
pub(crate) fn uag_extension(provider: &str, sources: &[crate::types::Source]) -> serde_json::Value {
    serde_json::json!({"provider": provider, "sources": sources})
}

/// `x-uag-cache` on an answer: what the cache did for it (absent without a cache).
pub(crate) fn with_cache_header(
    mut response: axum::response::Response,
    status: Option<crate::pipeline::CacheStatus>,
) -> axum::response::Response {
    if let Some(status) = status {
        response.headers_mut().insert(crate::cache::CACHE_HEADER, axum::http::HeaderValue::from_static(status.as_str()));
    }
    response
}

/// The `x-request-id` the first layer assigned.
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CacheUse;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn a_part_that_cannot_be_built_stops_start_up_instead_of_failing_open() {
        use crate::config::{Config, ConfigOrigin};
        // Rate limits on a Redis that names no URL: the limiter cannot exist. Before, the state
        // logged "not limiting" and served everyone unlimited.
        let mut config = Config::from_toml_str("", &ConfigOrigin::File("uag.toml".into()), &[]).unwrap();
        config.rate_limits =
            Some(crate::ratelimit::RateLimitConfig { backend: crate::ratelimit::BackendKind::Redis, ..Default::default() });
        let err = AppState::with_registry(config, Registry::from_entries(Vec::new()), None).unwrap_err();
        assert!(matches!(err, StartupError::RateLimits(_)), "{err}");
    }

    #[test]
    fn headers_can_ask_to_bypass_the_cache() {
        let mut h = HeaderMap::new();
        assert_eq!(cache_use(&h), CacheUse::Allowed);
        h.insert(crate::cache::CACHE_HEADER, HeaderValue::from_static("Bypass"));
        assert_eq!(cache_use(&h), CacheUse::Bypass);
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=0, no-cache"));
        assert_eq!(cache_use(&h), CacheUse::Bypass);
        h.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        assert_eq!(cache_use(&h), CacheUse::Allowed);
    }
}
