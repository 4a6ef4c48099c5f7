//! The OpenAI-compatible HTTP server (axum): `app(state)` builds the router so tests can call
//! it without a socket; `serve` binds, loads the model in the background and drains on
//! SIGTERM/SIGINT.
//!
//! Reading order: `api` (wire types) → `validate` (the one validation step) → `handlers`
//! (parse → validate → policy → local or remote → respond) → `responses` (local answers) /
//! `info` (model and tokenizer endpoints that generate nothing) /
//! `proxy` (remote answers) → `errors` (the status table) → `metrics` → `run` (lifecycle).
//!
//! Owns: shared server state (served model, admission counter, readiness and engine
//! liveness, routing policy, metrics), the middleware (API keys, `x-request-id`, CORS) and the
//! routes. Must not: hold engine state; requests
//! reach the engine only through its handle.

pub mod api;
mod completion;
pub mod errors;
mod grounded;
mod handlers;
mod info;
pub mod listen;
pub mod metrics;
mod proxy;
mod responses;
mod run;
mod shape;
pub mod structured;
pub mod tools;
pub mod validate;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::engine::EngineHandle;
use crate::fallback::Backends;
use crate::tokenizer::TextTokenizer;
pub use errors::{ApiError, ApiErrorKind};
pub use run::{serve, start_engine, ServeOptions};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name clients use in `model`.
    pub model_name: String,
    /// Accepted bearer tokens; empty disables authentication.
    pub api_keys: Vec<String>,
    /// Requests allowed to wait beyond the running ones before 429.
    pub max_waiting: usize,
    pub max_body_bytes: usize,
    /// A request body must have arrived in full within this (slow-drip uploads get 408).
    pub body_timeout: std::time::Duration,
    /// `max_tokens` when a request gives none (clipped to the context).
    pub default_max_tokens: usize,
    /// Price of the local model, for `usage.cost_usd` and the cost counter.
    pub local_price: crate::fallback::Price,
    /// How tool calls are read (`--tool-call-parser`).
    pub tool_parser: crate::tools::ParserChoice,
    /// Browser origins allowed by CORS (`*` for any); empty sends no CORS headers.
    pub allowed_origins: Vec<String>,
}

/// The loaded model as handlers need it. Cloning shares the engine (tests serve one engine
/// through two apps).
#[derive(Clone)]
pub struct ServedModel {
    pub engine: EngineHandle,
    pub tokenizer: TextTokenizer,
    /// Compiles the grammars of structured-output requests for this model.
    pub grammars: Arc<crate::grammar::Grammars>,
    /// The tool-call format the chat template writes, when unambiguous.
    pub detected_tools: Option<crate::tools::ToolFormat>,
    pub vocab: usize,
    pub context: usize,
    pub max_seqs: usize,
    /// Prompt text longer than this cannot fit the context however it tokenizes (context ×
    /// the longest token's bytes × 2 for normalizers); refused before tokenizing.
    pub max_prompt_bytes: usize,
    /// KV cache blocks and tokens per block: what one choice can hold at most.
    pub kv_capacity: (usize, usize),
    /// Hash of config.json and the weight files' headers and sizes.
    pub version: String,
    pub created: u64,
}

pub struct Inner {
    pub cfg: ServerConfig,
    model: OnceLock<ServedModel>,
    shutting_down: AtomicBool,
    in_flight: AtomicUsize,
    pub metrics: metrics::Metrics,
    next_id: AtomicU64,
    /// Remote backends, when configured.
    pub routing: Option<Backends>,
    /// Where each request runs: every routing rule the handlers apply.
    pub policy: crate::fallback::Policy,
    /// Moving average of local end-to-end latency in ms (for the predicted queue wait).
    ewma_latency_ms: AtomicU64,
    /// Tools the server runs itself for requests without client tools (`server::grounded`).
    pub toolbox: Option<Arc<crate::toolbox::Toolbox>>,
    /// Set at the shutdown deadline: every open stream ends with an error event.
    cut_streams: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// Holds one admission slot; released on drop (also when a client disconnects).
/// A request's share of the in-flight count (one per prompt it runs), returned on drop.
pub struct Admission(Arc<Inner>, usize);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(self.1, Ordering::SeqCst);
    }
}

/// The request id of the current request (from `x-request-id` or generated).
#[derive(Debug, Clone)]
pub struct RequestIdValue(pub String);

impl AppState {
    pub fn new(cfg: ServerConfig) -> AppState {
        AppState::with_routing(cfg, None)
    }

    pub fn with_routing(cfg: ServerConfig, routing: Option<Backends>) -> AppState {
        AppState::with_tools(cfg, routing, None)
    }

