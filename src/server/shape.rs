//! The shapes of local answers: OpenAI's chat and completion bodies and stream chunks, and
//! logprobs in each endpoint's format.
//!
//! Owns: `Meta` (what every body and chunk of one response shares) and the JSON it builds.
//! Must not: read engine events or decide anything (`responses` drives it).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::api::Endpoint;
use super::errors::ApiError;
use super::AppState;
use crate::engine::{ChoiceOutput, FinishReason, RequestOutput, Usage};
use crate::sampling::TokenLogprobs;
use crate::tokenizer::TextTokenizer;
use crate::tools::{self, ToolDelta, ToolFormat, Turn};

/// What every chunk and body shares.
pub struct Meta {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    pub kind: Endpoint,
    logprobs: bool,
    tok: TextTokenizer,
    pub price: crate::fallback::Price,
    /// Chat output is read as tool calls in this format.
    pub tools: Option<ToolFormat>,
}

fn finish_str(r: Option<FinishReason>) -> Value {
    r.map_or(Value::Null, |r| Value::from(r.as_str()))
}

/// The finish reason with calls: `stop` becomes OpenAI's `tool_calls`.
pub fn tool_finish(r: Option<FinishReason>, turn: &Turn) -> Option<FinishReason> {
    match r {
        Some(FinishReason::Stop) if !turn.calls.is_empty() => Some(FinishReason::ToolCalls),
        other => other,
    }
}

/// An assistant message with its calls (`content` is null when there is only calls).
fn message_json(turn: &Turn) -> Value {
    if turn.calls.is_empty() {
        return json!({"role": "assistant", "content": turn.content.clone().unwrap_or_default()});
    }
    let calls: Vec<Value> = turn
        .calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    json!({"role": "assistant", "content": turn.content, "tool_calls": calls})
}

/// A chat delta for one piece of a tool-reading stream.
pub fn tool_delta_json(d: &ToolDelta) -> Value {
    match d {
        ToolDelta::Content(t) => json!({"content": t}),
        ToolDelta::Start { index, id, name } => json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                                        "function": {"name": name, "arguments": ""}}]}),
        ToolDelta::Args { index, fragment } => {
            json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        }
    }
}

pub fn usage_json(u: &Usage, price: &crate::fallback::Price) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens,
           "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
           "cost_usd": price.cost(u.prompt_tokens, u.completion_tokens)})
}

impl Meta {
    pub fn new(st: &AppState, rid: &str, kind: Endpoint, logprobs: bool) -> Result<Meta, ApiError> {
        let model = st.model()?;
        let (_, prefix, object) = kind.names();
        Ok(Meta {
            id: format!("{prefix}-{rid}"),
            object,
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: st.0.cfg.model_name.clone(),
            kind,
            logprobs,
            tok: model.tokenizer.clone(),
            price: st.0.cfg.local_price,
            tools: None,
        })
    }

    fn token_text(&self, id: u32) -> String {
        self.tok.decode(&[id], false).unwrap_or_default()
    }

    /// Chat logprob entries (`logprobs.content` items) for some tokens.
    fn chat_logprobs(&self, lps: &[TokenLogprobs]) -> Value {
        let entry = |id: u32, lp: f32| {
            let t = self.token_text(id);
            json!({"token": t, "logprob": lp, "bytes": t.as_bytes()})
        };
        let content: Vec<Value> = lps
            .iter()
            .map(|lp| {
                let mut e = entry(lp.token, lp.logprob);
                e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
                e
            })
            .collect();
        json!({ "content": content })
    }

    /// Legacy completions logprobs (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
    fn completion_logprobs(&self, lps: &[TokenLogprobs], offset0: usize) -> Value {
        let mut offset = offset0;
        let (mut tokens, mut lp, mut top, mut offsets) = (vec![], vec![], vec![], vec![]);
        for l in lps {
            let t = self.token_text(l.token);
            offsets.push(offset);
            offset += t.len();
            tokens.push(t);
            lp.push(l.logprob);
            let m: serde_json::Map<String, Value> =
                l.top.iter().map(|&(id, x)| (self.token_text(id), json!(x))).collect();
            top.push(Value::Object(m));
        }
        json!({"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offsets})
    }

    fn logprobs_json(&self, lps: &[TokenLogprobs], offset: usize) -> Value {
        match (self.logprobs, self.kind) {
            (false, _) => Value::Null,
            (true, Endpoint::Chat) => self.chat_logprobs(lps),
            (true, Endpoint::Completion) => self.completion_logprobs(lps, offset),
        }
    }

    fn choice_json(&self, i: usize, c: &ChoiceOutput) -> Value {
        let lp = self.logprobs_json(&c.logprobs, 0);
        match (self.kind, self.tools) {
            (Endpoint::Chat, Some(format)) => {
                let turn = tools::parse(format, &c.text);
                json!({"index": i, "message": message_json(&turn), "logprobs": lp,
                       "finish_reason": finish_str(tool_finish(c.finish_reason, &turn))})
            }
            (Endpoint::Chat, None) => json!({"index": i, "message": {"role": "assistant", "content": c.text},
                                     "logprobs": lp, "finish_reason": finish_str(c.finish_reason)}),
            (Endpoint::Completion, _) => json!({"index": i, "text": c.text, "logprobs": lp,
                                           "finish_reason": finish_str(c.finish_reason)}),
        }
    }

    pub fn body(&self, out: &RequestOutput) -> Value {
        let choices: Vec<Value> = out
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| self.choice_json(i, c))
            .collect();
        json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model,
               "choices": choices, "usage": usage_json(&out.usage, &self.price)})
    }

    /// One streamed chunk for choice `i`.
    pub fn chunk(&self, choice: Value) -> Value {
        let object = match self.kind {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]})
    }

    /// A chat chunk with an explicit delta object.
    pub fn delta_chunk(&self, i: usize, delta: Value, lps: &[TokenLogprobs], finish: Option<FinishReason>) -> Value {
        let lp = if lps.is_empty() {
            Value::Null
        } else {
            self.logprobs_json(lps, 0)
        };
        self.chunk(json!({"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish_str(finish)}))
    }

    pub fn delta(
        &self,
        i: usize,
        text: &str,
        lps: &[TokenLogprobs],
        offset: usize,
        finish: Option<FinishReason>,
    ) -> Value {
        let lp = self.logprobs_json(lps, offset);
        match self.kind {
            Endpoint::Chat => {
                let delta = if text.is_empty() && finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                self.chunk(json!({"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish_str(finish)}))
            }
            Endpoint::Completion => {
                self.chunk(json!({"index": i, "text": text, "logprobs": lp, "finish_reason": finish_str(finish)}))
            }
        }
    }
}
