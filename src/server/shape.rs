//! The shapes of local answers: OpenAI's chat and completion bodies and stream chunks, and
//! logprobs in each endpoint's format.
//!
//! Owns: `Meta` (what every body and chunk of one response shares, its prompts included) and
//! the JSON it builds: choices prompt-major (`n` per prompt), `echo`ed prompts with their
//! scores in the legacy logprobs format (`null` for the first token), vLLM's `prompt_logprobs`.
//! Must not: read engine events or decide anything (`responses` drives it).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::api::Endpoint;
use super::errors::ApiError;
use super::validate::{ResponseShape, ValidRequest};
use super::AppState;
use crate::engine::{ChoiceOutput, FinishReason, RequestOutput, Usage};
use crate::sampling::{ScoredToken, TokenLogprobs};
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
    shape: ResponseShape,
    /// Choices per prompt in the response.
    n: usize,
    prompt_texts: Vec<String>,
    prompt_ids: Vec<Vec<u32>>,
}

/// One prompt token's scores, if any: (logprob, alternatives).
type PromptScore<'a> = Option<(f32, &'a [(u32, f32)])>;

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
        return json!({"role": "assistant", "content": turn.content.clone().unwrap_or_default(), "refusal": null});
    }
    let calls: Vec<Value> = turn
        .calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    json!({"role": "assistant", "content": turn.content, "refusal": null, "tool_calls": calls})
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
    pub fn new(st: &AppState, rid: &str, valid: &ValidRequest) -> Result<Meta, ApiError> {
        let model = st.model()?;
        let kind = valid.endpoint;
        let (_, prefix, object) = kind.names();
        let first = valid.generations.first();
        Ok(Meta {
            id: format!("{prefix}-{rid}"),
            object,
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: st.0.cfg.model_name.clone(),
            kind,
            logprobs: valid.shape.logprobs,
            tok: model.tokenizer.clone(),
            price: st.0.cfg.local_price,
            tools: valid.tools,
            shape: valid.shape,
            n: valid.shape.best_of.or(first.map(|g| g.n)).unwrap_or(1),
            prompt_texts: valid.prompt_texts.clone(),
            prompt_ids: valid.generations.iter().map(|g| g.prompt.clone()).collect(),
        })
    }

    /// The choices of prompt `p`.
    pub fn choices_of(&self, p: usize) -> std::ops::Range<usize> {
        p * self.n..(p + 1) * self.n
    }

    /// The prompt choice `i` belongs to.
    fn prompt_of(&self, i: usize) -> usize {
        i / self.n.max(1)
    }

    /// The echoed prompt of choice `i` (empty without `echo`).
    pub fn echo_text(&self, i: usize) -> &str {
        match self.shape.echo {
            true => self.prompt_texts.get(self.prompt_of(i)).map_or("", String::as_str),
            false => "",
        }
    }

    /// vLLM's `prompt_logprobs`: per prompt token `null` (the first) or a map from token id
    /// to `{logprob, rank, decoded_token}` holding the prompt's token and the alternatives.
    fn vllm_prompt_logprobs(&self, prompt: usize, out: &RequestOutput) -> Value {
        let (Some(ids), Some(scores)) = (self.prompt_ids.get(prompt), out.prompt_logprobs.get(prompt)) else {
            return Value::Null;
        };
        let entry =
            |lp: f32, rank: u32, id: u32| json!({"logprob": lp, "rank": rank, "decoded_token": self.token_text(id)});
        let one = |(&id, s): (&u32, &Option<ScoredToken>)| match s {
            None => Value::Null,
            Some(s) => {
                let mut m: serde_json::Map<String, Value> = s
                    .top
                    .iter()
                    .enumerate()
                    .map(|(r, &(t, lp))| (t.to_string(), entry(lp, r as u32 + 1, t)))
                    .collect();
                m.insert(id.to_string(), entry(s.logprob, s.rank, id));
                Value::Object(m)
            }
        };
        ids.iter().zip(scores).map(one).collect()
    }

    /// A prompt's tokens with their scores (none where `scores` has none), for the legacy
    /// logprobs of an echo.
    fn echo_scores<'a>(&self, prompt: usize, scores: &'a [Option<ScoredToken>]) -> Vec<(u32, PromptScore<'a>)> {
        let ids = self.prompt_ids.get(prompt).map_or(&[][..], Vec::as_slice);
        ids.iter()
            .enumerate()
            .map(|(j, &id)| {
                let s = scores.get(j).and_then(Option::as_ref);
                (id, s.map(|s| (s.logprob, s.top.as_slice())))
            })
            .collect()
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
        json!({ "content": content, "refusal": null })
    }

    /// Legacy completions logprobs (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`)
    /// of some tokens, `null` where a token has no score (an echoed prompt's first).
    fn completion_logprobs(&self, entries: &[(u32, PromptScore)], offset0: usize) -> Value {
        let mut offset = offset0;
        let (mut tokens, mut lp, mut top, mut offsets) = (vec![], vec![], vec![], vec![]);
        for &(id, score) in entries {
            let t = self.token_text(id);
            offsets.push(offset);
            offset += t.len();
            tokens.push(t);
            lp.push(score.map_or(Value::Null, |(l, _)| json!(l)));
            top.push(score.map_or(Value::Null, |(_, alts)| {
                let m: serde_json::Map<String, Value> =
                    alts.iter().map(|&(id, x)| (self.token_text(id), json!(x))).collect();
                Value::Object(m)
            }));
        }
        json!({"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offsets})
    }

    fn logprobs_json(&self, lps: &[TokenLogprobs], offset: usize) -> Value {
        match (self.logprobs, self.kind) {
            (false, _) => Value::Null,
            (true, Endpoint::Chat) => self.chat_logprobs(lps),
            (true, Endpoint::Completion) => {
                let entries: Vec<_> = lps
                    .iter()
                    .map(|l| (l.token, Some((l.logprob, l.top.as_slice()))))
                    .collect();
                self.completion_logprobs(&entries, offset)
            }
        }
    }

    /// A completion choice: its echoed prompt (scored with `logprobs`) before the output.
    fn completion_choice(&self, i: usize, c: &ChoiceOutput, out: &RequestOutput) -> Value {
        let p = self.prompt_of(i);
        let lp = match (self.logprobs, self.shape.echo) {
            (true, true) => {
                let scores = out.prompt_logprobs.get(p).map_or(&[][..], Vec::as_slice);
                let mut entries = self.echo_scores(p, scores);
                entries.extend(
                    c.logprobs
                        .iter()
                        .map(|l| (l.token, Some((l.logprob, l.top.as_slice())))),
                );
                self.completion_logprobs(&entries, 0)
            }
            _ => self.logprobs_json(&c.logprobs, 0),
        };
        let mut v = json!({"index": i, "text": format!("{}{}", self.echo_text(i), c.text), "logprobs": lp,
                           "finish_reason": finish_str(c.finish_reason)});
        if self.shape.prompt_logprobs {
            v["prompt_logprobs"] = self.vllm_prompt_logprobs(p, out);
        }
        v
    }

    /// The first chunk of an echoing stream's choice `i`: its prompt, scored with `logprobs`.
    pub fn echo_chunk(&self, i: usize, scores: &[Option<ScoredToken>]) -> Value {
        let lp = match self.logprobs {
            true => self.completion_logprobs(&self.echo_scores(self.prompt_of(i), scores), 0),
            false => Value::Null,
        };
        self.chunk(json!({"index": i, "text": self.echo_text(i), "logprobs": lp, "finish_reason": null}))
    }

    fn choice_json(&self, i: usize, c: &ChoiceOutput, out: &RequestOutput) -> Value {
        if self.kind == Endpoint::Completion {
            return self.completion_choice(i, c, out);
        }
        let lp = self.logprobs_json(&c.logprobs, 0);
        match (self.kind, self.tools) {
            (Endpoint::Chat, Some(format)) => {
                let turn = tools::parse(format, &c.text);
                json!({"index": i, "message": message_json(&turn), "logprobs": lp,
                       "finish_reason": finish_str(tool_finish(c.finish_reason, &turn))})
            }
            _ => json!({"index": i, "message": {"role": "assistant", "content": c.text, "refusal": null},
                        "logprobs": lp, "finish_reason": finish_str(c.finish_reason)}),
        }
    }

    pub fn body(&self, out: &RequestOutput) -> Value {
        let choices: Vec<Value> = out
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| self.choice_json(i, c, out))
            .collect();
        let mut body = json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model,
               "choices": choices, "usage": usage_json(&out.usage, &self.price)});
        if self.kind == Endpoint::Chat && self.shape.prompt_logprobs {
            body["prompt_logprobs"] = self.vllm_prompt_logprobs(0, out);
        }
        body
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
