//! The CPU backend's paged KV cache and the attention that reads it in place.
//!
//! Owns: per-layer f32 K/V storage — keys transposed within a block,
//! `(num_blocks, kv_heads, head_dim, block_size)`, so 16 keys' scores are one vector FMA chain;
//! values `(num_blocks, kv_heads, block_size, head_dim)` — the per-step slot map, writing this
//! step's K/V, and attention over the block tables with all query heads of one KV head handled
//! together (each cached row is read once per group).
//! Must not: allocate per step (scratch grows once per thread), gather a sequence's context
//! into a copy, or decide block ids.

use std::cell::RefCell;

use super::pool::{share, Pool, SyncPtr};
use crate::backend::KvGeometry;
use crate::batch::Batch;

use super::buffer::WeightBuf;
use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::kernels::x86_attn;

/// Per-token facts of the current step.
#[derive(Default)]
pub struct StepSlots {
    slots: Vec<usize>, // (tokens) block * block_size + offset
    seq: Vec<u32>,     // (tokens) sequence index
}

impl StepSlots {
    pub fn prepare(&mut self, batch: &Batch, block_size: usize) {
        batch.fill_slots(block_size, &mut self.slots, &mut self.seq);
    }
}

/// Where this step's activations are: token `t`'s q heads start at `qkv[t * ld]`, its K heads
/// at `qkv[t * ld + k_off]`, its V heads at `qkv[t * ld + v_off]`.
#[derive(Clone, Copy)]
pub struct QkvView<'a> {
    pub qkv: &'a [f32],
    pub ld: usize,
    pub k_off: usize,
    pub v_off: usize,
}

pub struct PagedKv {
    geo: KvGeometry,
    k: Vec<WeightBuf<f32>>, // per layer: (num_blocks, kv_heads, head_dim, block_size)
    v: Vec<WeightBuf<f32>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
}

/// Per-thread attention scratch: scaled queries, scores and accumulators of one item.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,      // (group, head_dim)
    scores: Vec<f32>, // (group, span)
    acc: Vec<f32>,    // (group, head_dim)
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One (token, KV head) work item's view of the cache.
struct Item<'a> {
    table: &'a [u32],
    kvh: usize,
    lo: usize,  // first attended position
    pos: usize, // last attended position (the token's own)
}

impl PagedKv {
    /// Zeroed storage; pages become resident when first written (a cache sized for many
    /// sequences costs memory only as it fills; the first write to a page faults once).
    pub fn new(geo: KvGeometry) -> std::io::Result<Self> {
        let n = geo.layer_elems();
        let layer = |_| WeightBuf::zeroed(n);
        Ok(PagedKv {
            geo,
            k: (0..geo.num_layers).map(layer).collect::<Result<_, _>>()?,
            v: (0..geo.num_layers).map(layer).collect::<Result<_, _>>()?,
        })
    }

    pub fn geometry(&self) -> KvGeometry {
        self.geo
    }

    /// Offset of (block, kv_head)'s K (or V) tile in a layer's storage.
    fn tile(&self, block: usize, head: usize) -> usize {
        let g = &self.geo;
        (block * g.num_kv_heads + head) * g.block_size * g.head_dim
    }

    /// Store each token's K and V heads at its slot.
    pub fn write(&mut self, layer: usize, steps: &StepSlots, x: QkvView) {
        let (nkv, hd, bs) = (self.geo.num_kv_heads, self.geo.head_dim, self.geo.block_size);
        for (t, &slot) in steps.slots.iter().enumerate() {
            let (block, off) = (slot / bs, slot % bs);
            for h in 0..nkv {
                let base = self.tile(block, h);
                let k = &x.qkv[t * x.ld + x.k_off + h * hd..][..hd];
                let v = &x.qkv[t * x.ld + x.v_off + h * hd..][..hd];
                for (d, &kv) in k.iter().enumerate() {
                    self.k[layer][base + d * bs + off] = kv;
                }
                self.v[layer][base + off * hd..base + (off + 1) * hd].copy_from_slice(v);
            }
        }
    }

