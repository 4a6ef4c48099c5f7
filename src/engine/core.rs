//! One engine step: `schedule() → execute(batch) → sample → update → emit`.
//!
//! Owns: the executor, the scheduler (and through it the block manager), and per-request state
//! (samplers, grammar states, detokenizers, stop detection, deadlines, event sinks).
//! Synchronous, so tests can drive it step by step; `thread` runs it on the engine thread.
//! Grammar masks for a step's constrained sequences are computed together, in parallel, right
//! after the forward pass; a sequence's grammar state only ever advances by tokens it keeps
//! (preemption recomputes KV but keeps the tokens, so the state stays valid). A prompt that
//! asked for scores gets logits rows at every position and is scored from them in the same
//! step; `max_tokens: 0` ends a choice once its prompt is computed. Masks and scores live in
//! `step_parts`; a decode with draft tokens is verified in `verify` and may keep several
//! tokens, emitted in order (a stop among them ends the choice and drops the rest).
//! Must not: block on clients. Events go to unbounded channels; a closed channel means the
//! client left, and its request is cancelled at the next step.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::block_manager::{BlockManager, SeqId};
use super::error::{EngineError, RequestError};
use super::request::{Event, FinishReason, GenerationRequest, RequestId, StopText, Usage};
use super::scheduler::{ScheduledSeq, Scheduler, SchedulerConfig};
use crate::backend::Executor;
use crate::grammar::{Constrained, GrammarError};
use crate::sampling::{Sampler, ScoredToken, TokenLogprobs, TokenMask};
use crate::tokenizer::{StreamDecoder, TextTokenizer};

pub type EventSink = UnboundedSender<Event>;

/// A snapshot of the engine's occupancy and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub requests: usize,
    pub running: usize,
    pub waiting: usize,
    pub free_blocks: usize,
    pub total_blocks: usize,
    pub cached_blocks: usize,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub preemptions: u64,
    /// Steps whose prompt tokens were cut to keep running decodes near the step-time target.
    pub capped_steps: u64,
    /// Draft tokens verified by speculative decoding, and how many of them were accepted.
    pub draft_tokens: u64,
    pub accepted_tokens: u64,
    /// Requests ended because their client went away (dropped stream or abort).
    pub cancelled: u64,
    /// Grammar masks computed, and the time spent on them (wall clock, all in parallel).
    pub grammar_masks: u64,
    pub grammar_mask_nanos: u64,
}

/// One sequence's work in a step, by request and choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledWork {
    pub request: RequestId,
    pub choice: usize,
    /// First position computed.
    pub start: usize,
    pub num_tokens: usize,
}

/// What one step ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSummary {
    pub seqs: Vec<ScheduledWork>,
    pub preempted: usize,
}

struct Choice {
    seq: SeqId,
    sampler: Sampler,
    grammar: Option<Constrained>,
    tokens: Vec<u32>,
    decoder: StreamDecoder,
    text: StopText,
    finished: bool,
}

struct RequestState {
    req: GenerationRequest,
    sink: EventSink,
    choices: Vec<Choice>,
    deadline: Option<Instant>,
    cached_tokens: usize,
    completion_tokens: usize,
    started: bool,
    /// Prompt scores by position while the prompt is computed (`prompt_logprobs`).
    prompt_scores: Vec<Option<ScoredToken>>,
}

/// What a sequence that reached its last token does in a step.
enum Pick {
    Token(u32, Option<TokenLogprobs>),
    /// `max_tokens: 0`: the prompt was only to be computed (and scored); the choice ends.
    ScoreOnly,
}

type Masks = HashMap<SeqId, Result<llguidance::toktrie::SimpleVob, GrammarError>>;

pub struct EngineCore {
    exec: Box<dyn Executor>,
    sched: Scheduler,
    tok: TextTokenizer,
    eos: Vec<u32>,
    requests: HashMap<RequestId, RequestState>,
    owner: HashMap<SeqId, (RequestId, usize)>,
    next_seq: SeqId,
    cancelled: u64,
    grammar_masks: u64,
    grammar_mask_nanos: u64,
    draft_tokens: u64,
    accepted_tokens: u64,
}

