//! CPU paged KV cache and the attention that reads it in place through block tables.
//!
//! Owns: per-layer K and V storage laid out `(num_blocks, kv_heads, block_size, head_dim)`,
//! the per-step slot mapping, and the attention kernel (f32 accumulation for every dtype).
//! Must not: allocate or free blocks (the block manager decides ids), or gather a sequence's
//! context into a contiguous copy: each query reads keys and values block by block.

use candle_core::{bail, DType, Device, Storage, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::batch::Batch;
use crate::model::KvAttention;

/// Element types the cache can hold; arithmetic happens in f32.
pub trait KvElem: WithDType + Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

impl KvElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl KvElem for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl KvElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// Shape of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGeometry {
    pub num_layers: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvGeometry {
    /// Elements of one layer's K (or V) storage.
    pub fn layer_elems(&self) -> usize {
        self.num_blocks * self.num_kv_heads * self.block_size * self.head_dim
    }
}

/// Per-token facts of the current step, computed once in `prepare`.
#[derive(Default)]
struct StepMeta {
    positions: Vec<u32>,   // (tokens)
    token_seq: Vec<u32>,   // (tokens) sequence index of each token
    slots: Vec<usize>,     // (tokens) block * block_size + offset of the token's own K/V
    tables: Vec<Vec<u32>>, // (seqs) block tables
}

pub struct CpuPagedKv<E: KvElem> {
    geo: KvGeometry,
    k: Vec<Vec<E>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
    v: Vec<Vec<E>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
    meta: StepMeta,
}

impl<E: KvElem> CpuPagedKv<E> {
    /// Allocate zeroed storage (pages are only touched, and so resident, once written).
    pub fn new(geo: KvGeometry) -> Self {
        let n = geo.layer_elems();
        let zero = E::from_f32(0.0);
        CpuPagedKv {
            geo,
            k: (0..geo.num_layers).map(|_| vec![zero; n]).collect(),
            v: (0..geo.num_layers).map(|_| vec![zero; n]).collect(),
            meta: StepMeta::default(),
        }
    }

    /// Index of (block, kv_head, offset, 0) in a layer's storage.
    fn at(&self, slot: usize, head: usize) -> usize {
        let g = &self.geo;
        let (block, off) = (slot / g.block_size, slot % g.block_size);
        ((block * g.num_kv_heads + head) * g.block_size + off) * g.head_dim
    }

    /// Store this step's keys and values at their slots. k, v: (tokens, kv_heads, head_dim)
    fn write(&mut self, layer: usize, k: &[E], v: &[E]) {
        let (nkv, hd) = (self.geo.num_kv_heads, self.geo.head_dim);
        for (t, &slot) in self.meta.slots.iter().enumerate() {
            for h in 0..nkv {
                let dst = self.at(slot, h);
                let src = (t * nkv + h) * hd;
                self.k[layer][dst..dst + hd].copy_from_slice(&k[src..src + hd]);
                self.v[layer][dst..dst + hd].copy_from_slice(&v[src..src + hd]);
            }
        }
    }

    /// Attention of one query head of token `t` over its sequence's cached positions, reading
    /// K/V head `head`. q: (head_dim) → out: (head_dim)
    fn attend_one(&self, layer: usize, t: usize, head: usize, q: &[E], window: Option<usize>, out: &mut [E]) {
        let g = &self.geo;
        let (hd, bs) = (g.head_dim, g.block_size);
        let pos = self.meta.positions[t] as usize;
        let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let table = &self.meta.tables[self.meta.token_seq[t] as usize];
        let scale = 1.0 / (hd as f32).sqrt();
        let qf: Vec<f32> = q.iter().map(|x| x.to_f32()).collect();
        let (kc, vc) = (&self.k[layer], &self.v[layer]);
        // scores[j - lo] = q · k_j / sqrt(head_dim)
        let mut scores: Vec<f32> = (lo..=pos)
            .map(|j| {
                let base = self.at(table[j / bs] as usize * bs + j % bs, head);
                let kj = &kc[base..base + hd];
                qf.iter().zip(kj).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale
            })
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut denom = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            denom += *s;
        }
        let mut acc = vec![0.0f32; hd];
        for (j, w) in (lo..=pos).zip(&scores) {
            let base = self.at(table[j / bs] as usize * bs + j % bs, head);
            for (a, x) in acc.iter_mut().zip(&vc[base..base + hd]) {
                *a += w * x.to_f32();
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = E::from_f32(a / denom);
        }
    }
}

/// Borrow a contiguous CPU tensor's elements and run `f` on them.
fn with_slice<E: KvElem, R>(t: &Tensor, f: impl FnOnce(&[E]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("CPU paged attention got a tensor on another device")
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        bail!("CPU paged attention needs contiguous tensors")
    };
    Ok(f(&cpu.as_slice::<E>()?[a..b]))
}

impl<E: KvElem> KvAttention for CpuPagedKv<E> {
    fn prepare(&mut self, batch: &Batch) -> candle_core::Result<()> {
        let m = &mut self.meta;
        m.positions.clone_from(&batch.positions);
        batch.fill_slots(self.geo.block_size, &mut m.slots, &mut m.token_seq);
        m.tables.clear();
        m.tables.extend(batch.seqs.iter().map(|s| s.block_table.clone()));
        Ok(())
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        window: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let (t, nh, hd) = q.dims3()?; // (tokens, heads, head_dim)
        if t != self.meta.slots.len() || hd != self.geo.head_dim {
            bail!("attention input {:?} does not match the prepared step", q.shape())
        }
        with_slice::<E, _>(k, |k| with_slice::<E, _>(v, |v| self.write(layer, k, v)))??;
        let group = nh / self.geo.num_kv_heads;
        let mut out = vec![E::from_f32(0.0); t * nh * hd];
        let this = &*self;
        with_slice::<E, _>(&q.contiguous()?, |q| {
            out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
                let (tok, head) = (i / nh, i % nh);
                this.attend_one(layer, tok, head / group, &q[i * hd..(i + 1) * hd], window, o);
            })
        })?;
        Tensor::from_vec(out, (t, nh * hd), &Device::Cpu)
    }
}

/// Build a cache of the model's dtype.
pub fn new_cpu_kv(geo: KvGeometry, dtype: DType) -> candle_core::Result<Box<dyn KvAttention + Send>> {
    Ok(match dtype {
        DType::F32 => Box::new(CpuPagedKv::<f32>::new(geo)),
        DType::BF16 => Box::new(CpuPagedKv::<bf16>::new(geo)),
        DType::F16 => Box::new(CpuPagedKv::<f16>::new(geo)),
        other => bail!("unsupported KV cache dtype {other:?}"),
    })
}