    /// Causal attention of every token over its sequence's cache (after `write`).
    /// out: (tokens, heads * head_dim)
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        layer: usize,
        batch: &Batch,
        steps: &StepSlots,
        x: QkvView,
        heads: usize,
        window: Option<usize>,
        out: &mut [f32],
        pool: &Pool,
    ) {
        let (nkv, hd) = (self.geo.num_kv_heads, self.geo.head_dim);
        let group = heads / nkv;
        // Query heads per work item: a whole KV group (K/V read once for all of them) unless
        // that leaves too few items to keep the team busy (batch-1 decode), then one head.
        let per = if steps.slots.len() * nkv >= 4 * pool.size() {
            group
        } else {
            1
        };
        let parts = group / per;
        let items = steps.slots.len() * nkv * parts;
        assert!(
            out.len() >= batch.positions.len() * heads * hd,
            "attention output too small"
        );
        let out = SyncPtr::new(out);
        pool.run(|tid, n| {
            let (lo, hi) = share(items, tid, n);
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                for i in lo..hi {
                    let (t, kvh, part) = (i / (nkv * parts), i / parts % nkv, i % parts);
                    let pos = batch.positions[t] as usize;
                    let item = Item {
                        table: &batch.seqs[steps.seq[t] as usize].block_table,
                        kvh,
                        lo: window.map_or(0, |w| (pos + 1).saturating_sub(w)),
                        pos,
                    };
                    let col = (kvh * group + part * per) * hd; // first query head's column
                    let q = &x.qkv[t * x.ld + col..][..per * hd];
                    // SAFETY: item (t, kvh, part) owns columns [col, col + per * hd) of row t.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(t * heads * hd + col), per * hd) };
                    self.attend_item(layer, &item, q, per, s, dst);
                }
            })
        });
    }

    /// softmax(q Kᵀ / sqrt(d)) V for the `group` query heads of one item. q, dst: (group, head_dim)
    fn attend_item(&self, layer: usize, it: &Item, q: &[f32], group: usize, s: &mut Scratch, dst: &mut [f32]) {
        let (hd, bs) = (self.geo.head_dim, self.geo.block_size);
        let base = it.lo / bs * bs; // scores start at the first block's first slot
        let w = Span {
            group,
            base,
            span: (it.pos / bs + 1) * bs - base, // (block-aligned) positions scored
            simd: Isa::get().avx512() && hd % 16 == 0 && bs % 16 == 0,
        };
        let scale = 1.0 / (hd as f32).sqrt();
        s.q.clear();
        s.q.extend(q.iter().map(|v| v * scale));
        s.scores.resize(group * w.span, 0.0);
        s.acc.clear();
        s.acc.resize(group * hd, 0.0);
        self.scores(layer, it, &w, s);
        let (first, len) = (it.lo - base, it.pos + 1 - it.lo);
        for g in 0..group {
            let row = &mut s.scores[g * w.span + first..g * w.span + first + len];
            match w.simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `simd` implies AVX-512 F (`Isa`); softmax stays inside `row`.
                true => unsafe { x86_attn::softmax(row) },
                _ => softmax_scalar(row),
            }
        }
        self.weighted_values(layer, it, &w, s);
        dst.copy_from_slice(&s.acc);
    }

    /// scores (group, span) = q Kᵀ, block by block of the item's window.
    fn scores(&self, layer: usize, it: &Item, w: &Span, s: &mut Scratch) {
        let (hd, bs) = (self.geo.head_dim, self.geo.block_size);
        let (kc, group, span) = (&self.k[layer], w.group, w.span);
        for b in it.lo / bs..=it.pos / bs {
            let tile = self.tile(it.table[b] as usize, it.kvh);
            let kt = &kc[tile..tile + hd * bs];
            let sc = b * bs - w.base;
            match w.simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `simd` implies AVX-512 F (`Isa`); the key tile is sliced to its
                // (head_dim, block_size) extent, and the scores block at `sc` spans `bs`
                // columns of `group` rows `span` apart, inside `s.scores` (group * span)
                // because a block never ends past `span` (checked).
                true => unsafe {
                    assert!(sc + bs <= span, "score block outside the window");
                    x86_attn::scores_block(&s.q, group, hd, kt.as_ptr(), bs, s.scores[sc..].as_mut_ptr(), span)
                },
                _ => scores_block_scalar(&s.q, group, hd, kt, bs, &mut s.scores[sc..], span),
            }
        }
    }

    /// acc (group, head_dim) = P V over the item's window.
    fn weighted_values(&self, layer: usize, it: &Item, w: &Span, s: &mut Scratch) {
        let (hd, bs) = (self.geo.head_dim, self.geo.block_size);
        let (vc, group, span) = (&self.v[layer], w.group, w.span);
        for b in it.lo / bs..=it.pos / bs {
            let tile = self.tile(it.table[b] as usize, it.kvh);
            let j0 = (b * bs).max(it.lo);
            let j1 = ((b + 1) * bs).min(it.pos + 1);
            let v = &vc[tile + (j0 - b * bs) * hd..tile + (j1 - b * bs) * hd];
            let p = &s.scores[j0 - w.base..];
            match w.simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `simd` implies AVX-512 F (`Isa`); `v` holds (j1 - j0, hd) values, `p`
                // has `group` rows `span` apart of at least `j1 - j0` probabilities, and `acc`
                // is (group, hd) (both checked).
                true => unsafe {
                    assert!(j0 - w.base + (j1 - j0) <= span && s.acc.len() >= group * hd);
                    x86_attn::values_block(v.as_ptr(), j1 - j0, hd, p.as_ptr(), span, group, &mut s.acc)
                },
                _ => values_block_scalar(v, j1 - j0, hd, p, span, group, &mut s.acc, Isa::get()),
            }
        }
    }
}

/// Where one item's scores live: `group` rows of `span` block-aligned positions from `base`.
struct Span {
    group: usize,
    base: usize,
    span: usize,
    simd: bool,
}

fn scores_block_scalar(q: &[f32], group: usize, hd: usize, kt: &[f32], bs: usize, scores: &mut [f32], ld: usize) {
    for g in 0..group {
        for c in 0..bs {
            scores[g * ld + c] = (0..hd).map(|d| q[g * hd + d] * kt[d * bs + c]).sum();
        }
    }
}

fn softmax_scalar(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut denom = 0.0;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        denom += *v;
    }
    s.iter_mut().for_each(|v| *v /= denom);
}

#[allow(clippy::too_many_arguments)]
fn values_block_scalar(
    v: &[f32],
    rows: usize,
    hd: usize,
    p: &[f32],
    ld: usize,
    group: usize,
    acc: &mut [f32],
    isa: Isa,
) {
    for j in 0..rows {
        for g in 0..group {
            isa.axpy(p[g * ld + j], &v[j * hd..(j + 1) * hd], &mut acc[g * hd..(g + 1) * hd]);
        }
    }
}
