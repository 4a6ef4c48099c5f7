//! Answering from a remote backend in Aisle's own format: the remote's JSON body or SSE chunks
//! are re-emitted with this server's ids and `created`, `x-aisle-route: remote:NAME`, and the
//! request's cost in `usage.cost_usd`. When the remote fails, a clear 502/503 — never a hang
//! (every remote call is bounded by its timeouts).
//!
//! Owns: the remote leg of a request, its metrics and log line. Must not: decide routing.

use std::convert::Infallible;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::api::Endpoint;
use super::errors::{ApiError, ApiErrorKind};
use super::AppState;
use crate::fallback::remote::{RemoteBackend, RemoteError};
use crate::fallback::Reason;

fn route_header(mut resp: Response, name: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("remote:{name}")) {
        resp.headers_mut().insert("x-aisle-route", v);
    }
    resp
}

/// A remote's 4xx about the request itself (not our key, not rate limits) is the client's
/// problem: 400 with the remote's words. Anything else means the route failed: 502/503.
fn to_api_error(e: &RemoteError) -> ApiError {
    let kind = match e {
        RemoteError::CircuitOpen(_) => ApiErrorKind::RemoteUnavailable,
        RemoteError::Status {
            status: 400 | 404 | 413 | 422,
            ..
        } => ApiErrorKind::Invalid { param: None },
        _ => ApiErrorKind::RemoteFailed,
    };
    ApiError::new(kind, e.to_string())
}

/// Rewrite identity fields and add the cost to `usage` (if present).
fn rewrite(v: &mut Value, id: &str, created: u64, b: &RemoteBackend) -> f64 {
    v["id"] = Value::from(id);
    v["created"] = Value::from(created);
    let Some(u) = v.get_mut("usage").filter(|u| u.is_object()) else {
        return 0.0;
    };
    let count = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
    let cost = b.cfg.price.cost(count("prompt_tokens"), count("completion_tokens"));
    u["cost_usd"] = json!(cost);
    cost
}

fn log_done(st: &AppState, rid: &str, name: &str, reason: Reason, status: u16, cost: f64, t0: Instant) {
    let m = &st.0.metrics;
    let route = format!("remote:{name}");
    m.cost.with_label_values(&[route.as_str()]).inc_by(cost);
    tracing::info!(target: "aisle::request", request_id = %rid, route = %route, reason = reason.as_str(),
                   status, cost_usd = cost, latency_ms = t0.elapsed().as_secs_f64() * 1e3, "request");
}

/// Serve the request from remote `name`. `raw` is the client's JSON body, passed through.
pub async fn proxy(
    st: &AppState,
    rid: &str,
    kind: Endpoint,
    raw: Value,
    name: &str,
    reason: Reason,
    t0: Instant,
) -> Response {
    st.0.metrics.fallback.with_label_values(&[reason.as_str()]).inc();
    let Some(b) = st.0.routing.as_ref().and_then(|r| r.remote(name)) else {
        let e = ApiError::new(ApiErrorKind::Internal, format!("remote `{name}` is not configured"));
        return e.into_response();
    };
    let (path, prefix, _) = kind.names();
    let leg = Leg {
        st,
        rid,
        name,
        reason,
        t0,
        id: format!("{prefix}-{rid}"),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let resp = match raw.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        false => leg.json(b, path, &raw).await,
        true => leg.stream(b, path, &raw).await,
    };
    route_header(resp, name)
}

/// One request's remote leg: who asks, which remote, and the ids the answer gets.
struct Leg<'a> {
    st: &'a AppState,
    rid: &'a str,
    name: &'a str,
    reason: Reason,
    t0: Instant,
    id: String,
    created: u64,
}

impl Leg<'_> {
    fn failed(&self, e: &RemoteError) -> Response {
        let err = to_api_error(e);
        self.st.0.metrics.failures.with_label_values(&[err.reason()]).inc();
        log_done(
            self.st,
            self.rid,
            self.name,
            self.reason,
            err.parts().0.as_u16(),
            0.0,
            self.t0,
        );
        err.into_response()
    }

    fn observe_latency(&self, start: Instant) {
        let m = &self.st.0.metrics;
        m.remote_latency
            .with_label_values(&[self.name])
            .observe(start.elapsed().as_secs_f64());
    }

    async fn json(&self, b: &RemoteBackend, path: &str, raw: &Value) -> Response {
        let start = Instant::now();
        let result = b.complete(path, raw).await;
        self.observe_latency(start);
        match result {
            Ok(mut v) => {
                let cost = rewrite(&mut v, &self.id, self.created, b);
                log_done(self.st, self.rid, self.name, self.reason, 200, cost, self.t0);
                Json(v).into_response()
            }
            Err(e) => self.failed(&e),
        }
    }

    async fn stream(&self, b: &RemoteBackend, path: &str, raw: &Value) -> Response {
        let start = Instant::now();
        let chunks = match b.stream(path, raw).await {
            Ok(c) => c,
            Err(e) => return self.failed(&e),
        };
        self.observe_latency(start);
        // Cost accumulates from the usage chunk; the line is logged when the stream ends.
        let cost = std::sync::Arc::new(std::sync::Mutex::new((0.0f64, 200u16)));
        let (st2, name2, cost2) = (self.st.clone(), self.name.to_string(), cost.clone());
        let (id, created) = (self.id.clone(), self.created);
        let events = chunks.map(move |item| {
            let b = st2.0.routing.as_ref().and_then(|r| r.remote(&name2));
            match (item, b) {
                (Ok(mut v), Some(b)) => {
                    let c = rewrite(&mut v, &id, created, b);
                    if let Ok(mut g) = cost2.lock() {
                        g.0 += c;
                    }
                    v.to_string()
                }
                (Ok(v), None) => v.to_string(),
                (Err(e), _) => {
                    if let Ok(mut g) = cost2.lock() {
                        g.1 = 502;
                    }
                    to_api_error(&e).body().to_string()
                }
            }
        });
        let (st3, rid3, name3, reason, t0) = (
            self.st.clone(),
            self.rid.to_string(),
            self.name.to_string(),
            self.reason,
            self.t0,
        );
        let done = futures_util::stream::once(async move {
            let (c, status) = cost.lock().map(|g| *g).unwrap_or((0.0, 200));
            log_done(&st3, &rid3, &name3, reason, status, c, t0);
            "[DONE]".to_string()
        });
        let events = events
            .chain(done)
            .map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)));
        Sse::new(events).into_response()
    }
}
