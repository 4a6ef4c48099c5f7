//! Route handlers. A completion request reads as: parse → validate → policy → local or
//! remote → respond.
//!
//! Owns: the order of the steps (ready → content type → body size → JSON → requested model →
//! validation → policy → admission → local run → policy after a local give-up), each failing
//! with its `ApiError`. Must not: check fields (`validate`), hold routing rules (`Policy`),
//! format responses (`responses`, `proxy`) or touch engine internals.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::api::Endpoint;
use super::errors::{ApiError, ApiErrorKind};
use super::proxy::proxy;
use super::responses::{self, Local, LocalRun};
use super::validate::{self, Limits, ValidRequest};
use super::{AppState, RequestIdValue};
use crate::fallback::{Remote, RouteInput};
use serde_json::Value;

/// Where a request runs, once parsed, validated and routed.
enum Plan {
    Local(Box<LocalRun>),
    Remote(Remote),
}

pub async fn chat(
    State(st): State<AppState>,
    Extension(rid): Extension<RequestIdValue>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(st, rid, headers, body, Endpoint::Chat).await
}

pub async fn completions(
    State(st): State<AppState>,
    Extension(rid): Extension<RequestIdValue>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(st, rid, headers, body, Endpoint::Completion).await
}

fn reject(st: &AppState, rid: &str, e: ApiError) -> Response {
    st.0.metrics.failures.with_label_values(&[e.reason()]).inc();
    tracing::info!(target: "aisle::request", request_id = %rid, status = e.parts().0.as_u16(), error = %e.message, "rejected");
    e.into_response()
}

fn local_route(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("x-aisle-route", axum::http::HeaderValue::from_static("local"));
    resp
}

async fn handle(st: AppState, rid: RequestIdValue, headers: HeaderMap, body: Body, endpoint: Endpoint) -> Response {
    let t0 = Instant::now();
    let rid = rid.0;
    let raw: Value = match read_json(&headers, body, &st.0.cfg).await {
        Ok(v) => v,
        Err(e) => return reject(&st, &rid, e),
    };
    // Validation tokenizes, renders templates and compiles grammars: CPU work that must not
    // hold an async worker (which would stall `/health` and every stream behind a flood of
    // large requests).
    let planned = {
        let st = st.clone();
        tokio::task::spawn_blocking(move || {
            let p = plan(&st, &raw, endpoint);
            (p, raw)
        })
        .await
    };
    let Ok((planned, raw)) = planned else {
        let e = ApiError::new(
            ApiErrorKind::Internal,
            "request validation failed (a panic); this is a bug",
        );
        return reject(&st, &rid, e);
    };
    let local = match planned {
        Err(e) => return reject(&st, &rid, e),
        Ok(Plan::Remote(r)) => return proxy(&st, &rid, endpoint, raw, &r.name, r.reason, t0).await,
        Ok(Plan::Local(local)) => local,
    };
    let why = match responses::respond(st.clone(), rid.clone(), *local, t0).await {
        Ok(resp) => return local_route(resp),
        Err(why) => why,
    };
    match st.0.policy.after(&why) {
        Some(r) => {
            tracing::info!(target: "aisle::request", request_id = %rid, ?why, "rerouting");
            proxy(&st, &rid, endpoint, raw, &r.name, r.reason, t0).await
        }
        None => {
            local_route(ApiError::new(ApiErrorKind::Internal, format!("local route gave up: {why:?}")).into_response())
        }
    }
}

/// Read the body as JSON of type `T`, with OpenAI-style errors for every failure.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    cfg: &super::ServerConfig,
) -> Result<T, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ApiErrorKind::WrongContentType,
            format!("expected `Content-Type: application/json`, got `{ctype}`"),
        ));
    }
    let (limit, deadline) = (cfg.max_body_bytes, cfg.body_timeout);
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit));
    let bytes = match read.await {
        Ok(r) => r.map_err(|e| body_error(&e, limit))?,
        Err(_) => {
            return Err(ApiError::new(
                ApiErrorKind::BodyTimeout,
                format!("the request body did not arrive within {} s", deadline.as_secs_f64()),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_data() {
            ApiError::new(ApiErrorKind::Invalid { param: None }, format!("invalid request: {e}"))
        } else {
            ApiError::new(
                ApiErrorKind::MalformedJson,
                format!("request body is not valid JSON: {e}"),
            )
        }
    })
}

/// 413 when the body went past the limit; 400 when it could not be read (a malformed chunked
/// encoding, a connection that ended mid-body).
fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                ApiErrorKind::BodyTooLarge,
                format!("request body exceeds the limit of {limit} bytes"),
            );
        }
        source = s.source();
    }
    ApiError::new(
        ApiErrorKind::MalformedJson,
        format!("cannot read the request body: {e}"),
    )
}

/// Parse, validate and route: a local run with its admission slot, or a remote.
fn plan(st: &AppState, raw: &Value, endpoint: Endpoint) -> Result<Plan, ApiError> {
    let model = st.model()?;
    let policy = &st.0.policy;
    let mut body = validate::parse(endpoint, raw)?;
    let requested = policy
        .target(body.common().model.as_deref())
        .map_err(|e| ApiError::new(ApiErrorKind::ModelNotFound, e.to_string()))?;
    if let Some(remote) = requested {
        return Ok(Plan::Remote(remote));
    }
    let tools = super::grounded::prepare(st, &mut body)?;
    let limits = limits(st, model);
    let valid = match validate::request(&body, &limits) {
        Ok(v) => v,
        Err(e) if e.kind == ApiErrorKind::ContextLength => {
            return policy.on_context_overflow().map(Plan::Remote).ok_or(e);
        }
        Err(e) => return Err(e),
    };
    let plan = match policy.before(&route_input(st, model, &valid)) {
        Ok(plan) => plan,
        Err(remote) => return Ok(Plan::Remote(remote)),
    };
    let admission = match st.admit(model, valid.generations.len()) {
        Ok(a) => a,
        Err(e) => return policy.on_overload().map(Plan::Remote).ok_or(e),
    };
    let local = Local { valid, plan, admission };
    Ok(Plan::Local(Box::new(LocalRun { local, tools })))
}

/// What validation checks a request against on this server.
pub(super) fn limits<'a>(st: &AppState, model: &'a super::ServedModel) -> Limits<'a> {
    Limits {
        tokenizer: &model.tokenizer,
        vocab: model.vocab,
        context: model.context,
        kv_capacity: model.kv_capacity,
        max_prompt_bytes: model.max_prompt_bytes,
        default_max_tokens: st.0.cfg.default_max_tokens,
        grammars: &model.grammars,
        tool_format: st.0.cfg.tool_parser.resolve(model.detected_tools),
    }
}

/// What the policy's rules read about a valid local request and the local queue.
fn route_input<'a>(st: &AppState, model: &super::ServedModel, valid: &'a ValidRequest) -> RouteInput<'a> {
    RouteInput {
        model: None,
        prompt_tokens: valid.generations.iter().map(|g| g.prompt.len()).max().unwrap_or(0),
        max_tokens: valid.generations.first().map_or(0, |g| g.max_tokens),
        context: model.context,
        text: &valid.route_text,
        queue_full: st.queue_full(model),
        predicted_wait_ms: st.predicted_wait_ms(model),
    }
}