    /// A server whose model can also call the server's own tools.
    pub fn with_tools(
        cfg: ServerConfig,
        routing: Option<Backends>,
        toolbox: Option<Arc<crate::toolbox::Toolbox>>,
    ) -> AppState {
        let policy = crate::fallback::Policy::new(&cfg.model_name, routing.as_ref().map(|r| r.cfg.clone()));
        AppState(Arc::new(Inner {
            cfg,
            policy,
            model: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            metrics: metrics::Metrics::new(),
            next_id: AtomicU64::new(0),
            routing,
            ewma_latency_ms: AtomicU64::new(0),
            toolbox,
            cut_streams: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Would a new local request be refused admission right now?
    pub fn queue_full(&self, model: &ServedModel) -> bool {
        self.in_flight() >= model.max_seqs + self.0.cfg.max_waiting
    }

    /// Predicted wait before a new local request starts: requests beyond the running slots,
    /// times the average request latency, spread over those slots.
    pub fn predicted_wait_ms(&self, model: &ServedModel) -> u64 {
        let ahead = (self.in_flight() + 1).saturating_sub(model.max_seqs) as u64;
        ahead * self.0.ewma_latency_ms.load(Ordering::Relaxed) / model.max_seqs.max(1) as u64
    }

    pub fn record_latency(&self, ms: f64) {
        let old = self.0.ewma_latency_ms.load(Ordering::Relaxed) as f64;
        let new = if old == 0.0 { ms } else { 0.8 * old + 0.2 * ms };
        self.0.ewma_latency_ms.store(new as u64, Ordering::Relaxed);
    }

    /// Make the model available; `/ready` turns 200.
    pub fn set_model(&self, model: ServedModel) {
        if self.0.model.set(model).is_err() {
            tracing::warn!("model was already set");
        }
    }

    /// The served model, or 503: still loading, shutting down, or its engine died.
    pub fn model(&self) -> Result<&ServedModel, ApiError> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(ApiErrorKind::ShuttingDown, "the server is shutting down"));
        }
        let model = self
            .0
            .model
            .get()
            .ok_or_else(|| ApiError::new(ApiErrorKind::NotReady, "the model is still loading; retry shortly"))?;
        match model.engine.failure() {
            Some(why) => Err(ApiError::from(&crate::engine::EngineError::Stopped(why.to_string()))),
            None => Ok(model),
        }
    }

    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The shutdown deadline passed: open streams end now with an error event (counted).
    pub fn cut_streams(&self) {
        self.0.cut_streams.send_replace(true);
    }

    /// What a stream watches for `cut_streams`.
    pub fn stream_cut(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.cut_streams.subscribe()
    }

    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }

    /// Count a request of `prompts` prompts in flight, or refuse it (429) when that would
    /// pass the capacity; one larger than the whole capacity still runs on an idle server.
    pub fn admit(&self, model: &ServedModel, prompts: usize) -> Result<Admission, ApiError> {
        let cap = model.max_seqs + self.0.cfg.max_waiting;
        let w = prompts.max(1);
        let prev = self.0.in_flight.fetch_add(w, Ordering::SeqCst);
        let slot = Admission(self.0.clone(), w);
        if prev > 0 && prev + w > cap {
            return Err(ApiError::new(
                ApiErrorKind::Overloaded { retry_after: 1 },
                format!("the server is at capacity ({cap} requests in flight); retry later"),
            ));
        }
        Ok(slot)
    }

    fn new_request_id(&self) -> String {
        let n = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{n:08x}", rand::random::<u32>())
    }
}

/// `/v1/*` needs a valid API key when keys are configured; every response echoes the
/// request id.
async fn middleware_fn(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let rid = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| st.new_request_id());
    req.extensions_mut().insert(RequestIdValue(rid.clone()));
    let keys = &st.0.cfg.api_keys;
    let mut resp = if req.uri().path().starts_with("/v1/") && !keys.is_empty() {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match given {
            Some(k) if keys.iter().any(|x| x == k) => next.run(req).await,
            Some(_) => ApiError::new(ApiErrorKind::Unauthorized, "incorrect API key provided").into_response(),
            None => ApiError::new(
                ApiErrorKind::Unauthorized,
                "missing API key: send `Authorization: Bearer <key>`",
            )
            .into_response(),
        }
    } else {
        next.run(req).await
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ApiErrorKind::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// A panic in a handler (a bug, or one left in a dependency) answers this request 500 with
/// a JSON body; the connection and every other request carry on.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(
        ApiErrorKind::Internal,
        "the server failed on this request (a panic); this is a bug",
    )
    .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ApiErrorKind::RouteNotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// 200 while the process can serve (also while the model loads); 503 once the engine died.
async fn health(State(st): State<AppState>) -> Response {
    match st.0.model.get().and_then(|m| m.engine.failure()) {
        Some(why) => ApiError::from(&crate::engine::EngineError::Stopped(why.to_string())).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

async fn ready(State(st): State<AppState>) -> Response {
    match st.model() {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_route(State(st): State<AppState>) -> Response {
    if let Some(m) = st.0.model.get() {
        let engine = m.engine.clone();
        if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || engine.stats()).await {
            st.0.metrics.sync_engine(&stats);
        }
    }
    if let Some(r) = &st.0.routing {
        for b in &r.remotes {
            st.0.metrics
                .circuit_state
                .with_label_values(&[b.cfg.name.as_str()])
                .set(b.breaker_code());
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], st.0.metrics.render()).into_response()
}

/// CORS for the configured origins: preflights answered, `Access-Control-*` on every response
/// (errors included), the request-id and route headers readable by the page.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = match origins.iter().any(|o| o == "*") {
        true => AllowOrigin::any(),
        false => AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-aisle-route"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The router. Tests call it directly, without a socket.
pub fn app(state: AppState) -> Router {
    let cors = cors(&state.0.cfg.allowed_origins);
    let router = Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/models", get(info::models))
        .route("/v1/models/{id}", get(info::model))
        .route("/tokenize", post(info::tokenize))
        .route("/detokenize", post(info::detokenize))
        .route("/tokenizer_info", get(info::tokenizer_info))
        .route("/version", get(info::version))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), middleware_fn))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state);
    // Outside the API-key check: a preflight carries no credentials.
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}
