//! In-process HTTP helpers: a server over the mistral fixture driven through `app(state)`
//! (no socket), requests, JSON and SSE bodies, and OpenAI error shapes.

use std::time::Duration;

use aisle::engine::Engine;
use aisle::server::{app, AppState, ServerConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

pub struct Server {
    pub router: Router,
    pub state: AppState,
    _engine: Engine,
}

pub fn config() -> ServerConfig {
    super::server_config()
}

pub fn server_with(cfg: ServerConfig, max_seqs: usize) -> Server {
    server_stepping(cfg, max_seqs, Duration::ZERO)
}

/// A server whose engine sleeps `step` after every step, so a long request is still running
/// when a test cancels it, however fast the machine.
pub fn server_stepping(cfg: ServerConfig, max_seqs: usize, step: Duration) -> Server {
    let (served, engine) = super::served_mistral(max_seqs, step);
    let state = AppState::new(cfg);
    state.set_model(served);
    Server {
        router: app(state.clone()),
        state,
        _engine: engine,
    }
}

pub fn server() -> Server {
    server_with(config(), 8)
}

/// Send a request; returns status, headers and the body text.
pub async fn send(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    (parts.status, parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
}

pub fn post(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub async fn json_of(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (status, _, text) = send(router, req).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The `data:` payloads of an SSE body.
pub fn sse(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

pub async fn error_of(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (st, body) = json_of(router, req).await;
    let e = &body["error"];
    assert!(
        e["message"].is_string() && e["type"].is_string(),
        "OpenAI error shape: {body}"
    );
    (st, e.clone())
}
