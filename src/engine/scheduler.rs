//! Deciding what runs in each step: waiting and running queues under a token budget.
//!
//! Owns: the queues (ordered by `(priority, arrival)`, lower first), each sequence's tokens
//! and progress (`num_computed`), chunked prefill, admission with prefix-cache lookup, and
//! preemption by recompute when blocks run out. Running sequences are scheduled before any
//! waiting one, so a long prompt arriving never stalls running decodes. While any sequence
//! decodes, the prompt tokens of a step are capped by the step-time budget (`step_cost`), fed
//! with each step's measured duration, so that decodes keep a bounded inter-token latency.
//! Speculative decoding: once everything else is scheduled, decodes of sequences that may
//! speculate get prompt-lookup draft tokens (`draft`) from what budget is left, never by
//! preempting; after verification `update` keeps the accepted ones and rolls `num_computed`
//! back over the rest (their K/V slots are simply overwritten later).
//! Must not: hold tensors, sample, or be async. The engine calls `schedule → (execute) →
//! update` and `finish`.

use std::collections::HashMap;
use std::time::Duration;

use super::block_manager::{BlockManager, SeqId};
use super::draft::PromptLookup;
use super::step_cost::StepCost;
use crate::batch::{Batch, ExecutorLimits, LogitsWanted};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget of one step (prefill chunks + decodes).
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_seqs: usize,
    /// Aim for steps no longer than this while sequences are decoding, by taking fewer prompt
    /// tokens; `None` takes the whole budget every step.
    pub step_time_target: Option<Duration>,
    /// Draft tokens by prompt lookup for the sequences allowed to (`Scheduler::speculate`);
    /// `None` never drafts.
    pub speculation: Option<PromptLookup>,
}

/// The scheduler's view of one sequence.
struct SeqInfo {
    tokens: Vec<u32>, // prompt + generated
    prompt_len: usize,
    num_computed: usize, // tokens whose K/V are in the cache
    key: (i32, u64),     // (priority, arrival): lower runs first, higher is preempted first
    /// Admit only once this sequence's prompt is computed (n > 1 fan-out shares its blocks).
    after: Option<SeqId>,
    /// Logit rows for every prompt position are wanted (prompt scoring): such a sequence
    /// skips the prefix cache (cached positions would have no rows) until its prompt is done.
    score: bool,
    /// `Some(len)`: may draft, up to a total of `len` tokens (prompt + most output).
    speculate: Option<usize>,
}

impl SeqInfo {
    /// A sequence whose prompt is computed and which has one new token to run from `start`.
    fn is_decode(&self, start: usize) -> bool {
        start >= self.prompt_len && self.tokens.len() == start + 1
    }
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    /// First position computed in this step.
    pub start: usize,
    pub num_tokens: usize,
    /// True when this step reaches the sequence's last token, so a token is sampled.
    pub samples: bool,
    /// Every token of this step has a logits row (prompt scoring); otherwise only the last
    /// does, and only when `samples`.
    pub all_logits: bool,
    /// Draft tokens appended after the decode's token (`num_tokens` = 1 + `drafted`); each of
    /// the step's tokens then has a logits row, to verify the draft.
    pub drafted: usize,
}

impl ScheduledSeq {
    /// How many logits rows this sequence has in the step's output.
    pub fn logit_rows(&self) -> usize {
        match (self.all_logits || self.drafted > 0, self.samples) {
            (true, _) => self.num_tokens,
            (false, true) => 1,
            (false, false) => 0,
        }
    }
}

/// What one step runs: the batch for the executor and who is in it.
#[derive(Debug, Clone)]
pub struct Step {
    pub batch: Batch,
    pub seqs: Vec<ScheduledSeq>,
    /// Sequences preempted (blocks freed, to be recomputed) while building this step.
    pub preempted: Vec<SeqId>,
    /// Single-token decodes in this step, and the prompt (or recomputed) tokens beside them.
    pub decodes: usize,
    pub prefill_tokens: usize,
    /// Draft tokens beside the decodes.
    pub drafted: usize,
}

impl Step {
    /// The draft tokens of the step's `i`-th sequence (empty when it did not draft).
    pub fn draft(&self, i: usize) -> &[u32] {
        let start: usize = self.seqs[..i].iter().map(|s| s.num_tokens).sum();
        let s = &self.seqs[i];
        &self.batch.token_ids[start + s.num_tokens - s.drafted..start + s.num_tokens]
    }
}

