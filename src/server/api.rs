//! OpenAI request bodies for `/v1/chat/completions` and `/v1/completions`, as serde types.
//!
//! Owns: the wire shapes and `Endpoint` (`validate` refuses fields not listed there first).
//! Must not: check values; `validate` turns these into a `ValidRequest`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// Which OpenAI endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    /// The remote path, the id prefix and the response `object`.
    pub fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Endpoint::Chat => ("chat/completions", "chatcmpl", "chat.completion"),
            Endpoint::Completion => ("completions", "cmpl", "text_completion"),
        }
    }
}

/// A parsed request body of either endpoint.
#[derive(Debug, Clone)]
pub enum Body {
    Chat(ChatRequest),
    Completion(CompletionRequest),
}

impl Body {
    pub fn common(&self) -> &CommonParams {
        match self {
            Body::Chat(c) => &c.common,
            Body::Completion(c) => &c.common,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        match self {
            Body::Chat(_) => Endpoint::Chat,
            Body::Completion(_) => Endpoint::Completion,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    /// vLLM's extension: every chunk carries the usage so far.
    pub continuous_usage_stats: Option<bool>,
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
    /// Output constraints, read by `structured` (kept as JSON so errors can name the field).
    pub response_format: Option<Value>,
    pub structured_outputs: Option<Value>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
    /// vLLM's extension: score the prompt's tokens, with this many alternatives each.
    pub prompt_logprobs: Option<i64>,
    /// Aisle's extension: `false` opts this request out of speculative decoding (the output
    /// is the same either way).
    pub speculative: Option<bool>,
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
    /// An assistant's earlier calls (`function.arguments` as a JSON string).
    pub tool_calls: Option<Value>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessageIn>,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// Tool calling, read by `server::tools`.
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    pub logprobs: Option<i64>,
    /// Return the prompt before the completion (with `logprobs`, scored too).
    pub echo: Option<bool>,
    /// Sample this many candidates per prompt and return the `n` best by total logprob.
    pub best_of: Option<i64>,
    #[serde(flatten)]
    pub common: CommonParams,
}
