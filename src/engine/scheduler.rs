//! Deciding what runs in each step: waiting and running queues under a token budget.
//!
//! Owns: the queues (ordered by `(priority, arrival)`, lower first), each sequence's tokens
//! and progress (`num_computed`), chunked prefill, admission with prefix-cache lookup, and
//! preemption by recompute when blocks run out. Running sequences are scheduled before any
//! waiting one, so a long prompt arriving never stalls running decodes.
//! Must not: hold tensors, sample, or be async. The engine calls `schedule → (execute) →
//! update` and `finish`.

use std::collections::HashMap;

use super::block_manager::{BlockManager, SeqId};
use crate::batch::{Batch, ExecutorLimits, LogitsWanted};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget of one step (prefill chunks + decodes).
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_seqs: usize,
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
}

impl ScheduledSeq {
    /// How many logits rows this sequence has in the step's output.
    pub fn logit_rows(&self) -> usize {
        match (self.all_logits, self.samples) {
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
        let mut budget = self.cfg.max_batched_tokens;
        let mut seqs = Vec::new();
        let mut preempted = Vec::new();
        self.schedule_running(&mut budget, &mut seqs, &mut preempted);
        if preempted.is_empty() {
            self.schedule_waiting(&mut budget, &mut seqs);
        }
        if seqs.is_empty() {
            return None;
        }
        let mut batch = Batch {
            released: std::mem::take(&mut self.released),
            ..Batch::default()
        };
        for s in &seqs {
            let info = &self.seqs[&s.id];
            let logits = match (s.all_logits, s.samples) {
                (true, _) => LogitsWanted::All,
                (false, true) => LogitsWanted::Last,
                (false, false) => LogitsWanted::None,
            };
            let table = self.blocks.table(s.id).to_vec();
            batch.push_seq(
                s.id,
                &info.tokens[s.start..s.start + s.num_tokens],
                s.start,
                table,
                logits,
            );
        }
        Some(Step { batch, seqs, preempted })
    }

    /// Running sequences first, in priority order; preempt from the back when blocks run out.
    fn schedule_running(&mut self, budget: &mut usize, out: &mut Vec<ScheduledSeq>, preempted: &mut Vec<SeqId>) {
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let id = self.running[i];
            let s = &self.seqs[&id];
            let (start, n) = (s.num_computed, (s.tokens.len() - s.num_computed).min(*budget));
            let samples = start + n == s.tokens.len();
            let score = s.score;
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
            });
            *budget -= n;
            i += 1;
        }
    }

    /// Admit waiting sequences while budget, sequence slots and blocks allow.
    fn schedule_waiting(&mut self, budget: &mut usize, out: &mut Vec<ScheduledSeq>) {
        let mut w = 0;
        while w < self.waiting.len() && *budget > 0 && self.running.len() < self.cfg.max_seqs {
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
            let n = (total - cached).min(*budget);
            if cached + n < total && !self.limits.chunked_prefill {
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
            });
            *budget -= n;
        }
    }

    /// Record a finished step: advance progress, cache full blocks, append sampled tokens.
    pub fn update(&mut self, step: &Step, sampled: &[(SeqId, u32)]) {
        for s in &step.seqs {
            let Some(info) = self.seqs.get_mut(&s.id) else { continue };
            info.num_computed = s.start + s.num_tokens;
            // Scored once: a recomputation after preemption needs no rows.
            info.score &= info.num_computed < info.prompt_len;
            if self.limits.prefix_caching {
                self.blocks.cache_full_blocks(s.id, &info.tokens, info.num_computed);
            }
        }
        for &(id, token) in sampled {
            if let Some(info) = self.seqs.get_mut(&id) {
                info.tokens.push(token);
            }
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
