//! The plain-data contract between whoever schedules work and the executor that runs it.
//!
//! Owns: the `Batch` of one model step (token ids, per-token positions, per-sequence KV block
//! tables) and its validation against a KV cache geometry.
//! Must not: hold tensors, allocate KV blocks or know about requests.
//!
//! Layout: the tokens of all sequences are concatenated ("flattened", no padding). Sequence `s`
//! owns `tokens[offset(s) .. offset(s) + seqs[s].num_tokens]`. A token at position `p` writes
//! its K/V to slot `p % block_size` of block `block_table[p / block_size]` and attends to
//! positions `0..=p` of its own sequence (or the last `window` of them for sliding layers).

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqEntry {
    /// The scheduler's id of this sequence, stable across steps (executors that keep
    /// per-sequence state, like the static-shape one, key it by this id).
    pub seq_id: u64,
    /// How many consecutive tokens of the batch belong to this sequence.
    pub num_tokens: usize,
    /// KV block ids holding this sequence's positions, in order.
    pub block_table: Vec<u32>,
    /// Which of this sequence's tokens need logits.
    pub logits: LogitsWanted,
}

/// Which tokens of a sequence produce a logits row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// The sequence's last token in this step (normal prefill and decode).
    Last,
    /// Every token (prompt scoring, golden tests).
    All,
}

/// One model step over several sequences of different lengths at different positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// (num_tokens) token ids, sequence after sequence.
    pub token_ids: Vec<u32>,
    /// (num_tokens) position of each token within its sequence.
    pub positions: Vec<u32>,
    /// One entry per sequence, in the order their tokens appear.
    pub seqs: Vec<SeqEntry>,
    /// Sequences that ended (finished, cancelled or preempted) since the previous step; an
    /// executor with per-sequence state releases it.
    pub released: Vec<u64>,
}

/// What the executor can do, which constrains scheduling (`Executor::limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorLimits {
    /// Most sequences the executor can hold at once (its fixed slots), if bounded.
    pub max_seqs: Option<usize>,
    /// Whether a sequence may start from cached prefix blocks of another.
    pub prefix_caching: bool,
    /// Whether a prompt may be split over several steps; if not, a prompt (or a preempted
    /// sequence's recomputation) always runs whole in one step.
    pub chunked_prefill: bool,
}

impl Default for ExecutorLimits {
    fn default() -> Self {
        ExecutorLimits {
            max_seqs: None,
            prefix_caching: true,
            chunked_prefill: true,
        }
    }
}

/// A batch that does not fit the executor's KV cache or is inconsistent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch has {tokens} token ids but {positions} positions")]
    LengthMismatch { tokens: usize, positions: usize },
    #[error("sequences claim {claimed} tokens but the batch has {tokens}")]
    SeqTokens { claimed: usize, tokens: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenId { id: u32, vocab: usize },
    #[error("sequence {seq}: position {pos} needs block {index} of its block table but the table has {len}")]
    BlockTable {
        seq: usize,
        pos: u32,
        index: usize,
        len: usize,
    },
    #[error("sequence {seq}: block id {block} is outside the cache's {num_blocks} blocks")]
    BlockId { seq: usize, block: u32, num_blocks: usize },
    #[error("position {pos} exceeds the model's maximum of {max}")]
    Position { pos: u32, max: usize },
    #[error("empty batch")]
    Empty,
}

impl Batch {
    /// Append one sequence's tokens at consecutive positions starting at `start_pos`. Its id
    /// is its index in the batch, so a hand-built batch series names a sequence by its order.
    pub fn push(&mut self, tokens: &[u32], start_pos: usize, block_table: Vec<u32>, logits: LogitsWanted) {
        let id = self.seqs.len() as u64;
        self.push_seq(id, tokens, start_pos, block_table, logits);
    }

    /// `push` with the sequence's id given.
    pub fn push_seq(
        &mut self,
        seq_id: u64,
        tokens: &[u32],
        start_pos: usize,
        block_table: Vec<u32>,
        logits: LogitsWanted,
    ) {
        self.token_ids.extend_from_slice(tokens);
        self.positions.extend((0..tokens.len()).map(|i| (start_pos + i) as u32));
        self.seqs.push(SeqEntry {
            seq_id,
            num_tokens: tokens.len(),
            block_table,
            logits,
        });
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Token ranges `[start, end)` of each sequence within the flattened batch.
    pub fn seq_ranges(&self) -> Vec<(usize, usize)> {
        let mut start = 0;
        self.seqs
            .iter()
            .map(|s| {
                let r = (start, start + s.num_tokens);
                start += s.num_tokens;
                r
            })
            .collect()
    }

    /// Each token's KV slot (`block * block_size + offset`) and sequence index, written into
    /// `slots` and `seq` (cleared first, so callers can reuse them every step).
    pub fn fill_slots(&self, block_size: usize, slots: &mut Vec<usize>, seq: &mut Vec<u32>) {
        slots.clear();
        seq.clear();
        for (s, (entry, (start, end))) in self.seqs.iter().zip(self.seq_ranges()).enumerate() {
            for &pos in &self.positions[start..end] {
                let pos = pos as usize;
                slots.push(entry.block_table[pos / block_size] as usize * block_size + pos % block_size);
                seq.push(s as u32);
            }
        }
    }

    /// Batch-token indices that produce logits, in output-row order.
    pub fn logit_rows(&self) -> Vec<u32> {
        let mut rows = Vec::new();
        for (seq, (start, end)) in self.seqs.iter().zip(self.seq_ranges()) {
            match seq.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last if end > start => rows.push((end - 1) as u32),
                LogitsWanted::Last => {}
                LogitsWanted::All => rows.extend((start..end).map(|i| i as u32)),
            }
        }
        rows
    }

    /// Check the batch against a vocabulary, position limit and KV geometry.
    pub fn validate(
        &self,
        vocab: usize,
        max_pos: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<(), BatchError> {
        if self.token_ids.is_empty() {
            return Err(BatchError::Empty);
        }
        if self.token_ids.len() != self.positions.len() {
            return Err(BatchError::LengthMismatch {
                tokens: self.token_ids.len(),
                positions: self.positions.len(),
            });
        }
        let claimed: usize = self.seqs.iter().map(|s| s.num_tokens).sum();
        if claimed != self.token_ids.len() {
            return Err(BatchError::SeqTokens {
                claimed,
                tokens: self.token_ids.len(),
            });
        }
        if let Some(&id) = self.token_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(BatchError::TokenId { id, vocab });
        }
        for (seq, (entry, (start, end))) in self.seqs.iter().zip(self.seq_ranges()).enumerate() {
            if let Some(&block) = entry.block_table.iter().find(|&&b| b as usize >= num_blocks) {
                return Err(BatchError::BlockId { seq, block, num_blocks });
            }
            for &pos in &self.positions[start..end] {
                if pos as usize >= max_pos {
                    return Err(BatchError::Position { pos, max: max_pos });
                }
                let index = pos as usize / block_size;
                if index >= entry.block_table.len() {
                    return Err(BatchError::BlockTable {
                        seq,
                        pos,
                        index,
                        len: entry.block_table.len(),
                    });
                }
            }
        }
        Ok(())
    }
}
