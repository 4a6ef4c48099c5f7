//! The static-shape executor: drives a model that exists only in fixed, ahead-of-time
//! compiled shapes (AWS Neuron's execution model) through the ordinary `Executor` seam.
//!
//! Owns: slot-per-sequence bookkeeping (a sequence holds one of `max_batch` KV slots from its
//! first prompt token until the scheduler releases it; a reused slot is zeroed), turning a
//! flattened `Batch` into bucket-shaped graph calls (whole prompts right-padded to the
//! smallest context-encoding bucket; all decodes in one token-generation call of `max_batch`
//! rows over the smallest fitting KV bucket), the finite large-negative masks, and putting the
//! logits back in `Batch::logit_rows` order.
//! Must not: know how a graph runs (`StaticGraphs` does: on CPU here, on a NeuronCore
//! through libnrt), or schedule.

mod cpu_graphs;
pub mod plan;

pub use cpu_graphs::CpuGraphs;
pub use plan::BucketPlan;

use super::{BackendError, Executor, KvGeometry, StepOutput};
use crate::batch::{Batch, ExecutorLimits, LogitsWanted};
use crate::config::Config;

/// The value masked attention scores get: finite, so a fully masked (padding) row still has
/// a defined softmax, and large enough that `exp` of it is exactly 0 in f32.
pub const MASK_MIN: f32 = -1.0e30;

#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("invalid bucket plan: {0}")]
    Plan(String),
    #[error("all {slots} KV slots are in use; run at most {slots} sequences at once")]
    SlotsFull { slots: usize },
    #[error("sequence {seq} continues at position {pos} but holds no KV slot; a static-shape executor needs each prompt whole from position 0 (no prefix caching)")]
    NoSlot { seq: u64, pos: u32 },
    #[error("sequence {seq} has {tokens} tokens at position {pos}; a static-shape executor runs prompts whole from position 0 and then one token per step")]
    Chunked { seq: u64, pos: u32, tokens: usize },
    #[error("sequence {seq} skips from {len} cached positions to position {pos}")]
    Gap { seq: u64, len: usize, pos: u32 },
    #[error("no {kind} bucket holds {len} tokens (largest: {max})")]
    NoBucket { kind: &'static str, len: usize, max: usize },
    #[error("graph output has {got} values, expected {expected}")]
    Output { got: usize, expected: usize },
}

/// One context-encoding call: a whole prompt, right-padded to its bucket, into one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextInputs {
    pub slot: usize,
    pub input_ids: Vec<u32>,    // (bucket) prompt, then padding id 0
    pub position_ids: Vec<u32>, // (bucket) 0..bucket
    pub mask: Vec<f32>,         // (bucket, bucket) 0 where query i sees key j, else MASK_MIN
}

impl ContextInputs {
    pub fn bucket(&self) -> usize {
        self.input_ids.len()
    }
}

/// One token-generation call: row `r` is slot `r`; rows of idle slots are padding.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInputs {
    pub bucket: usize,          // KV positions attended
    pub input_ids: Vec<u32>,    // (max_batch)
    pub position_ids: Vec<u32>, // (max_batch) where each row writes its K/V
    pub mask: Vec<f32>,         // (max_batch, bucket)
}

/// The compiled graphs of one model and the KV state they share.
pub trait StaticGraphs: Send {
    fn plan(&self) -> &BucketPlan;
    fn config(&self) -> &Config;
    /// Zero one slot's K and V in every layer.
    fn reset_slot(&mut self, slot: usize) -> Result<(), BackendError>;
    /// → logits (bucket, vocab)
    fn run_context(&mut self, inp: &ContextInputs) -> Result<Vec<f32>, BackendError>;
    /// → logits (max_batch, vocab)
    fn run_token(&mut self, inp: &TokenInputs) -> Result<Vec<f32>, BackendError>;
    fn describe(&self) -> String;
}

/// Which sequence holds each slot and how many of its positions are written.
struct Slots {
    owner: Vec<Option<u64>>, // (max_batch)
    len: Vec<usize>,         // (max_batch)
}