/// What one step may take: `tokens` in all, and of them at most `prefill` outside decodes.
struct Budget {
    tokens: usize,
    prefill: usize,
    /// The prefill cap, not the token budget, cut some sequence's chunk.
    capped: bool,
}

impl Budget {
    /// How many of `wanted` tokens one sequence gets; a decode (one token past its prompt)
    /// is not held to the prefill cap.
    fn grant(&mut self, wanted: usize, decode: bool) -> usize {
        let n = wanted.min(self.tokens);
        if decode {
            return n;
        }
        self.capped |= n > self.prefill;
        n.min(self.prefill)
    }

    fn spend(&mut self, n: usize, decode: bool) {
        self.tokens -= n;
        if !decode {
            self.prefill -= n;
        }
    }
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    limits: ExecutorLimits,
    pub blocks: BlockManager,
    seqs: HashMap<SeqId, SeqInfo>,
    waiting: Vec<SeqId>,  // sorted by key
    running: Vec<SeqId>,  // sorted by key
    released: Vec<SeqId>, // ended since the last step, reported in the next batch
    next_arrival: u64,
    pub num_preemptions: u64,
    cost: StepCost,
    /// Steps whose prompt tokens the step-time budget cut.
    pub num_capped_steps: u64,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, blocks: BlockManager) -> Scheduler {
        Scheduler {
            cfg,
            limits: ExecutorLimits::default(),
            blocks,
            seqs: HashMap::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            released: Vec::new(),
            next_arrival: 0,
            num_preemptions: 0,
            cost: StepCost::default(),
            num_capped_steps: 0,
        }
    }

    /// Schedule within an executor's limits: at most its slots, no prefix sharing or prompt
    /// chunking where it cannot do them. Without chunking the step budget grows to
    /// `max_context` plus one decode per sequence, so that any admissible prompt fits a step
    /// beside the running decodes.
    pub fn with_limits(mut self, limits: ExecutorLimits, max_context: usize) -> Scheduler {
        if let Some(m) = limits.max_seqs {
            self.cfg.max_seqs = self.cfg.max_seqs.min(m);
        }
        if !limits.chunked_prefill {
            let need = max_context + self.cfg.max_seqs;
            self.cfg.max_batched_tokens = self.cfg.max_batched_tokens.max(need);
        }
        self.limits = limits;
        self
    }

    pub fn config(&self) -> SchedulerConfig {
        self.cfg
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Queue a new sequence.
    pub fn add(&mut self, id: SeqId, prompt: Vec<u32>, priority: i32, after: Option<SeqId>) {
        let key = (priority, self.next_arrival);
        self.next_arrival += 1;
        let info = SeqInfo {
            prompt_len: prompt.len(),
            tokens: prompt,
            num_computed: 0,
            key,
            after,
            score: false,
            speculate: None,
        };
        self.seqs.insert(id, info);
        self.insert_sorted(id, false);
    }

    /// Ask for logit rows at every prompt position of a queued sequence (prompt scoring).
    pub fn score_prompt(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.score = true;
        }
    }

    /// Let a queued sequence draft tokens while it decodes (when the config speculates),
    /// never past `max_len` tokens in all.
    pub fn speculate(&mut self, id: SeqId, max_len: usize) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.speculate = Some(max_len);
        }
    }

    /// Remove a sequence (finished, cancelled or failed) and free its blocks.
    pub fn finish(&mut self, id: SeqId) {
        if self.seqs.contains_key(&id) {
            self.released.push(id);
        }
        self.seqs.remove(&id);
        self.waiting.retain(|&s| s != id);
        self.running.retain(|&s| s != id);
        self.blocks.free(id);
    }

    fn insert_sorted(&mut self, id: SeqId, running: bool) {
        let key = self.seqs[&id].key;
        let seqs = &self.seqs;
        let queue = if running { &mut self.running } else { &mut self.waiting };
        let at = queue.partition_point(|s| seqs[s].key <= key);
        queue.insert(at, id);
    }

    /// Free a running sequence's blocks and send it back to wait for recomputation.
    fn preempt(&mut self, id: SeqId) {
        self.running.retain(|&s| s != id);
        self.blocks.free(id);
        self.released.push(id);
        if let Some(s) = self.seqs.get_mut(&id) {
            s.num_computed = 0;
        }
        self.num_preemptions += 1;
        self.insert_sorted(id, false);
    }

    fn gated(&self, id: SeqId) -> bool {
        let after = self.seqs[&id].after;
        after.is_some_and(|a| self.seqs.get(&a).is_some_and(|l| l.num_computed < l.prompt_len))
    }

    /// Build the next step, or `None` when nothing can run.
    pub fn schedule(&mut self) -> Option<Step> {
        let mut budget = self.budget();
        let mut seqs = Vec::new();
        let mut preempted = Vec::new();
        self.schedule_running(&mut budget, &mut seqs, &mut preempted);
        if preempted.is_empty() {
            self.schedule_waiting(&mut budget, &mut seqs);
        }
        if seqs.is_empty() {
            return None;
        }
        // Under memory pressure (a preemption this step) blocks go to sequences, not drafts.
        let drafts = match preempted.is_empty() {
            true => self.add_drafts(&mut budget, &mut seqs),
            false => vec![Vec::new(); seqs.len()],
        };
        let mut batch = Batch {
            released: std::mem::take(&mut self.released),
            ..Batch::default()
        };
        let (mut decodes, mut prefill_tokens, mut drafted) = (0, 0, 0);
        for (s, draft) in seqs.iter().zip(&drafts) {
            let info = &self.seqs[&s.id];
            match info.is_decode(s.start) {
                true => decodes += 1,
                false => prefill_tokens += s.num_tokens,
            }
            drafted += s.drafted;
            let logits = match (s.all_logits || s.drafted > 0, s.samples) {
                (true, _) => LogitsWanted::All,
                (false, true) => LogitsWanted::Last,
                (false, false) => LogitsWanted::None,
            };
            let table = self.blocks.table(s.id).to_vec();
            let mut tokens = info.tokens[s.start..s.start + s.num_tokens - s.drafted].to_vec();
            tokens.extend_from_slice(draft);
            batch.push_seq(s.id, &tokens, s.start, table, logits);
        }
        self.num_capped_steps += budget.capped as u64;
        Some(Step {
            batch,
            seqs,
            preempted,
            decodes,
            prefill_tokens,
            drafted,
        })
    }

    /// Give the scheduled decodes of sequences that may speculate their prompt-lookup drafts,
    /// from the budget left after everything else and from free blocks (never preempting).
    /// Returns each scheduled sequence's draft, in order.
    fn add_drafts(&mut self, budget: &mut Budget, seqs: &mut [ScheduledSeq]) -> Vec<Vec<u32>> {
        let mut drafts = vec![Vec::new(); seqs.len()];
        let (Some(lookup), true) = (self.cfg.speculation, self.limits.chunked_prefill) else {
            return drafts;
        };
        for (s, draft) in seqs.iter_mut().zip(&mut drafts) {
            let info = &self.seqs[&s.id];
            let room = budget.tokens.min(budget.prefill);
            let Some(max_len) = info.speculate else { continue };
            if room == 0 || !info.is_decode(s.start) || s.all_logits {
                continue;
            }
            // The draft's tokens are useful only while the output has room after them.
            let limit = max_len.saturating_sub(info.tokens.len() + 1).min(room);
            let proposed = lookup.propose(&info.tokens, limit);
            if proposed.is_empty() || !self.blocks.allocate(s.id, s.start + 1 + proposed.len(), &[]) {
                continue;
            }
            *draft = proposed.to_vec();
            s.drafted = draft.len();
            s.num_tokens += s.drafted;
            budget.spend(s.drafted, false);
        }
        drafts
    }

    /// This step's budget: the token budget, and while sequences decode (and the executor can
    /// chunk prompts) the prompt tokens that keep the step near its time target.
    fn budget(&self) -> Budget {
        let tokens = self.cfg.max_batched_tokens;
        let decodes = self
            .running
            .iter()
            .filter(|id| self.seqs[id].is_decode(self.seqs[id].num_computed))
            .count();
        let cap = match (self.cfg.step_time_target, self.limits.chunked_prefill) {
            (Some(target), true) => self.cost.prefill_cap(decodes, target),
            _ => None,
        };
        let room = tokens.saturating_sub(decodes).max(1);
        Budget {
            tokens,
            prefill: cap.map_or(tokens, |c| c.min(room)),
            capped: false,
        }
    }

    /// Learn how long a step of this shape took (the engine measures it).
    pub fn record_step(&mut self, step: &Step, elapsed: Duration) {
        self.cost
            .observe(step.prefill_tokens + step.drafted, step.decodes, elapsed);
    }

    /// The fitted step costs, for metrics.
    pub fn step_cost(&self) -> StepCost {
        self.cost
    }

    /// Running sequences first, in priority order; preempt from the back when blocks run out.
    fn schedule_running(&mut self, budget: &mut Budget, out: &mut Vec<ScheduledSeq>, preempted: &mut Vec<SeqId>) {
        let mut i = 0;
        while i < self.running.len() && budget.tokens > 0 {
            let id = self.running[i];
            let s = &self.seqs[&id];
            let decode = s.is_decode(s.num_computed);
            let start = s.num_computed;
            let n = budget.grant(s.tokens.len() - start, decode);
            let samples = start + n == s.tokens.len();
            let score = s.score;
            if n == 0 {
                i += 1; // a prompt chunk past this step's prefill cap
                continue;
            }
            if !samples && !self.limits.chunked_prefill {
                break;
            }
            let mut fits = true;
            while !self.blocks.allocate(id, start + n, &[]) {
                let Some(&victim) = self.running.last() else { break };
                self.preempt(victim);
                preempted.push(victim);
                if victim == id {
                    fits = false;
                    break;
                }
            }
            if !fits {
                break;
            }
            out.push(ScheduledSeq {
                id,
                start,
                num_tokens: n,
                samples,
                all_logits: score,
                drafted: 0,
            });
            budget.spend(n, decode);
            i += 1;
        }
    }

    /// Admit waiting sequences while budget, sequence slots and blocks allow.
    fn schedule_waiting(&mut self, budget: &mut Budget, out: &mut Vec<ScheduledSeq>) {
        let mut w = 0;
        while w < self.waiting.len() && budget.prefill > 0 && self.running.len() < self.cfg.max_seqs {
            let id = self.waiting[w];
            if self.gated(id) {
                w += 1;
                continue;
            }
            let s = &self.seqs[&id];
            let (prefix, cached) = match self.limits.prefix_caching && !s.score {
                true => self.blocks.lookup_prefix(&s.tokens),
                false => (Vec::new(), 0),
            };
            let score = s.score;
            let total = s.tokens.len();
            let n = budget.grant(total - cached, false);
            if n == 0 || (cached + n < total && !self.limits.chunked_prefill) {
                break;
            }
            if !self.blocks.allocate(id, cached + n, &prefix) {
                break;
            }
            self.blocks.record_lookup(total, cached);
            if let Some(s) = self.seqs.get_mut(&id) {
                s.num_computed = cached;
            }
            self.waiting.remove(w);
            self.insert_sorted(id, true);
            out.push(ScheduledSeq {
                id,
                start: cached,
                num_tokens: n,
                samples: cached + n == total,
                all_logits: score,
                drafted: 0,
            });
            budget.spend(n, false);
        }
    }

    /// Record a finished step: append the kept tokens (a sequence that drafted may keep
    /// several: its accepted draft tokens and the one sampled after them, in order), advance
    /// progress, cache full blocks.
    pub fn update(&mut self, step: &Step, sampled: &[(SeqId, u32)]) {
        let mut kept: HashMap<SeqId, usize> = HashMap::new();
        for &(id, token) in sampled {
            if let Some(info) = self.seqs.get_mut(&id) {
                info.tokens.push(token);
                *kept.entry(id).or_default() += 1;
            }
        }
        for s in &step.seqs {
            let Some(info) = self.seqs.get_mut(&s.id) else { continue };
            // A draft's K/V counts up to its last accepted token (kept tokens minus the one
            // sampled after it); rejected positions are recomputed from the kept tokens.
            let accepted = kept.get(&s.id).map_or(0, |k| k.saturating_sub(1)).min(s.drafted);
            info.num_computed = s.start + s.num_tokens - s.drafted + accepted;
            // Scored once: a recomputation after preemption needs no rows.
            info.score &= info.num_computed < info.prompt_len;
            if self.limits.prefix_caching {
                self.blocks.cache_full_blocks(s.id, &info.tokens, info.num_computed);
            }
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
