//! KV block bookkeeping: which block ids each sequence holds, reference counts, and automatic
//! prefix caching of full blocks.
//!
//! Owns: block ids (never tensors), the free queue (least recently used first), per-sequence
//! block tables, and the hash → block map of cached full blocks. A full block's hash chains
//! its parent's hash with its token ids; a later sequence with the same prefix takes a
//! reference to those blocks instead of recomputing them. Freed cached blocks stay reusable
//! until they are evicted, least recently used first, by a new allocation.
//! Must not: choose which sequence to preempt (the scheduler does) or touch KV data.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

pub type SeqId = u64;

/// What a cached block holds, checked on every hit so a hash collision can never hand out
/// another prefix's KV.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockKey {
    parent: Option<u64>,
    tokens: Vec<u32>,
}

#[derive(Debug, Default)]
struct Block {
    ref_count: u32,
    /// Set while the block is registered in the prefix cache.
    hash: Option<u64>,
    key: Option<BlockKey>,
    /// Position in the free queue while `ref_count == 0`.
    free_stamp: Option<u64>,
}

/// Prefix-cache counters, in tokens (as vLLM's `prefix_cache_queries` / `_hits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub queries: u64,
    pub hits: u64,
}

pub struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    free: BTreeMap<u64, u32>, // stamp → block id, oldest first
    next_stamp: u64,
    cached: HashMap<u64, u32>, // block hash → block id
    tables: HashMap<SeqId, Vec<u32>>,
    /// Per sequence: how many of its leading blocks are registered in the cache.
    registered: HashMap<SeqId, usize>,
    pub stats: CacheStats,
}

/// Hash of a full block given its parent's hash.
fn block_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> BlockManager {
        let mut m = BlockManager {
            block_size,
            blocks: (0..num_blocks).map(|_| Block::default()).collect(),
            free: BTreeMap::new(),
            next_stamp: 0,
            cached: HashMap::new(),
            tables: HashMap::new(),
            registered: HashMap::new(),
            stats: CacheStats::default(),
        };
        for id in 0..num_blocks as u32 {
            m.push_free(id);
        }
        m
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks no sequence holds (cached ones included: they are evictable).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Fraction of blocks held by sequences.
    pub fn usage(&self) -> f64 {
        1.0 - self.num_free() as f64 / self.num_blocks().max(1) as f64
    }

    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    pub fn table(&self, seq: SeqId) -> &[u32] {
        self.tables.get(&seq).map(Vec::as_slice).unwrap_or(&[])
    }

    fn push_free(&mut self, id: u32) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.free.insert(stamp, id);
        self.blocks[id as usize].free_stamp = Some(stamp);
    }

    /// Take a reference to `id`, pulling it off the free queue if nobody held it.
    fn touch(&mut self, id: u32) {
        let b = &mut self.blocks[id as usize];
        if let Some(stamp) = b.free_stamp.take() {
            self.free.remove(&stamp);
        }
        b.ref_count += 1;
    }

    /// Pop the least recently used free block, evicting its cache entry.
    fn pop_free(&mut self) -> Option<u32> {
        let (_, id) = self.free.pop_first()?;
        let b = &mut self.blocks[id as usize];
        b.free_stamp = None;
        if let Some(h) = b.hash.take() {
            b.key = None;
            if self.cached.get(&h) == Some(&id) {
                self.cached.remove(&h);
            }
        }
        b.ref_count = 1;
        Some(id)
    }

    /// The longest run of cached full blocks that starts `tokens` (read-only: no references
    /// taken). At most `tokens.len() - 1` tokens are matched, since the last token must be
    /// computed to produce logits. Returns the blocks and the number of tokens they cover.
    pub fn lookup_prefix(&self, tokens: &[u32]) -> (Vec<u32>, usize) {
        let limit = tokens.len().saturating_sub(1);
        let mut parent = None;
        let mut found = Vec::new();
        for chunk in tokens[..limit].chunks_exact(self.block_size) {
            let h = block_hash(parent, chunk);
            let Some(&id) = self.cached.get(&h) else { break };
            let expected = BlockKey {
                parent,
                tokens: chunk.to_vec(),
            };
            if self.blocks[id as usize].key.as_ref() != Some(&expected) {
                break;
            }
            found.push(id);
            parent = Some(h);
        }
        let n = found.len() * self.block_size;
        (found, n)
    }

    /// Make `seq`'s table cover `num_tokens` tokens. A sequence without a table starts from
    /// `prefix` (blocks returned by `lookup_prefix`). Returns false, changing nothing, when
    /// there are not enough free blocks.
    pub fn allocate(&mut self, seq: SeqId, num_tokens: usize, prefix: &[u32]) -> bool {
        let have = self.tables.get(&seq).map_or(0, Vec::len);
        let start = if have == 0 { prefix } else { &[][..] };
        let need = num_tokens.div_ceil(self.block_size).saturating_sub(have + start.len());
        // Prefix blocks that sit in the free queue stop being available once referenced.
        let free_prefix = start
            .iter()
            .filter(|&&b| self.blocks[b as usize].ref_count == 0)
            .count();
        if need + free_prefix > self.num_free() {
            return false;
        }
        let start = start.to_vec();
        for &b in &start {
            self.touch(b);
        }
        if have == 0 {
            self.registered.insert(seq, start.len());
        }
        let mut table = self.tables.remove(&seq).unwrap_or_default();
        table.extend(start);
        for _ in 0..need {
            table.push(self.pop_free().expect("free count checked above"));
        }
        self.tables.insert(seq, table);
        true
    }

    /// Register `seq`'s full blocks among its first `num_computed` tokens in the prefix cache.
    pub fn cache_full_blocks(&mut self, seq: SeqId, tokens: &[u32], num_computed: usize) {
        let bs = self.block_size;
        let Some(table) = self.tables.get(&seq) else { return };
        let full = (num_computed.min(tokens.len()) / bs).min(table.len());
        let done = self.registered.get(&seq).copied().unwrap_or(0);
        if full <= done {
            return;
        }
        let table = table.clone();
        let mut parent = None;
        for (i, chunk) in tokens[..full * bs].chunks_exact(bs).enumerate() {
            let h = block_hash(parent, chunk);
            if i >= done {
                let id = table[i];
                let b = &mut self.blocks[id as usize];
                if b.hash.is_none() && !self.cached.contains_key(&h) {
                    b.hash = Some(h);
                    b.key = Some(BlockKey {
                        parent,
                        tokens: chunk.to_vec(),
                    });
                    self.cached.insert(h, id);
                }
            }
            parent = Some(h);
        }
        self.registered.insert(seq, full);
    }

    /// Release all of `seq`'s blocks. Tail blocks are queued first, so they are evicted
    /// before the shared prefix blocks.
    pub fn free(&mut self, seq: SeqId) {
        self.registered.remove(&seq);
        let Some(table) = self.tables.remove(&seq) else { return };
        for &id in table.iter().rev() {
            let b = &mut self.blocks[id as usize];
            b.ref_count = b.ref_count.saturating_sub(1);
            if b.ref_count == 0 {
                self.push_free(id);
            }
        }
    }

    /// Record a prefix-cache lookup of `queried` tokens of which `hit` were cached.
    pub fn record_lookup(&mut self, queried: usize, hit: usize) {
        self.stats.queries += queried as u64;
        self.stats.hits += hit as u64;
    }
}

#[cfg(test)]
#[path = "block_manager_tests.rs"]
mod tests;
