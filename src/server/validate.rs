//! The one validation step: a parsed OpenAI body becomes a `ValidRequest` for the local model,
//! or a 400 naming the offending `param` (as OpenAI reports it). Every such 400 comes from
//! here (with `completion` for that endpoint's prompts, `echo` and `best_of`), in a fixed
//! order: JSON shape (unknown fields, then types) → messages/prompt → logprobs → context
//! length → sampling parameters → output constraints (`structured`).
//!
//! Owns: parsing the body into its endpoint's type, prompt tokenization (chat template or
//! raw prompt), range checks, `max_tokens` defaults and the mapping to `GenerationRequest`.
//! Must not: route (the `fallback::Policy` does), run anything, or check engine state (KV
//! cache size is the engine's check).

use serde_json::Value;

use super::api::{Body, ChatMessageIn, ChatRequest, CommonParams, Endpoint, MessageContent, StopInput};
use super::errors::{ApiError, ApiErrorKind};
use crate::chat_template::ChatMessage;
use crate::engine::GenerationRequest;
use crate::grammar::{Grammar, Grammars};
use crate::sampling::{SamplingParams, MAX_TOP_LOGPROBS};
use crate::tokenizer::TextTokenizer;
use crate::tools::ToolFormat;

/// What validation checks against: the served model and the server's defaults.
pub struct Limits<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub vocab: usize,
    pub context: usize,
    /// Prompt text beyond this is refused before tokenizing (`ServedModel::max_prompt_bytes`).
    pub max_prompt_bytes: usize,
    /// KV cache blocks and block size (`ServedModel::kv_capacity`).
    pub kv_capacity: (usize, usize),
    /// `max_tokens` when a request gives none (clipped to the room left in the context).
    pub default_max_tokens: usize,
    pub grammars: &'a Grammars,
    /// How this model writes tool calls (`--tool-call-parser`, or detected).
    pub tool_format: Option<ToolFormat>,
}

/// How the response must look, as the client asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseShape {
    pub stream: bool,
    pub include_usage: bool,
    /// Every chunk carries the usage so far (`stream_options.continuous_usage_stats`).
    pub continuous_usage: bool,
    /// Logprobs in the response (the engine may compute them for the cascade regardless).
    pub logprobs: bool,
    /// Completions: each choice starts with its prompt (and, with `logprobs`, its scores).
    pub echo: bool,
    /// vLLM's `prompt_logprobs` in the response.
    pub prompt_logprobs: bool,
    /// `best_of`: keep this many choices per prompt, the best by total logprob, of the
    /// `GenerationRequest::n` sampled.
    pub best_of: Option<usize>,
}

/// A request that passed validation, ready for the policy and the engine.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub endpoint: Endpoint,
    /// The text a complexity rule reads: the last user message, or the prompt.
    pub route_text: String,
    /// The engine requests, prompt tokens filled in: one per prompt (a completions prompt
    /// list has several; they differ only in the prompt).
    pub generations: Vec<GenerationRequest>,
    /// Each prompt as text (what `echo` returns).
    pub prompt_texts: Vec<String>,
    pub shape: ResponseShape,
    /// Read the output as tool calls in this format.
    pub tools: Option<ToolFormat>,
}

/// Request fields both endpoints honour (`api::CommonParams`).
pub const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream",
    "stream_options",
    "top_k",
    "min_p",
    "repetition_penalty",
    "priority",
    "ignore_eos",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "prompt_logprobs",
    "speculative",
];
/// Fields only `/v1/chat/completions` honours.
pub const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];
/// Fields only `/v1/completions` honours.
pub const COMPLETION_FIELDS: &[&str] = &["prompt", "logprobs", "echo", "best_of"];
/// Most sequences one prompt may sample (`n`, `best_of`).
pub const MAX_CHOICES: i64 = 16;

/// A field this server does not implement is a 400 naming it, never silently ignored (a
/// `null` one is absent: SDKs send unset fields as `null`).
fn unknown_fields(endpoint: Endpoint, raw: &Value) -> Result<(), ApiError> {
    let own = match endpoint {
        Endpoint::Chat => CHAT_FIELDS,
        Endpoint::Completion => COMPLETION_FIELDS,
    };
    let Some(obj) = raw.as_object() else { return Ok(()) };
    match obj
        .iter()
        .find(|(k, v)| !v.is_null() && !COMMON_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()))
        .map(|(k, _)| k)
    {
        None => Ok(()),
        Some(k) => Err(ApiError::invalid(
            k,
            format!("`{k}` is not supported by this server (see the README's list of request fields)"),
        )),
    }
}