impl EngineCore {
    pub fn new(exec: Box<dyn Executor>, tok: TextTokenizer, eos: Vec<u32>, cfg: SchedulerConfig) -> EngineCore {
        let geo = exec.kv_geometry();
        let blocks = BlockManager::new(geo.num_blocks, geo.block_size);
        let context = exec.config().max_position_embeddings;
        let sched = Scheduler::new(cfg, blocks).with_limits(exec.limits(), context);
        EngineCore {
            exec,
            sched,
            tok,
            eos,
            requests: HashMap::new(),
            owner: HashMap::new(),
            next_seq: 0,
            cancelled: 0,
            grammar_masks: 0,
            grammar_mask_nanos: 0,
            draft_tokens: 0,
            accepted_tokens: 0,
        }
    }

    /// The KV cache's blocks and block size (a request's every choice must fit it alone).
    pub fn kv_capacity(&self) -> (usize, usize) {
        let geo = self.exec.kv_geometry();
        (geo.num_blocks, geo.block_size)
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    pub fn has_work(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn stats(&self) -> EngineStats {
        let b = &self.sched.blocks;
        EngineStats {
            requests: self.requests.len(),
            running: self.sched.num_running(),
            waiting: self.sched.num_waiting(),
            free_blocks: b.num_free(),
            total_blocks: b.num_blocks(),
            cached_blocks: b.num_cached(),
            prefix_cache_queries: b.stats.queries,
            prefix_cache_hits: b.stats.hits,
            preemptions: self.sched.num_preemptions,
            capped_steps: self.sched.num_capped_steps,
            cancelled: self.cancelled,
            grammar_masks: self.grammar_masks,
            grammar_mask_nanos: self.grammar_mask_nanos,
            draft_tokens: self.draft_tokens,
            accepted_tokens: self.accepted_tokens,
        }
    }

    /// Check a request against the model and cache; clip `max_tokens` to the context.
    fn validate(&self, req: &mut GenerationRequest) -> Result<(), EngineError> {
        let context = self.exec.config().max_position_embeddings;
        let geo = self.exec.kv_geometry();
        let p = req.prompt.len();
        if p == 0 {
            return Err(RequestError::EmptyPrompt.into());
        }
        if p >= context {
            return Err(RequestError::PromptTooLong { prompt: p, context }.into());
        }
        if req.n == 0 {
            return Err(RequestError::ZeroChoices.into());
        }
        req.max_tokens = req.max_tokens.min(context - p);
        // Every choice must be able to run alone: prompt + output blocks.
        let needed = (p + req.max_tokens).div_ceil(geo.block_size);
        if needed > geo.num_blocks {
            return Err(EngineError::Capacity {
                needed,
                available: geo.num_blocks,
            });
        }
        Ok(())
    }

    /// Queue a request; an invalid one gets `Event::Error` and is dropped.
    pub fn add(&mut self, id: RequestId, req: GenerationRequest, sink: EventSink) {
        self.add_at(id, req, sink, Instant::now());
    }

    /// `add` for a request that arrived at `arrival` (its deadline counts from then).
    pub fn add_at(&mut self, id: RequestId, mut req: GenerationRequest, sink: EventSink, arrival: Instant) {
        if let Err(e) = self.validate(&mut req) {
            let _ = sink.send(Event::Error(e));
            return;
        }
        let mut choices = Vec::with_capacity(req.n);
        for i in 0..req.n {
            let seq = self.next_seq;
            self.next_seq += 1;
            let after = (i > 0).then(|| choices.first().map(|c: &Choice| c.seq)).flatten();
            self.sched.add(seq, req.prompt.clone(), req.priority, after);
            if i == 0 && req.prompt_logprobs.is_some() {
                self.sched.score_prompt(seq);
            }
            // A grammar's mask for a draft position would need its state after the draft.
            if req.speculative && req.grammar.is_none() {
                self.sched.speculate(seq, req.prompt.len() + req.max_tokens);
            }
            self.owner.insert(seq, (id, i));
            let mut params = req.sampling.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
            choices.push(Choice {
                seq,
                sampler: Sampler::new(params),
                grammar: req.grammar.as_ref().map(|g| g.start()),
                tokens: Vec::new(),
                decoder: self.tok.stream_keeping(true, &req.keep_special),
                text: StopText::new(&req.stop),
                finished: false,
            });
        }
        let deadline = req.timeout.map(|t| arrival + t);
        let prompt_scores = match req.prompt_logprobs {
            Some(_) => vec![None; req.prompt.len()],
            None => Vec::new(),
        };
        let state = RequestState {
            prompt_scores,
            req,
            sink,
            choices,
            deadline,
            cached_tokens: 0,
            completion_tokens: 0,
            started: false,
        };
        self.requests.insert(id, state);
    }

    /// End every unfinished choice of a request with `reason` and drop the request.
    pub fn abort(&mut self, id: RequestId, reason: FinishReason) {
        let Some(state) = self.requests.get(&id) else { return };
        if reason == FinishReason::Cancelled {
            self.cancelled += 1;
        }
        let open: Vec<usize> = (0..state.choices.len())
            .filter(|&i| !state.choices[i].finished)
            .collect();
        for i in open {
            self.finish_choice(id, i, reason, false);
        }
    }

    /// Cancel requests whose client went away and time out those past their deadline.
    fn reap(&mut self) {
        let now = Instant::now();
        let mut ended = Vec::new();
        for (&id, s) in &self.requests {
            if s.sink.is_closed() {
                ended.push((id, FinishReason::Cancelled));
            } else if s.deadline.is_some_and(|d| now >= d) {
                ended.push((id, FinishReason::Timeout));
            }
        }
        for (id, reason) in ended {
            self.abort(id, reason);
        }
    }

    /// Run one step. Returns what ran, or `None` when nothing could.
    pub fn step(&mut self) -> Option<StepSummary> {
        self.reap();
        let began = Instant::now();
        let step = self.sched.schedule()?;
        self.note_started(&step);
        let summary = self.summary(&step);
        let wanted: usize = step.seqs.iter().map(ScheduledSeq::logit_rows).sum();
        let out = match self.exec.execute(&step.batch) {
            Ok(out) if out.rows() == wanted => out,
            Ok(out) => {
                let why = format!("the executor returned {} logits rows for {wanted} wanted", out.rows());
                self.fail_step(&step, &why);
                return Some(summary);
            }
            Err(e) => {
                self.fail_step(&step, &e.to_string());
                return Some(summary);
            }
        };
        let masks = self.grammar_masks(&step);
        let (mut sampled, mut logprobs, mut score_only) = (Vec::new(), Vec::new(), Vec::new());
        let mut row = 0;
        for (i, s) in step.seqs.iter().enumerate() {
            let first = row;
            row += s.logit_rows();
            if s.all_logits {
                self.score_prompt_rows(s, &out, first);
            }
            if s.drafted > 0 {
                for (token, lp) in self.verify(s, step.draft(i), &out, first) {
                    sampled.push((s.id, token));
                    logprobs.push(lp);
                }
                continue;
            }
            match s.samples.then(|| self.pick(s, out.row(row - 1), &masks)).flatten() {
                Some(Pick::Token(token, lp)) => {
                    sampled.push((s.id, token));
                    logprobs.push(lp);
                }
                Some(Pick::ScoreOnly) => score_only.push(s.id),
                None => {}
            }
        }
        self.exec.recycle(out);
        self.sched.update(&step, &sampled);
        for ((seq, token), lp) in sampled.into_iter().zip(logprobs) {
            self.on_token(seq, token, lp);
        }
        for seq in score_only {
            if let Some(&(rid, c)) = self.owner.get(&seq) {
                self.finish_choice(rid, c, FinishReason::Length, false);
            }
        }
        let elapsed = began.elapsed();
        tracing::trace!(
            decodes = step.decodes,
            prefill = step.prefill_tokens,
            ms = elapsed.as_secs_f64() * 1e3,
            "step"
        );
        self.sched.record_step(&step, elapsed);
        Some(summary)
    }

    /// The next token of a sequence that reached its end, from its logits `row`; `None` when
    /// its choice is gone (or its grammar failed, which ends it).
    fn pick(&mut self, s: &ScheduledSeq, row: &[f32], masks: &Masks) -> Option<Pick> {
        let &(rid, c) = self.owner.get(&s.id)?;
        let state = self.requests.get_mut(&rid)?;
        if state.req.max_tokens == 0 {
            return Some(Pick::ScoreOnly);
        }
        let mask = match masks.get(&s.id) {
            Some(Ok(m)) => Some(TokenMask(m.as_slice())),
            Some(Err(e)) => {
                self.fail_grammar(rid, c, e);
                return None;
            }
            None => None,
        };
        let choice = &mut state.choices[c];
        let (token, lp) = choice.sampler.sample(row, &state.req.prompt, &choice.tokens, mask);
        Some(Pick::Token(token, lp))
    }

    /// Record a sampled token, emit its text, and end the choice when a stop condition hits.
    fn on_token(&mut self, seq: SeqId, token: u32, logprobs: Option<TokenLogprobs>) {
        let Some(&(rid, c)) = self.owner.get(&seq) else { return };
        let Some(state) = self.requests.get_mut(&rid) else {
            return;
        };
        state.completion_tokens += 1;
        let req = &state.req;
        // Under a grammar an end-of-sequence id is only allowed where the grammar may end.
        let eos = self.eos.contains(&token) && (!req.ignore_eos || req.grammar.is_some());
        if eos || req.stop_token_ids.contains(&token) {
            self.finish_choice(rid, c, FinishReason::Stop, false);
            return;
        }
        let max_tokens = req.max_tokens;
        let choice = &mut state.choices[c];
        let grammar = choice.grammar.as_mut().map(|g| g.accept(token).map(|()| g.is_done()));
        if let Some(Err(e)) = &grammar {
            let e = e.clone();
            self.fail_grammar(rid, c, &e);
            return;
        }
        let grammar_done = matches!(grammar, Some(Ok(true)));
        choice.tokens.push(token);
        let delta = match choice.decoder.step(token) {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("detokenization failed: {e}");
                String::new()
            }
        };
        let (text, matched) = choice.text.push(&delta);
        let full = choice.tokens.len() >= max_tokens;
        let _ = state.sink.send(Event::Token {
            choice: c,
            token,
            text,
            logprobs,
        });
        if matched {
            self.finish_choice(rid, c, FinishReason::Stop, true);
        } else if grammar_done {
            self.finish_choice(rid, c, FinishReason::Stop, false);
        } else if full {
            self.finish_choice(rid, c, FinishReason::Length, false);
        }
    }

    /// End one choice: release held-back text, free its blocks, and close the request when it
    /// was the last open choice.
    fn finish_choice(&mut self, rid: RequestId, c: usize, reason: FinishReason, matched_stop: bool) {
        let Some(state) = self.requests.get_mut(&rid) else {
            return;
        };
        let choice = &mut state.choices[c];
        choice.finished = true;
        let mut text = String::new();
        if !matched_stop && matches!(reason, FinishReason::Stop | FinishReason::Length) {
            let tail = choice.decoder.flush().ok().flatten().unwrap_or_default();
            let (released, hit) = choice.text.push(&tail);
            text = if hit {
                released
            } else {
                released + &choice.text.finish()
            };
        }
        let seq = choice.seq;
        let _ = state.sink.send(Event::Finished {
            choice: c,
            reason,
            text,
        });
        self.sched.finish(seq);
        self.owner.remove(&seq);
        if state.choices.iter().all(|c| c.finished) {
            let usage = Usage {
                prompt_tokens: state.req.prompt.len(),
                completion_tokens: state.completion_tokens,
                cached_tokens: state.cached_tokens,
            };
            let _ = state.sink.send(Event::Done(usage));
            self.requests.remove(&rid);
        }
    }
}

#[path = "step_parts.rs"]
mod step_parts;
#[path = "verify.rs"]
mod verify;
