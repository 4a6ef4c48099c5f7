//! Route handlers: turn an HTTP request into a validated engine request, then hand it to
//! `responses` for a JSON or SSE reply.
//!
//! Owns: the order of checks (ready → content type → body size → JSON → model → prompt →
//! context length → parameters → admission), each failing with its `ApiError`.
//! Must not: format responses or touch engine internals.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::api::{ChatRequest, CompletionRequest, MessageContent, PromptInput};
use super::errors::{ApiError, ApiErrorKind};
use super::proxy::proxy;
use super::responses::{self, Endpoint, Prepared, Reroute};
use super::{AppState, RequestIdValue, ServedModel};
use crate::fallback::{decide, Reason, Route, RouteInput};
use serde_json::Value;

/// Where a validated request runs.
enum Plan {
    Local(Box<Prepared>),
    Remote(String, Reason),
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

pub async fn models(State(st): State<AppState>) -> Response {
    match st.model() {
        Ok(m) => Json(json!({
            "object": "list",
            "data": [{"id": st.0.cfg.model_name, "object": "model", "created": m.created, "owned_by": "aisle",
                      "max_model_len": m.context, "version": m.version}],
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
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

async fn handle(st: AppState, rid: RequestIdValue, headers: HeaderMap, body: Body, kind: Endpoint) -> Response {
    let t0 = Instant::now();
    let raw: Value = match read_json(&headers, body, st.0.cfg.max_body_bytes).await {
        Ok(v) => v,
        Err(e) => return reject(&st, &rid.0, e),
    };
    match plan(&st, raw.clone(), kind) {
        Err(e) => reject(&st, &rid.0, e),
        Ok(Plan::Remote(name, reason)) => proxy(&st, &rid.0, kind, raw, &name, reason, t0).await,
        Ok(Plan::Local(p)) => {
            let streaming = p.stream;
            let outcome = match streaming {
                true => responses::stream(st.clone(), rid.0.clone(), *p, t0).await,
                false => responses::complete(st.clone(), rid.0.clone(), *p, t0).await,
            };
            let fallback =
                st.0.routing
                    .as_ref()
                    .and_then(|r| r.cfg.rules.fallback.clone().map(|f| (r, f)));
            match (outcome, fallback) {
                (Err(why), Some((_, fb))) => {
                    let reason = match &why {
                        Reroute::LowConfidence(_) => Reason::LowConfidence,
                        Reroute::Failed(_) => Reason::LocalError,
                    };
                    tracing::info!(target: "aisle::request", request_id = %rid.0, ?why, "rerouting");
                    proxy(&st, &rid.0, kind, raw, &fb, reason, t0).await
                }
                (Ok(resp), _) => local_route(resp),
                (Err(why), None) => local_route(
                    ApiError::new(ApiErrorKind::Internal, format!("local route gave up: {why:?}")).into_response(),
                ),
            }
        }
    }
}

/// Read the body as JSON of type `T`, with OpenAI-style errors for every failure.
async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.trim_start().to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::new(
            ApiErrorKind::WrongContentType,
            format!("expected `Content-Type: application/json`, got `{ctype}`"),
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ApiErrorKind::BodyTooLarge,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    })?;
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

fn check_model(st: &AppState, requested: &Option<String>) -> Result<(), ApiError> {
    match requested {
        Some(m) if *m != st.0.cfg.model_name => Err(ApiError::new(
            ApiErrorKind::ModelNotFound,
            format!(
                "the model `{m}` does not exist; this server serves `{}`",
                st.0.cfg.model_name
            ),
        )),
        _ => Ok(()),
    }
}

/// Prompt token ids for either endpoint.
fn prompt_ids(
    model: &ServedModel,
    chat: Option<&ChatRequest>,
    completion: Option<&CompletionRequest>,
) -> Result<Vec<u32>, ApiError> {
    let tok = &model.tokenizer;
    let ids = match (chat, completion) {
        (Some(c), _) => {
            let messages = c.text_messages()?;
            tok.encode_chat(&messages)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?
        }
        (_, Some(c)) => match &c.prompt {
            PromptInput::Text(t) => tok.encode(t, true),
            PromptInput::Texts(v) if v.len() == 1 => tok.encode(&v[0], true),
            PromptInput::Texts(v) if v.is_empty() => Ok(Vec::new()),
            PromptInput::Texts(_) => {
                return Err(ApiError::invalid("prompt", "only one prompt per request is supported"))
            }
            PromptInput::Tokens(ids) => Ok(ids.clone()),
        }
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        (None, None) => Vec::new(),
    };
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= model.vocab) {
        return Err(ApiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary"),
        ));
    }
    if ids.is_empty() {
        return Err(ApiError::invalid(
            if chat.is_some() { "messages" } else { "prompt" },
            "the prompt is empty",
        ));
    }
    Ok(ids)
}

/// The text a complexity rule reads: the last user message, or the prompt.
fn route_text(chat: Option<&ChatRequest>, completion: Option<&CompletionRequest>) -> String {
    if let Some(c) = chat {
        let last = c.messages.iter().rev().find(|m| m.role == "user");
        return match last.and_then(|m| m.content.as_ref()) {
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(p)) => p.iter().filter_map(|x| x.text.clone()).collect::<Vec<_>>().join(" "),
            None => String::new(),
        };
    }
    match completion.map(|c| &c.prompt) {
        Some(PromptInput::Text(t)) => t.clone(),
        Some(PromptInput::Texts(v)) => v.join(" "),
        _ => String::new(),
    }
}

fn plan(st: &AppState, raw: Value, kind: Endpoint) -> Result<Plan, ApiError> {
    let model = st.model()?;
    let data_err =
        |e: serde_json::Error| ApiError::new(ApiErrorKind::Invalid { param: None }, format!("invalid request: {e}"));
    let (chat, completion) = match kind {
        Endpoint::Chat => (
            Some(serde_json::from_value::<ChatRequest>(raw).map_err(data_err)?),
            None,
        ),
        Endpoint::Completion => (
            None,
            Some(serde_json::from_value::<CompletionRequest>(raw).map_err(data_err)?),
        ),
    };
    let common = chat
        .as_ref()
        .map(|c| &c.common)
        .or(completion.as_ref().map(|c| &c.common))
        .cloned()
        .unwrap_or_default();
    let routing = st.0.routing.as_ref();
    if routing.is_none() {
        check_model(st, &common.model)?;
    }
    let prompt = prompt_ids(model, chat.as_ref(), completion.as_ref())?;
    let (max_tokens, logprobs) = match (&chat, &completion) {
        (Some(c), _) => (c.max_completion_tokens.or(common.max_tokens), c.logprobs()?),
        (_, Some(c)) => (common.max_tokens, c.logprobs()?),
        _ => (None, None),
    };
    let mut cascade = None;
    if let Some(r) = routing {
        let text = route_text(chat.as_ref(), completion.as_ref());
        let input = RouteInput {
            model: common.model.as_deref(),
            prompt_tokens: prompt.len(),
            max_tokens: max_tokens.unwrap_or(1).max(1) as usize,
            context: model.context,
            text: &text,
            queue_full: st.queue_full(model),
            predicted_wait_ms: st.predicted_wait_ms(model),
        };
        match decide(&r.cfg, &st.0.cfg.model_name, &input) {
            Err(e) => return Err(ApiError::new(ApiErrorKind::ModelNotFound, e.to_string())),
            Ok(Route::Remote { name, reason }) => return Ok(Plan::Remote(name, reason)),
            Ok(Route::Local { cascade: true }) => {
                let c = &r.cfg.rules.cascade;
                cascade = Some((c.min_mean_logprob, c.stream_decide_tokens));
            }
            Ok(Route::Local { cascade: false }) => {}
        }
    }
    let room = model.context.saturating_sub(prompt.len());
    let asked = max_tokens.unwrap_or(1).max(1) as usize;
    if room == 0 || (max_tokens.is_some() && asked > room) {
        return Err(ApiError::new(
            ApiErrorKind::ContextLength,
            format!(
                "this model's maximum context length is {} tokens, but the request has {} prompt tokens and asks for {} completion tokens",
                model.context,
                prompt.len(),
                if max_tokens.is_some() { asked } else { 1 }
            ),
        ));
    }
    let default_max = st.0.cfg.default_max_tokens.min(room);
    let mut req = common.to_request(max_tokens, logprobs, model.vocab, default_max)?;
    req.prompt = prompt;
    if cascade.is_some() {
        // The cascade needs each token's logprob even when the client did not ask for them.
        req.sampling.logprobs.get_or_insert(0);
    }
    let reroute = routing.filter(|r| r.cfg.rules.on_local_error && r.cfg.rules.fallback.is_some());
    req.timeout = reroute
        .and_then(|r| r.cfg.rules.local_timeout_ms)
        .map(std::time::Duration::from_millis);
    let admission = match st.admit(model) {
        Ok(a) => a,
        Err(e) => match routing.and_then(|r| r.cfg.rules.fallback.clone()) {
            Some(fb) => return Ok(Plan::Remote(fb, Reason::Overload)),
            None => return Err(e),
        },
    };
    Ok(Plan::Local(Box::new(Prepared {
        cascade,
        can_reroute: reroute.is_some(),
        kind,
        req,
        stream: common.streaming(),
        include_usage: common.include_usage(),
        logprobs: logprobs.is_some(),
        admission,
    })))
}