impl Slots {
    fn find(&self, seq: u64) -> Option<usize> {
        self.owner.iter().position(|&o| o == Some(seq))
    }

    fn release(&mut self, seq: u64) {
        if let Some(s) = self.find(seq) {
            self.owner[s] = None;
        }
    }

    /// The slot `seq` holds, or a free one taken for it.
    fn claim(&mut self, seq: u64) -> Result<usize, StaticError> {
        let slot = self.find(seq).or_else(|| self.owner.iter().position(Option::is_none));
        let slot = slot.ok_or(StaticError::SlotsFull {
            slots: self.owner.len(),
        })?;
        self.owner[slot] = Some(seq);
        Ok(slot)
    }
}

pub struct StaticExecutor<G: StaticGraphs> {
    graphs: G,
    slots: Slots,
    cfg: Config,
    geo: KvGeometry,
}

/// A decode of this step: (sequence index in the batch, slot, token, position).
type Decode = (usize, usize, u32, u32);

impl<G: StaticGraphs> StaticExecutor<G> {
    /// `block_size` only shapes the block accounting the scheduler does; the KV cache itself
    /// is `max_batch` slots of `max_len` positions.
    pub fn new(graphs: G, block_size: usize) -> Self {
        let plan = graphs.plan().clone();
        let mut cfg = graphs.config().clone();
        cfg.max_position_embeddings = cfg.max_position_embeddings.min(plan.max_len);
        let geo = KvGeometry {
            num_layers: cfg.num_layers,
            num_blocks: plan.max_batch * plan.max_len.div_ceil(block_size),
            block_size,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        let slots = Slots {
            owner: vec![None; plan.max_batch],
            len: vec![0; plan.max_batch],
        };
        StaticExecutor {
            graphs,
            slots,
            cfg,
            geo,
        }
    }

    pub fn graphs(&self) -> &G {
        &self.graphs
    }

    /// Encode a whole prompt into a fresh (zeroed) slot. → logits (prompt, vocab)
    fn encode(&mut self, seq: u64, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let plan = self.graphs.plan();
        let (n, max) = (tokens.len(), plan.max_len);
        let bucket = plan.context_bucket(n).ok_or(StaticError::NoBucket {
            kind: "context-encoding",
            len: n,
            max,
        })?;
        let slot = self.slots.claim(seq)?;
        self.graphs.reset_slot(slot)?;
        let mut input_ids = tokens.to_vec();
        input_ids.resize(bucket, 0);
        let mask = (0..bucket * bucket)
            .map(|i| if i % bucket <= i / bucket { 0.0 } else { MASK_MIN })
            .collect();
        let inp = ContextInputs {
            slot,
            input_ids,
            position_ids: (0..bucket as u32).collect(),
            mask,
        };
        let mut logits = self.graphs.run_context(&inp)?;
        check_len(&logits, bucket * self.cfg.vocab_size)?;
        logits.truncate(n * self.cfg.vocab_size);
        self.slots.len[slot] = n;
        Ok(logits)
    }

    /// Run every decode of the step in one token-generation call. → logits (max_batch, vocab)
    fn generate(&mut self, decodes: &[Decode]) -> Result<Vec<f32>, BackendError> {
        let plan = self.graphs.plan();
        let (b, max) = (plan.max_batch, plan.max_len);
        let kv_len = decodes.iter().map(|d| d.3 as usize + 1).max().unwrap_or(1);
        let bucket = plan.token_bucket(kv_len).ok_or(StaticError::NoBucket {
            kind: "token-generation",
            len: kv_len,
            max,
        })?;
        // Idle rows write at their slot's next free position, which nothing attends to
        // before the slot's own next token overwrites it.
        let mut inp = TokenInputs {
            bucket,
            input_ids: vec![0; b],
            position_ids: self.slots.len.iter().map(|&l| l.min(max - 1) as u32).collect(),
            mask: vec![MASK_MIN; b * bucket],
        };
        for &(_, slot, token, pos) in decodes {
            inp.input_ids[slot] = token;
            inp.position_ids[slot] = pos;
            inp.mask[slot * bucket..slot * bucket + pos as usize + 1].fill(0.0);
        }
        let logits = self.graphs.run_token(&inp)?;
        check_len(&logits, b * self.cfg.vocab_size)?;
        for &(_, slot, _, pos) in decodes {
            self.slots.len[slot] = pos as usize + 1;
        }
        Ok(logits)
    }

    /// Classify one sequence of the batch: a whole prompt (encoded now) or a decode.
    fn admit(&mut self, i: usize, batch: &Batch, range: (usize, usize)) -> Result<Option<Decode>, BackendError> {
        let (seq, (a, b)) = (batch.seqs[i].seq_id, range);
        let pos = batch.positions[a];
        if pos == 0 {
            return Ok(None);
        }
        let slot = self.slots.find(seq).ok_or(StaticError::NoSlot { seq, pos })?;
        if b - a != 1 {
            return Err(StaticError::Chunked {
                seq,
                pos,
                tokens: b - a,
            }
            .into());
        }
        let len = self.slots.len[slot];
        if pos as usize > len {
            return Err(StaticError::Gap { seq, len, pos }.into());
        }
        Ok(Some((i, slot, batch.token_ids[a], pos)))
    }
}

fn check_len(v: &[f32], expected: usize) -> Result<(), StaticError> {
    match v.len() == expected {
        true => Ok(()),
        false => Err(StaticError::Output { got: v.len(), expected }),
    }
}

/// The rows `wanted` asks for out of a sequence's `n` logits rows.
fn wanted_rows(wanted: LogitsWanted, n: usize) -> std::ops::Range<usize> {
    match wanted {
        LogitsWanted::None => 0..0,
        LogitsWanted::Last => n.saturating_sub(1)..n,
        LogitsWanted::All => 0..n,
    }
}

impl<G: StaticGraphs> Executor for StaticExecutor<G> {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, BackendError> {
        // Released slots are freed first, so they are freed even if this batch is refused.
        for &seq in &batch.released {
            self.slots.release(seq);
        }
        let vocab = self.cfg.vocab_size;
        let geo = self.geo;
        batch.validate(vocab, self.cfg.max_position_embeddings, geo.block_size, geo.num_blocks)?;
        let ranges = batch.seq_ranges();
        let mut rows: Vec<Vec<f32>> = vec![Vec::new(); ranges.len()]; // per sequence: (rows, vocab)
        let mut decodes = Vec::new();
        for (i, &(a, b)) in ranges.iter().enumerate() {
            match self.admit(i, batch, (a, b))? {
                Some(d) => decodes.push(d),
                None => {
                    let logits = self.encode(batch.seqs[i].seq_id, &batch.token_ids[a..b])?;
                    let r = wanted_rows(batch.seqs[i].logits, b - a);
                    rows[i] = logits[r.start * vocab..r.end * vocab].to_vec();
                }
            }
        }
        if !decodes.is_empty() {
            let logits = self.generate(&decodes)?;
            for &(i, slot, _, _) in &decodes {
                if wanted_rows(batch.seqs[i].logits, 1).len() == 1 {
                    rows[i] = logits[slot * vocab..(slot + 1) * vocab].to_vec();
                }
            }
        }
        Ok(StepOutput {
            logits: rows.concat(),
            vocab,
        })
    }

    fn kv_geometry(&self) -> KvGeometry {
        self.geo
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn limits(&self) -> ExecutorLimits {
        ExecutorLimits {
            max_seqs: Some(self.graphs.plan().max_batch),
            prefix_caching: false,
            chunked_prefill: false,
        }
    }

    fn describe(&self) -> String {
        let p = self.graphs.plan();
        format!(
            "static shapes on {} ({} slots × {} positions; context buckets {:?}; token buckets {:?})",
            self.graphs.describe(),
            p.max_batch,
            p.max_len,
            p.context,
            p.token
        )
    }
}

#[cfg(test)]
mod tests;
