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

use super::api::{ChatRequest, CompletionRequest, PromptInput};
use super::errors::{ApiError, ApiErrorKind};
use super::responses::{self, Endpoint, Prepared};
use super::{AppState, RequestIdValue, ServedModel};

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

async fn handle(st: AppState, rid: RequestIdValue, headers: HeaderMap, body: Body, kind: Endpoint) -> Response {
    let t0 = Instant::now();
    match prepare(&st, &headers, body, kind).await {
        Ok(p) if p.stream => responses::stream(st, rid.0, p, t0),
        Ok(p) => responses::complete(st, rid.0, p, t0).await,
        Err(e) => {
            st.0.metrics.failures.with_label_values(&[e.reason()]).inc();
            tracing::info!(target: "aisle::request", request_id = %rid.0, status = e.parts().0.as_u16(), error = %e.message, "rejected");
            e.into_response()
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

async fn prepare(st: &AppState, headers: &HeaderMap, body: Body, kind: Endpoint) -> Result<Prepared, ApiError> {
    let model = st.model()?;
    let limit = st.0.cfg.max_body_bytes;
    let (chat, completion) = match kind {
        Endpoint::Chat => (Some(read_json::<ChatRequest>(headers, body, limit).await?), None),
        Endpoint::Completion => (None, Some(read_json::<CompletionRequest>(headers, body, limit).await?)),
    };
    let common = chat
        .as_ref()
        .map(|c| &c.common)
        .or(completion.as_ref().map(|c| &c.common))
        .cloned()
        .unwrap_or_default();
    check_model(st, &common.model)?;
    let prompt = prompt_ids(model, chat.as_ref(), completion.as_ref())?;
    let (max_tokens, logprobs) = match (&chat, &completion) {
        (Some(c), _) => (c.max_completion_tokens.or(common.max_tokens), c.logprobs()?),
        (_, Some(c)) => (common.max_tokens, c.logprobs()?),
        _ => (None, None),
    };
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
    let admission = st.admit(model)?;
    Ok(Prepared {
        kind,
        req,
        stream: common.streaming(),
        include_usage: common.include_usage(),
        logprobs: logprobs.is_some(),
        admission,
    })
}