/// Parse the JSON body as its endpoint's request type.
pub fn parse(endpoint: Endpoint, raw: &Value) -> Result<Body, ApiError> {
    unknown_fields(endpoint, raw)?;
    Ok(match endpoint {
        Endpoint::Chat => Body::Chat(typed(raw)?),
        Endpoint::Completion => Body::Completion(typed(raw)?),
    })
}

/// The body as `T`; a value of the wrong type is a 400 naming the field. Serde loses the path
/// inside the flattened `CommonParams`, so those fields are found by parsing them alone.
fn typed<T: serde::de::DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    let path_of = |e: &serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        (!path.is_empty() && path != "." && !path.contains('?')).then_some(path)
    };
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let common = serde_path_to_error::deserialize::<_, CommonParams>(raw).err();
        let param = path_of(&e).or_else(|| common.as_ref().and_then(path_of));
        let message = format!("invalid request: {}", e.inner());
        match param {
            Some(p) => ApiError::invalid(&p, message),
            None => ApiError::new(ApiErrorKind::Invalid { param: None }, message),
        }
    })
}

/// Validate either endpoint's body.
pub fn request(body: &Body, limits: &Limits) -> Result<ValidRequest, ApiError> {
    match body {
        Body::Chat(c) => chat(c, limits),
        Body::Completion(c) => super::completion::completion(c, limits),
    }
}

/// `/v1/chat/completions`.
pub fn chat(body: &ChatRequest, limits: &Limits) -> Result<ValidRequest, ApiError> {
    let messages = text_messages(&body.messages)?;
    let text: usize = messages.iter().map(|m| m.content.as_ref().map_or(0, String::len)).sum();
    check_text_bytes(text, limits)?;
    let tools = super::tools::plan(body, limits.tool_format, limits.tokenizer, limits.grammars)?;
    let rendered = limits
        .tokenizer
        .render_chat(&messages, tools.template_tools.as_ref(), true)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    // The template can add far more text than the messages hold (up to its output cap).
    check_text_bytes(rendered.len(), limits)?;
    let prompt = limits
        .tokenizer
        .encode(&rendered, false)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let prompt = check_prompt(prompt, limits, "messages")?;
    let logprobs = chat_logprobs(body)?;
    let max_tokens = body.max_completion_tokens.or(body.common.max_tokens);
    let mut generation = generation(&body.common, prompt, max_tokens, logprobs, limits)?;
    generation.grammar = constraint(&body.common, limits)?;
    if let Some(g) = tools.grammar {
        if let Some(r) = super::structured::requested(&body.common)? {
            return Err(ApiError::invalid(
                r.param,
                format!(
                    "`{}` cannot be combined with tool calls; use tool_choice \"none\" or drop it",
                    r.param
                ),
            ));
        }
        generation.grammar = Some(g);
    }
    generation.keep_special = tools.keep_special;
    let last_user = body.messages.iter().rev().find(|m| m.role == "user");
    let route_text = match last_user.and_then(|m| m.content.as_ref()) {
        Some(MessageContent::Text(t)) => t.clone(),
        Some(MessageContent::Parts(p)) => p.iter().filter_map(|x| x.text.clone()).collect::<Vec<_>>().join(" "),
        None => String::new(),
    };
    generation.prompt_logprobs = prompt_logprobs(&body.common)?;
    let mut v = valid(
        Endpoint::Chat,
        &body.common,
        route_text,
        vec![(String::new(), generation)],
        logprobs,
    )?;
    v.tools = tools.parse;
    Ok(v)
}

