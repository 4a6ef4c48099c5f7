//! What a client asks the engine for and what it gets back.
//!
//! Owns: `GenerationRequest` (per-request parameters), the streamed `Event`s, the final
//! `RequestOutput`, finish reasons, and `StopText`, which finds stop strings across token
//! boundaries and holds back text that could still become one.
//! Must not: schedule or run anything.

use std::time::Duration;

use super::error::EngineError;
use crate::grammar::Grammar;
use crate::sampling::{SamplingParams, ScoredToken, TokenLogprobs};

pub type RequestId = u64;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// New tokens per choice (clipped to the model's context).
    pub max_tokens: usize,
    /// Choices sampled from the same prompt; they share its KV blocks.
    pub n: usize,
    /// Stop strings: generation ends before the first occurrence, which is not returned.
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// Lower runs first; higher is preempted first.
    pub priority: i32,
    /// End the request with `FinishReason::Timeout` this long after it arrives.
    pub timeout: Option<Duration>,
    /// Every choice's output must match this grammar; it ends when the grammar is complete.
    pub grammar: Option<Grammar>,
    /// Special tokens that stay in the text (tool-call markers); others are skipped.
    pub keep_special: Vec<u32>,
    /// `Some(k)`: score every prompt token after the first (its logprob, rank and `k`
    /// alternatives), from logit rows of the prefill itself; sent as `Event::PromptLogprobs`.
    pub prompt_logprobs: Option<usize>,
    /// Draft tokens by prompt lookup and verify them (when the engine speculates); the
    /// output is the same either way, so this only trades compute for speed.
    pub speculative: bool,
}

impl Default for GenerationRequest {
    fn default() -> Self {
        GenerationRequest {
            prompt: Vec::new(),
            sampling: SamplingParams::default(),
            max_tokens: 16,
            n: 1,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            priority: 0,
            timeout: None,
            grammar: None,
            keep_special: Vec::new(),
            prompt_logprobs: None,
            speculative: true,
        }
    }
}

/// Why a choice ended. `Stop` and `Length` are OpenAI's values; the others are Aisle's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Timeout,
    Cancelled,
    Error,
    /// The choice ended with tool calls (set by the server when it reads calls in the text).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Timeout => "timeout",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// Streamed to the client, in order; `Done` (or `Error`) is always last.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request left the waiting queue: its first step was scheduled (once per request).
    Started,
    /// The prompt's scores, once it is computed and before any token (only when asked):
    /// `None` for the first token, which nothing predicts. `prompt` is 0 for one request; a
    /// stream of several (`EngineHandle::submit_many`) numbers them in submission order.
    PromptLogprobs {
        prompt: usize,
        logprobs: Vec<Option<ScoredToken>>,
    },
    /// A generated token and the text it releases (possibly empty while held back).
    Token {
        choice: usize,
        token: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// A choice ended; `text` is what was still held back and is released now.
    Finished {
        choice: usize,
        reason: FinishReason,
        text: String,
    },
    Done(Usage),
    /// The request failed before or while running; nothing more follows.
    Error(EngineError),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChoiceOutput {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Vec<TokenLogprobs>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOutput {
    pub choices: Vec<ChoiceOutput>,
    pub usage: Usage,
    /// Per prompt, when asked (`GenerationRequest::prompt_logprobs`).
    pub prompt_logprobs: Vec<Vec<Option<ScoredToken>>>,
}

impl RequestOutput {
    fn choice_mut(&mut self, i: usize) -> &mut ChoiceOutput {
        if self.choices.len() <= i {
            self.choices.resize(i + 1, ChoiceOutput::default());
        }
        &mut self.choices[i]
    }

    /// Fold one event in; returns `Err` for `Event::Error`.
    pub fn apply(&mut self, event: Event) -> Result<(), EngineError> {
        match event {
            Event::Token {
                choice,
                token,
                text,
                logprobs,
            } => {
                let c = self.choice_mut(choice);
                c.tokens.push(token);
                c.text.push_str(&text);
                c.logprobs.extend(logprobs);
            }
            Event::Finished { choice, reason, text } => {
                let c = self.choice_mut(choice);
                c.text.push_str(&text);
                c.finish_reason = Some(reason);
            }
            Event::Done(usage) => self.usage = usage,
            Event::PromptLogprobs { prompt, logprobs } => {
                if self.prompt_logprobs.len() <= prompt {
                    self.prompt_logprobs.resize(prompt + 1, Vec::new());
                }
                self.prompt_logprobs[prompt] = logprobs;
            }
            Event::Started => {}
            Event::Error(e) => return Err(e),
        }
        Ok(())
    }
}

/// Generated text of one choice with stop-string detection.
#[derive(Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopText {
    pub fn new(stops: &[String]) -> StopText {
        StopText {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..StopText::default()
        }
    }

    /// Add decoded text. Returns the text now safe to emit and whether a stop string matched
    /// (the match and anything after it are dropped).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.text.push_str(delta);
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.text[self.emitted..].find(s.as_str()).map(|p| self.emitted + p))
            .min();
        if let Some(pos) = found {
            self.text.truncate(pos);
            return (self.release(pos), true);
        }
        let hold = self.stops.iter().map(|s| held_suffix(&self.text, s)).max().unwrap_or(0);
        let safe = self.text.len() - hold;
        (self.release(safe.max(self.emitted)), false)
    }

    /// Release everything still held back (generation ended without a match).
    pub fn finish(&mut self) -> String {
        self.release(self.text.len())
    }

    fn release(&mut self, upto: usize) -> String {
        let out = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        out
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn held_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .filter(|&k| stop.is_char_boundary(k))
        .find(|&k| text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut st = StopText::new(&stops);
        let mut out = Vec::new();
        for d in deltas {
            let (text, hit) = st.push(d);
            out.push(text);
            if hit {
                return (out, true, String::new());
            }
        }
        let tail = st.finish();
        (out, false, tail)
    }

    #[test]
    fn stop_string_split_across_tokens_is_found_and_not_emitted() {
        let (out, hit, _) = run(&["###"], &["The drill", " is 750 W", "#", "#", "# more"]);
        assert!(hit);
        assert_eq!(out, vec!["The drill", " is 750 W", "", "", ""]);
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let (out, hit, tail) = run(&["</answer>"], &["a <", "/ans", "wer?", " ok <"]);
        assert!(!hit);
        assert_eq!(out, vec!["a ", "", "</answer?", " ok "]);
        assert_eq!(tail, "<");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let (out, hit, _) = run(&["€", "end"], &["price 49", ".99 € end"]);
        assert!(hit);
        assert_eq!(out.concat(), "price 49.99 ");
        let (out, hit, tail) = run(&["日本"], &["テキスト日", "は"]);
        assert!(!hit);
        assert_eq!((out.concat() + &tail), "テキスト日は");
    }

    #[test]
    fn output_folds_events() {
        let mut o = RequestOutput::default();
        o.apply(Event::Token {
            choice: 1,
            token: 5,
            text: "hi".into(),
            logprobs: None,
        })
        .unwrap();
        o.apply(Event::Finished {
            choice: 1,
            reason: FinishReason::Length,
            text: "!".into(),
        })
        .unwrap();
        assert_eq!(o.choices[1].text, "hi!");
        assert_eq!(o.choices.len(), 2);
        assert!(o.apply(Event::Error(EngineError::Executor("boom".into()))).is_err());
    }
}
