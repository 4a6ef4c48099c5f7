//! The endpoints that describe the served model and use its tokenizer without generating:
//! `GET /v1/models`, `GET /v1/models/{id}`, vLLM's `POST /tokenize`, `POST /detokenize` and
//! `GET /tokenizer_info` (what lm-evaluation-harness's remote tokenizer reads), `GET /version`.
//!
//! Owns: their request and response shapes. Must not: reach the engine (nothing here queues
//! work or takes an admission slot).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::ChatMessageIn;
use super::errors::{ApiError, ApiErrorKind};
use super::{AppState, ServedModel};
use crate::tokenizer::TextTokenizer;

/// The model object OpenAI's `models.list` and `models.retrieve` return.
fn model_json(st: &AppState, m: &ServedModel) -> Value {
    json!({"id": st.0.cfg.model_name, "object": "model", "created": m.created, "owned_by": "aisle",
           "max_model_len": m.context, "version": m.version})
}

pub async fn models(State(st): State<AppState>) -> Response {
    match st.model() {
        Ok(m) => Json(json!({"object": "list", "data": [model_json(&st, m)]})).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn model(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match st.model() {
        Ok(m) if id == st.0.cfg.model_name => Json(model_json(&st, m)).into_response(),
        Ok(_) => unknown_model(&id).into_response(),
        Err(e) => e.into_response(),
    }
}

fn unknown_model(id: &str) -> ApiError {
    ApiError::new(
        ApiErrorKind::ModelNotFound,
        format!("the model `{id}` does not exist on this server"),
    )
}

/// The served model, checking the request's optional `model` names it.
fn served<'a>(st: &'a AppState, model: Option<&str>) -> Result<&'a ServedModel, ApiError> {
    let m = st.model()?;
    match model {
        Some(id) if id != st.0.cfg.model_name => Err(unknown_model(id)),
        _ => Ok(m),
    }
}

/// A JSON answer, or the error's OpenAI-style body.
fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// vLLM's `/tokenize`: a `prompt`, or chat `messages` rendered by the chat template.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    model: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<ChatMessageIn>>,
    /// Default: true for a prompt, false for messages (the template writes them), as vLLM.
    add_special_tokens: Option<bool>,
    add_generation_prompt: Option<bool>,
    tools: Option<Value>,
    return_token_strs: Option<bool>,
}

pub async fn tokenize(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let run = async {
        let req: TokenizeRequest = super::handlers::read_json(&headers, body, &st.0.cfg).await?;
        let m = served(&st, req.model.as_deref())?;
        let (tok, context) = (m.tokenizer.clone(), m.context);
        // Tokenizing a large body is CPU work: off the request threads.
        tokio::task::spawn_blocking(move || tokenize_body(&tok, context, &req))
            .await
            .map_err(|e| ApiError::new(ApiErrorKind::Internal, format!("tokenizer task failed: {e}")))?
    };
    respond(run.await)
}

fn tokenize_body(tok: &TextTokenizer, context: usize, req: &TokenizeRequest) -> Result<Value, ApiError> {
    let tokens = match (&req.prompt, &req.messages) {
        (Some(p), None) => tok
            .encode(p, req.add_special_tokens.unwrap_or(true))
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        (None, Some(messages)) => chat_tokens(tok, req, messages)?,
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "give exactly one of `prompt` and `messages`",
            ))
        }
    };
    let strs = req.return_token_strs.unwrap_or(false).then(|| {
        tokens
            .iter()
            .map(|&id| tok.token_str(id).unwrap_or_default())
            .collect::<Vec<_>>()
    });
    Ok(json!({"count": tokens.len(), "max_model_len": context, "tokens": tokens, "token_strs": strs}))
}

fn chat_tokens(tok: &TextTokenizer, req: &TokenizeRequest, messages: &[ChatMessageIn]) -> Result<Vec<u32>, ApiError> {
    let messages = super::validate::text_messages(messages)?;
    if let Some(tools) = &req.tools {
        super::tools::functions(tools)?;
    }
    let text = tok
        .render_chat(&messages, req.tools.as_ref(), req.add_generation_prompt.unwrap_or(true))
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    tok.encode(&text, req.add_special_tokens.unwrap_or(false))
        .map_err(|e| ApiError::invalid("messages", e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<i64>,
}

pub async fn detokenize(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let run = async {
        let req: DetokenizeRequest = super::handlers::read_json(&headers, body, &st.0.cfg).await?;
        let m = served(&st, req.model.as_deref())?;
        let vocab = m.vocab;
        let ids = req
            .tokens
            .iter()
            .map(|&t| u32::try_from(t).ok().filter(|&id| (id as usize) < vocab))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| {
                ApiError::invalid(
                    "tokens",
                    format!("token ids must be between 0 and {}", vocab.saturating_sub(1)),
                )
            })?;
        let text = m
            .tokenizer
            .decode(&ids, false)
            .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
        Ok::<_, ApiError>(json!({"prompt": text}))
    };
    respond(run.await)
}

/// What a remote tokenizer needs to act like the model's own: special tokens, the chat
/// template and the lengths.
pub async fn tokenizer_info(State(st): State<AppState>) -> Response {
    let m = match st.model() {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let t = &m.tokenizer;
    Json(json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": t.bos_token, "eos_token": t.eos_token, "pad_token": t.pad_token,
        "unk_token": t.unk_token, "chat_template": t.chat_template_source(),
        "model_max_length": m.context, "vocab_size": m.vocab,
    }))
    .into_response()
}

pub async fn version() -> Response {
    Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}
