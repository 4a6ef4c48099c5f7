//! The parts of an engine step beside sampling, on the core's state: the grammar masks of a
//! step's constrained sequences (computed together, in parallel), the scores of prompts
//! that asked for them (`prompt_logprobs`), from the step's logits rows, and the step's
//! bookkeeping (its summary, first-scheduling announcements, failing a whole step).
//!
//! Must not: schedule or sample; `core::step` calls these in its order.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;

use super::{EngineCore, Masks, ScheduledWork, StepSummary};
use crate::backend::StepOutput;
use crate::engine::block_manager::SeqId;
use crate::engine::error::EngineError;
use crate::engine::request::{Event, FinishReason, RequestId};
use crate::engine::scheduler::{ScheduledSeq, Step};
use crate::grammar::{Constrained, GrammarError};
use crate::sampling::{score_token, ScoredToken};

impl EngineCore {
    /// The allowed-token masks of this step's constrained sequences that sample, computed in
    /// parallel.
    pub(super) fn grammar_masks(&mut self, step: &Step) -> Masks {
        if !self.requests.values().any(|r| r.req.grammar.is_some()) {
            return HashMap::new(); // no constrained request: nothing to allocate per step
        }
        let sampling: HashSet<SeqId> = step.seqs.iter().filter(|s| s.samples).map(|s| s.id).collect();
        let mut work: Vec<(SeqId, &mut Constrained)> = self
            .requests
            .values_mut()
            .flat_map(|r| r.choices.iter_mut())
            .filter(|c| !c.finished && sampling.contains(&c.seq))
            .filter_map(|c| Some((c.seq, c.grammar.as_mut()?)))
            .collect();
        if work.is_empty() {
            return HashMap::new();
        }
        let t0 = Instant::now();
        let masks: HashMap<_, _> = work.par_iter_mut().map(|(seq, g)| (*seq, g.mask())).collect();
        self.grammar_masks += masks.len() as u64;
        self.grammar_mask_nanos += t0.elapsed().as_nanos() as u64;
        masks
    }

    /// A choice's grammar failed: it ends with an error and the request's other choices go on.
    pub(super) fn fail_grammar(&mut self, rid: RequestId, c: usize, e: &GrammarError) {
        tracing::error!(request = rid, choice = c, "grammar failed: {e}");
        self.finish_choice(rid, c, FinishReason::Error, false);
    }

    /// Score the prompt tokens this step's rows predict (row `j`, at position `start + j`,
    /// predicts the token at `start + j + 1`); when the prompt is complete, send the scores.
    /// Positions are overwritten, so a prompt recomputed after preemption scores the same.
    pub(super) fn score_prompt_rows(&mut self, s: &ScheduledSeq, out: &StepOutput, first: usize) {
        let Some(&(rid, _)) = self.owner.get(&s.id) else { return };
        let Some(state) = self.requests.get_mut(&rid) else {
            return;
        };
        let Some(k) = state.req.prompt_logprobs else { return };
        let prompt = &state.req.prompt;
        let scores: Vec<(usize, ScoredToken)> = (0..s.num_tokens)
            .into_par_iter()
            .filter_map(|j| {
                let pos = s.start + j + 1;
                Some((pos, score_token(out.row(first + j), *prompt.get(pos)?, k)))
            })
            .collect();
        for (pos, score) in scores {
            state.prompt_scores[pos] = Some(score);
        }
        if s.samples {
            let logprobs = std::mem::take(&mut state.prompt_scores);
            let _ = state.sink.send(Event::PromptLogprobs { prompt: 0, logprobs });
        }
    }

    pub(super) fn summary(&self, step: &Step) -> StepSummary {
        StepSummary {
            seqs: step
                .seqs
                .iter()
                .filter_map(|s| {
                    let &(request, choice) = self.owner.get(&s.id)?;
                    Some(ScheduledWork {
                        request,
                        choice,
                        start: s.start,
                        num_tokens: s.num_tokens,
                    })
                })
                .collect(),
            preempted: step.preempted.len(),
        }
    }

    /// Announce requests scheduled for the first time; a first scheduling that starts past
    /// position 0 means the prompt hit the prefix cache.
    pub(super) fn note_started(&mut self, step: &Step) {
        for s in &step.seqs {
            let Some(&(rid, c)) = self.owner.get(&s.id) else {
                continue;
            };
            let Some(state) = self.requests.get_mut(&rid) else {
                continue;
            };
            if !state.started {
                state.started = true;
                let _ = state.sink.send(Event::Started);
            }
            if c == 0 && state.choices[0].tokens.is_empty() && s.start > 0 {
                state.cached_tokens = state.cached_tokens.max(s.start);
            }
        }
    }

    /// The executor failed: every request in the step ends with an error.
    pub(super) fn fail_step(&mut self, step: &Step, message: &str) {
        tracing::error!("engine step failed: {message}");
        let ids: Vec<RequestId> = step
            .seqs
            .iter()
            .filter_map(|s| self.owner.get(&s.id).map(|o| o.0))
            .collect();
        for id in ids {
            if let Some(state) = self.requests.get(&id) {
                let _ = state
                    .sink
                    .send(Event::Error(EngineError::Executor(message.to_string())));
            }
            self.abort(id, FinishReason::Error);
        }
    }
}
