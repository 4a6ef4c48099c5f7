//! The CPU backend's paged KV cache and the attention that reads it in place.
//!
//! Owns: per-layer K/V storage `(num_blocks, kv_heads, block_size, head_dim)` in the run dtype,
//! the per-step slot map, writing this step's K/V, and attention over the block tables with
//! all query heads of one KV head handled together (each cached row is read once per group).
//! Must not: allocate per step (scratch grows once per thread), gather a sequence's context
//! into a copy, or decide block ids.

use std::cell::RefCell;

use super::pool::{share, Pool};
use crate::backend::{KvElem, KvGeometry};
use crate::batch::Batch;

use super::isa::Isa;

/// Per-token facts of the current step.
#[derive(Default)]
pub struct StepSlots {
    slots: Vec<usize>, // (tokens) block * block_size + offset
    seq: Vec<u32>,     // (tokens) sequence index
}

impl StepSlots {
    pub fn prepare(&mut self, batch: &Batch, block_size: usize) {
        self.slots.clear();
        self.seq.clear();
        let mut t = 0;
        for (s, entry) in batch.seqs.iter().enumerate() {
            for _ in 0..entry.num_tokens {
                let pos = batch.positions[t] as usize;
                self.slots
                    .push(entry.block_table[pos / block_size] as usize * block_size + pos % block_size);
                self.seq.push(s as u32);
                t += 1;
            }
        }
    }
}

pub struct PagedKv<E: KvElem> {
    geo: KvGeometry,
    k: Vec<Vec<E>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
    v: Vec<Vec<E>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
}

thread_local! {
    /// (scores, accumulators, row conversion) of the attention on this thread.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
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

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

impl<E: KvElem> PagedKv<E> {
    /// Zeroed storage: pages become resident only when written.
    pub fn new(geo: KvGeometry) -> Self {
        let n = geo.layer_elems();
        PagedKv {
            geo,
            k: (0..geo.num_layers).map(|_| vec![E::from_f32(0.0); n]).collect(),
            v: (0..geo.num_layers).map(|_| vec![E::from_f32(0.0); n]).collect(),
        }
    }

    pub fn geometry(&self) -> KvGeometry {
        self.geo
    }

    /// Offset of row (slot, kv_head) in a layer's storage.
    fn at(&self, slot: usize, head: usize) -> usize {
        let g = &self.geo;
        let (block, off) = (slot / g.block_size, slot % g.block_size);
        ((block * g.num_kv_heads + head) * g.block_size + off) * g.head_dim
    }

    /// Store each token's K and V heads at its slot.
    pub fn write(&mut self, layer: usize, steps: &StepSlots, x: QkvView) {
        let (nkv, hd) = (self.geo.num_kv_heads, self.geo.head_dim);
        for (t, &slot) in steps.slots.iter().enumerate() {
            for h in 0..nkv {
                let dst = self.at(slot, h);
                let k = &x.qkv[t * x.ld + x.k_off + h * hd..][..hd];
                let v = &x.qkv[t * x.ld + x.v_off + h * hd..][..hd];
                for (d, s) in self.k[layer][dst..dst + hd].iter_mut().zip(k) {
                    *d = E::from_f32(*s);
                }
                for (d, s) in self.v[layer][dst..dst + hd].iter_mut().zip(v) {
                    *d = E::from_f32(*s);
                }
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
        let nkv = self.geo.num_kv_heads;
        let items = steps.slots.len() * nkv;
        let out = OutPtr(out.as_mut_ptr());
        pool.run(|tid, n| {
            let (lo, hi) = share(items, tid, n);
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                for item in lo..hi {
                    let (t, kvh) = (item / nkv, item % nkv);
                    // SAFETY: item (t, kvh) writes only its own heads' columns of row t.
                    self.attend_group(layer, batch, steps, x, heads, window, t, kvh, out, s);
                }
            })
        });
    }

    /// The `heads / kv_heads` query heads of token `t` that share KV head `kvh`.
    #[allow(clippy::too_many_arguments)]
    fn attend_group(
        &self,
        layer: usize,
        batch: &Batch,
        steps: &StepSlots,
        x: QkvView,
        heads: usize,
        window: Option<usize>,
        t: usize,
        kvh: usize,
        out: OutPtr,
        (scores, acc, row): &mut (Vec<f32>, Vec<f32>, Vec<f32>),
    ) {
        let isa = Isa::get();
        let g = &self.geo;
        let (hd, bs, group) = (g.head_dim, g.block_size, heads / g.num_kv_heads);
        let pos = batch.positions[t] as usize;
        let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let len = pos + 1 - lo;
        let table = &batch.seqs[steps.seq[t] as usize].block_table;
        let scale = 1.0 / (hd as f32).sqrt();
        scores.resize(group * len, 0.0); // (group, len)
        acc.clear();
        acc.resize(group * hd, 0.0); // (group, head_dim)
        row.resize(hd, 0.0);
        let q = |gi: usize| &x.qkv[t * x.ld + (kvh * group + gi) * hd..][..hd];
        let (kc, vc) = (&self.k[layer], &self.v[layer]);
        let rows = |j: usize| self.at(table[j / bs] as usize * bs + j % bs, kvh);
        for j in lo..=pos {
            let kj = E::as_f32(&kc[rows(j)..rows(j) + hd], row);
            for gi in 0..group {
                scores[gi * len + j - lo] = isa.dot(q(gi), kj) * scale;
            }
        }
        for sc in scores.chunks_mut(len) {
            let max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut denom = 0.0;
            for s in sc.iter_mut() {
                *s = (*s - max).exp();
                denom += *s;
            }
            sc.iter_mut().for_each(|s| *s /= denom);
        }
        for j in lo..=pos {
            let vj = E::as_f32(&vc[rows(j)..rows(j) + hd], row);
            for gi in 0..group {
                isa.axpy(scores[gi * len + j - lo], vj, &mut acc[gi * hd..(gi + 1) * hd]);
            }
        }
        let ld = heads * hd;
        // SAFETY: this (t, kvh) item owns columns [kvh * group * hd, (kvh + 1) * group * hd).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(t * ld + kvh * group * hd), group * hd) };
        dst.copy_from_slice(acc);
    }
}