/// vLLM's `prompt_logprobs`: alternatives per prompt token (not with streaming, as in vLLM).
pub(super) fn prompt_logprobs(common: &CommonParams) -> Result<Option<usize>, ApiError> {
    match common.prompt_logprobs {
        None => Ok(None),
        Some(k) if !(0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Err(ApiError::invalid(
            "prompt_logprobs",
            format!("prompt_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
        )),
        Some(_) if common.stream.unwrap_or(false) => Err(ApiError::invalid(
            "prompt_logprobs",
            "prompt_logprobs is not available with `stream: true`",
        )),
        Some(k) => Ok(Some(k as usize)),
    }
}

pub(super) fn valid(
    endpoint: Endpoint,
    common: &CommonParams,
    route_text: String,
    prompts: Vec<(String, GenerationRequest)>,
    logprobs: Option<usize>,
) -> Result<ValidRequest, ApiError> {
    let stream = common.stream.unwrap_or(false);
    let opts = common.stream_options.clone().unwrap_or_default();
    if !stream && common.stream_options.is_some() {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed with `stream: true`",
        ));
    }
    let (prompt_texts, generations) = prompts.into_iter().unzip();
    Ok(ValidRequest {
        endpoint,
        route_text,
        generations,
        prompt_texts,
        shape: ResponseShape {
            stream,
            include_usage: opts.include_usage.unwrap_or(false),
            continuous_usage: opts.continuous_usage_stats.unwrap_or(false),
            logprobs: logprobs.is_some(),
            prompt_logprobs: common.prompt_logprobs.is_some(),
            ..ResponseShape::default()
        },
        tools: None,
    })
}

/// The messages with their content as text (only text parts), tool fields checked.
pub fn text_messages(messages: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must contain at least one message",
        ));
    }
    let part_text = |i: usize, p: &super::api::ContentPart| match (p.kind.as_str(), &p.text) {
        ("text", Some(t)) => Ok(t.clone()),
        _ => Err(ApiError::invalid(
            &format!("messages[{i}].content"),
            format!("content part type `{}` is not supported; only text", p.kind),
        )),
    };
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let content = match &m.content {
            None => None,
            Some(MessageContent::Text(t)) => Some(t.clone()),
            Some(MessageContent::Parts(parts)) => Some(
                parts
                    .iter()
                    .map(|p| part_text(i, p))
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
            ),
        };
        out.push(super::tools::message(i, m, content)?);
    }
    Ok(out)
}

/// Token ids inside the vocabulary, and at least one.
/// Refuse prompt text that cannot fit the context before spending time tokenizing it.
pub(super) fn check_text_bytes(bytes: usize, limits: &Limits) -> Result<(), ApiError> {
    if bytes <= limits.max_prompt_bytes {
        return Ok(());
    }
    Err(ApiError::new(
        ApiErrorKind::ContextLength,
        format!(
            "this model's maximum context length is {} tokens, and the prompt's {bytes} bytes of text cannot fit it",
            limits.context
        ),
    ))
}

pub(super) fn check_prompt(ids: Vec<u32>, limits: &Limits, param: &str) -> Result<Vec<u32>, ApiError> {
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= limits.vocab) {
        return Err(ApiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary"),
        ));
    }
    if ids.is_empty() {
        return Err(ApiError::invalid(param, "the prompt is empty"));
    }
    Ok(ids)
}

/// Logprobs as OpenAI's chat API asks for them: `logprobs: true` plus `top_logprobs`.
fn chat_logprobs(body: &ChatRequest) -> Result<Option<usize>, ApiError> {
    let top = body.top_logprobs.unwrap_or(0);
    if !(0..=MAX_TOP_LOGPROBS as i64).contains(&top) {
        return Err(ApiError::invalid(
            "top_logprobs",
            format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
        ));
    }
    match (body.logprobs.unwrap_or(false), body.top_logprobs) {
        (true, _) => Ok(Some(top as usize)),
        (false, Some(t)) if t > 0 => Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs requires logprobs: true",
        )),
        _ => Ok(None),
    }
}

/// The context check, then the sampling parameters; builds the engine request (its
/// constraint is `constraint`'s).
pub(super) fn generation(
    common: &CommonParams,
    prompt: Vec<u32>,
    max_tokens: Option<i64>,
    logprobs: Option<usize>,
    limits: &Limits,
) -> Result<GenerationRequest, ApiError> {
    let room = limits.context.saturating_sub(prompt.len());
    let asked = max_tokens.unwrap_or(1).max(1) as usize;
    if room == 0 || (max_tokens.is_some() && asked > room) {
        return Err(ApiError::new(
            ApiErrorKind::ContextLength,
            format!(
                "this model's maximum context length is {} tokens, but the request has {} prompt tokens and asks for {} completion tokens",
                limits.context,
                prompt.len(),
                if max_tokens.is_some() { asked } else { 1 }
            ),
        ));
    }
    let default_max = limits.default_max_tokens.min(room);
    let output = if max_tokens.is_some() { asked } else { default_max };
    fits_kv(prompt.len() + output, limits.kv_capacity)?;
    let mut req = sampling(common, max_tokens, logprobs, limits.vocab, default_max)?;
    req.prompt = prompt;
    Ok(req)
}

