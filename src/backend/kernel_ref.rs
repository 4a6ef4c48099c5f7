//! CPU references of our accelerator kernels (`kernels/*.cu`): the same arguments, the same
//! layouts, the plainest correct arithmetic. Always compiled, so CI tests them against the
//! CPU paged cache; the CUDA tests (`tests/cuda.rs`, on a GPU) test each kernel against
//! these.
//!
//! Owns: `write_kv` (kernels/kv_cache.cu) and `paged_attention` (kernels/paged_attention.cu).
//! Must not: be used on a hot path.

/// Shapes shared by both kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Columns of the flattened block-table matrix.
    pub max_blocks: usize,
}

impl PagedDims {
    /// Index of (block, kv_head, offset, 0) in a cache laid out
    /// (num_blocks, kv_heads, block_size, head_dim).
    fn at(&self, block: usize, head: usize, off: usize) -> usize {
        ((block * self.kv_heads + head) * self.block_size + off) * self.head_dim
    }
}

/// `write_kv_f32`: token t's K/V rows go to slot `slots[t]`.
/// k, v: (tokens, kv_heads, head_dim); caches: (num_blocks, kv_heads, block_size, head_dim)
pub fn write_kv(k_cache: &mut [f32], v_cache: &mut [f32], k: &[f32], v: &[f32], slots: &[u32], d: PagedDims) {
    let row = d.kv_heads * d.head_dim;
    for (t, &slot) in slots.iter().enumerate() {
        let (block, off) = (slot as usize / d.block_size, slot as usize % d.block_size);
        for h in 0..d.kv_heads {
            let dst = d.at(block, h, off);
            let src = t * row + h * d.head_dim;
            k_cache[dst..dst + d.head_dim].copy_from_slice(&k[src..src + d.head_dim]);
            v_cache[dst..dst + d.head_dim].copy_from_slice(&v[src..src + d.head_dim]);
        }
    }
}

/// The per-step inputs of `paged_attention`.
pub struct PagedStep<'a> {
    pub block_tables: &'a [u32], // (seqs, max_blocks)
    pub positions: &'a [u32],    // (tokens)
    pub token_seq: &'a [u32],    // (tokens)
    /// Sliding window of the layer (0: none).
    pub window: usize,
}

/// `paged_attention_f32`: each token attends to positions [lo, pos] of its sequence.
/// q: (tokens, heads, head_dim) → out: (tokens, heads, head_dim)
pub fn paged_attention(out: &mut [f32], q: &[f32], k_cache: &[f32], v_cache: &[f32], step: &PagedStep, d: PagedDims) {
    let (hd, group) = (d.head_dim, d.heads / d.kv_heads);
    let scale = 1.0 / (hd as f32).sqrt();
    for (t, (&pos, &seq)) in step.positions.iter().zip(step.token_seq).enumerate() {
        let (pos, table) = (pos as usize, &step.block_tables[seq as usize * d.max_blocks..]);
        let lo = if step.window > 0 {
            (pos + 1).saturating_sub(step.window)
        } else {
            0
        };
        let row = |cache: &[f32], j: usize, kvh: usize| {
            let at = d.at(table[j / d.block_size] as usize, kvh, j % d.block_size);
            cache[at..at + hd].to_vec()
        };
        for h in 0..d.heads {
            let qh = &q[(t * d.heads + h) * hd..][..hd];
            let scores: Vec<f32> = (lo..=pos)
                .map(|j| {
                    row(k_cache, j, h / group)
                        .iter()
                        .zip(qh)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let denom: f32 = weights.iter().sum();
            let o = &mut out[(t * d.heads + h) * hd..][..hd];
            o.fill(0.0);
            for (j, w) in (lo..=pos).zip(&weights) {
                for (x, vj) in o.iter_mut().zip(row(v_cache, j, h / group)) {
                    *x += w / denom * vj;
                }
            }
        }
    }
}
