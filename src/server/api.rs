//! OpenAI request bodies for `/v1/chat/completions` and `/v1/completions`, and their
//! validation into engine requests.
//!
//! Owns: the serde request types (unknown fields ignored), range checks with `param` names as
//! OpenAI reports them, and the mapping to `GenerationRequest`.
//! Must not: tokenize or run anything (handlers do).

use std::collections::HashMap;

use serde::Deserialize;

use super::errors::ApiError;
use crate::engine::GenerationRequest;
use crate::sampling::{SamplingParams, MAX_TOP_LOGPROBS};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// Fields shared by both endpoints (OpenAI's plus vLLM's `top_k`, `min_p`,
/// `repetition_penalty` extensions and a scheduling `priority`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<i64>,
    pub stop: Option<StopInput>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<HashMap<String, f64>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub priority: Option<i32>,
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    pub content: Option<MessageContent>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessageIn>,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    pub logprobs: Option<i64>,
    #[serde(flatten)]
    pub common: CommonParams,
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

impl ChatRequest {
    /// Flatten message content to text; image or audio parts are rejected.
    pub fn text_messages(&self) -> Result<Vec<crate::chat_template::ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages must contain at least one message",
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let content = match &m.content {
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t.clone(),
                    Some(MessageContent::Parts(parts)) => parts
                        .iter()
                        .map(|p| match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => Ok(t.as_str()),
                            _ => Err(ApiError::invalid(
                                &format!("messages[{i}].content"),
                                format!("content part type `{}` is not supported; only text", p.kind),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .concat(),
                };
                Ok(crate::chat_template::ChatMessage::new(&m.role, &content))
            })
            .collect()
    }

    /// Logprobs requested as OpenAI's chat API does: `logprobs: true` plus `top_logprobs`.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        let top = self.top_logprobs.unwrap_or(0);
        if !(0..=MAX_TOP_LOGPROBS as i64).contains(&top) {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            ));
        }
        match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (true, _) => Ok(Some(top as usize)),
            (false, Some(t)) if t > 0 => Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs requires logprobs: true",
            )),
            _ => Ok(None),
        }
    }
}

impl CompletionRequest {
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            None => Ok(None),
            Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Ok(Some(k as usize)),
            Some(_) => Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            )),
        }
    }
}

impl CommonParams {
    /// Validate and build the engine request (prompt filled in by the caller).
    pub fn to_request(
        &self,
        max_tokens: Option<i64>,
        logprobs: Option<usize>,
        vocab: usize,
        default_max: usize,
    ) -> Result<GenerationRequest, ApiError> {
        let temperature = range("temperature", self.temperature, 0.0, 2.0)?.unwrap_or(1.0);
        let top_p = range("top_p", self.top_p, 0.0, 1.0)?.unwrap_or(1.0);
        if top_p == 0.0 {
            return Err(ApiError::invalid("top_p", "top_p must be greater than 0"));
        }
        let presence = range("presence_penalty", self.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0);
        let frequency = range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0);
        let min_p = range("min_p", self.min_p, 0.0, 1.0)?.unwrap_or(0.0);
        let repetition = range("repetition_penalty", self.repetition_penalty, 0.01, 10.0)?.unwrap_or(1.0);
        let n = self.n.unwrap_or(1);
        if !(1..=16).contains(&n) {
            return Err(ApiError::invalid("n", "n must be between 1 and 16"));
        }
        let top_k = match self.top_k.unwrap_or(0) {
            -1 | 0 => 0,
            k if k > 0 => k as usize,
            _ => return Err(ApiError::invalid("top_k", "top_k must be -1 (disabled) or positive")),
        };
        let max_tokens = match max_tokens {
            None => default_max,
            Some(m) if m >= 1 => m as usize,
            Some(_) => return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1")),
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) if v.len() <= 4 => v.clone(),
            Some(StopInput::Many(_)) => return Err(ApiError::invalid("stop", "stop accepts at most 4 sequences")),
        };
        let mut logit_bias = Vec::new();
        for (k, &v) in self.logit_bias.iter().flatten() {
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
            logit_bias.push((id, v as f32));
        }
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
                seed: self.seed.map(|s| s as u64),
                logprobs,
            },
            max_tokens,
            n: n as usize,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            priority: self.priority.unwrap_or(0),
            ..GenerationRequest::default()
        })
    }

    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}