/// The engine's capacity check, before anything is sent: a streamed request that can never
/// fit gets the same 400 as an unstreamed one, not a 200 and an error event.
fn fits_kv(tokens: usize, (blocks, block_size): (usize, usize)) -> Result<(), ApiError> {
    let needed = tokens.div_ceil(block_size.max(1));
    if needed <= blocks {
        return Ok(());
    }
    Err(ApiError::from(&crate::engine::EngineError::Capacity {
        needed,
        available: blocks,
    }))
}

/// The output constraint the request asks for, compiled (once per request, however many
/// prompts it has).
pub(super) fn constraint(common: &CommonParams, limits: &Limits) -> Result<Option<Grammar>, ApiError> {
    match super::structured::requested(common)? {
        Some(r) => Ok(Some(super::structured::compile(&r, limits.grammars)?)),
        None => Ok(None),
    }
}

fn range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ApiError::invalid(
            param,
            format!("{param} must be between {lo} and {hi}, got {x}"),
        )),
        other => Ok(other),
    }
}

/// Range-check the sampling fields and build the request (prompt filled in by the caller).
fn sampling(
    c: &CommonParams,
    max_tokens: Option<i64>,
    logprobs: Option<usize>,
    vocab: usize,
    default_max: usize,
) -> Result<GenerationRequest, ApiError> {
    let temperature = range("temperature", c.temperature, 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = range("top_p", c.top_p, 0.0, 1.0)?.unwrap_or(1.0);
    if top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "top_p must be greater than 0"));
    }
    let presence = range("presence_penalty", c.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let frequency = range("frequency_penalty", c.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let min_p = range("min_p", c.min_p, 0.0, 1.0)?.unwrap_or(0.0);
    let repetition = range("repetition_penalty", c.repetition_penalty, 0.01, 10.0)?.unwrap_or(1.0);
    let n = c.n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(ApiError::invalid("n", format!("n must be between 1 and {MAX_CHOICES}")));
    }
    let top_k = match c.top_k.unwrap_or(0) {
        -1 | 0 => 0,
        k if k > 0 => k as usize,
        _ => return Err(ApiError::invalid("top_k", "top_k must be -1 (disabled) or positive")),
    };
    let max_tokens = match max_tokens {
        None => default_max,
        Some(m) if m >= 1 => m as usize,
        Some(_) => return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1")),
    };
    let stop = stops(&c.stop)?;
    let logit_bias = logit_bias(c, vocab)?;
    Ok(GenerationRequest {
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k,
            min_p: min_p as f32,
            repetition_penalty: repetition as f32,
            presence_penalty: presence as f32,
            frequency_penalty: frequency as f32,
            logit_bias,
            seed: c.seed.map(|s| s as u64),
            logprobs,
        },
        max_tokens,
        n: n as usize,
        stop,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        priority: c.priority.unwrap_or(0),
        speculative: c.speculative.unwrap_or(true),
        ..GenerationRequest::default()
    })
}

fn stops(stop: &Option<StopInput>) -> Result<Vec<String>, ApiError> {
    match stop {
        None => Ok(Vec::new()),
        Some(StopInput::One(s)) => Ok(vec![s.clone()]),
        Some(StopInput::Many(v)) if v.len() <= 4 => Ok(v.clone()),
        Some(StopInput::Many(_)) => Err(ApiError::invalid("stop", "stop accepts at most 4 sequences")),
    }
}

fn logit_bias(c: &CommonParams, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let mut out = Vec::new();
    for (k, &v) in c.logit_bias.iter().flatten() {
        let id: u32 = k
            .parse()
            .ok()
            .filter(|&id: &u32| (id as usize) < vocab)
            .ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias key `{k}` is not a token id below {vocab}"),
                )
            })?;
        range("logit_bias", Some(v), -100.0, 100.0)?;
        out.push((id, v as f32));
    }
    Ok(out)
}
