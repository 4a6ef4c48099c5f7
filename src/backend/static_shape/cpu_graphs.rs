//! The static-shape graphs evaluated on CPU: what a compiled Neuron model computes, run with
//! the candle forward pass over a fixed slot-per-sequence KV cache.
//!
//! Owns: the KV cache laid out `(max_batch, kv_heads, max_len, head_dim)` per layer (f32),
//! and attention over a whole bucket of KV positions under the executor's mask (plus the
//! layer's sliding window, which a compiled graph applies itself).
//! Must not: pick buckets or slots (the executor does) or look at block tables.

use candle_core::{bail, DType, Device, Tensor};
use rayon::prelude::*;

use super::{BucketPlan, ContextInputs, StaticGraphs, TokenInputs, MASK_MIN};
use crate::backend::BackendError;
use crate::batch::{Batch, LogitsWanted};
use crate::config::Config;
use crate::model::{KvAttention, Model};

/// K/V of every slot, and the rows of the call in flight.
struct SlotKv {
    max_len: usize,
    kv_heads: usize,
    head_dim: usize,
    k: Vec<Vec<f32>>,          // per layer: (max_batch, kv_heads, max_len, head_dim)
    v: Vec<Vec<f32>>,          // per layer: (max_batch, kv_heads, max_len, head_dim)
    rows: Vec<(usize, usize)>, // (rows) slot and position of each query row
    kv_len: usize,             // KV positions attended (the bucket)
    mask: Vec<f32>,            // (rows, kv_len)
}

impl SlotKv {
    /// Index of (slot, head, pos, 0) in a layer's storage.
    fn at(&self, slot: usize, head: usize, pos: usize) -> usize {
        ((slot * self.kv_heads + head) * self.max_len + pos) * self.head_dim
    }

    /// Store the rows' K/V at their (slot, position). k, v: (rows, kv_heads, head_dim)
    fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (nkv, hd) = (self.kv_heads, self.head_dim);
        for (r, &(slot, pos)) in self.rows.iter().enumerate() {
            for h in 0..nkv {
                let (dst, src) = (self.at(slot, h, pos), (r * nkv + h) * hd);
                self.k[layer][dst..dst + hd].copy_from_slice(&k[src..src + hd]);
                self.v[layer][dst..dst + hd].copy_from_slice(&v[src..src + hd]);
            }
        }
    }

    /// One query head of row `r` over the bucket's KV positions. q: (head_dim) → out
    fn attend_one(&self, layer: usize, r: usize, head: usize, q: &[f32], window: Option<usize>, out: &mut [f32]) {
        let (slot, pos) = self.rows[r];
        let (hd, n) = (self.head_dim, self.kv_len);
        let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let scale = 1.0 / (hd as f32).sqrt();
        let base = self.at(slot, head, 0);
        let (kc, vc) = (&self.k[layer][base..base + n * hd], &self.v[layer][base..base + n * hd]);
        // scores[j] = q · k_j / sqrt(head_dim) + mask[r, j]   (j < lo: outside the window)
        let mut scores: Vec<f32> = (0..n)
            .map(|j| {
                let dot: f32 = q.iter().zip(&kc[j * hd..(j + 1) * hd]).map(|(a, b)| a * b).sum();
                let m = if j < lo { MASK_MIN } else { self.mask[r * n + j] };
                dot * scale + m
            })
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut denom = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            denom += *s;
        }
        out.fill(0.0);
        for (j, w) in scores.iter().enumerate() {
            for (o, x) in out.iter_mut().zip(&vc[j * hd..(j + 1) * hd]) {
                *o += w * x;
            }
        }
        out.iter_mut().for_each(|o| *o /= denom);
    }
}

fn f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl KvAttention for SlotKv {
    fn prepare(&mut self, batch: &Batch) -> candle_core::Result<()> {
        if batch.num_tokens() != self.rows.len() {
            bail!(
                "static graph got {} tokens for {} rows",
                batch.num_tokens(),
                self.rows.len()
            )
        }
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
        let (t, nh, hd) = q.dims3()?; // (rows, heads, head_dim)
        self.write(layer, &f32_vec(k)?, &f32_vec(v)?);
        let (qf, group) = (f32_vec(q)?, nh / self.kv_heads);
        let mut out = vec![0.0f32; t * nh * hd]; // (rows, heads, head_dim)
        let this = &*self;
        out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
            let (r, h) = (i / nh, i % nh);
            this.attend_one(layer, r, h / group, &qf[i * hd..(i + 1) * hd], window, o);
        });
        Tensor::from_vec(out, (t, nh * hd), &Device::Cpu)?.to_dtype(q.dtype())
    }
}

/// The model's context-encoding and token-generation graphs, on CPU.
pub struct CpuGraphs {
    model: Model,
    plan: BucketPlan,
    kv: SlotKv,
}

impl CpuGraphs {
    pub fn new(model: Model, plan: BucketPlan) -> Self {
        let cfg = model.config();
        let n = plan.max_batch * cfg.num_kv_heads * plan.max_len * cfg.head_dim;
        let kv = SlotKv {
            max_len: plan.max_len,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            k: vec![vec![0.0; n]; cfg.num_layers],
            v: vec![vec![0.0; n]; cfg.num_layers],
            rows: Vec::new(),
            kv_len: 0,
            mask: Vec::new(),
        };
        CpuGraphs { model, plan, kv }
    }

    /// Run the model over `batch` (its rows set up in `self.kv`). → logits (rows, vocab)
    fn run(&mut self, batch: &Batch) -> Result<Vec<f32>, BackendError> {
        let logits = self.model.forward(batch, &mut self.kv)?; // (rows, vocab)
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

impl StaticGraphs for CpuGraphs {
    fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    fn config(&self) -> &Config {
        self.model.config()
    }

    fn reset_slot(&mut self, slot: usize) -> Result<(), BackendError> {
        let per_slot = self.kv.kv_heads * self.kv.max_len * self.kv.head_dim;
        for layer in self.kv.k.iter_mut().chain(self.kv.v.iter_mut()) {
            layer[slot * per_slot..(slot + 1) * per_slot].fill(0.0);
        }
        Ok(())
    }

    fn run_context(&mut self, inp: &ContextInputs) -> Result<Vec<f32>, BackendError> {
        let bucket = inp.bucket();
        self.kv.rows = inp.position_ids.iter().map(|&p| (inp.slot, p as usize)).collect();
        self.kv.kv_len = bucket;
        self.kv.mask.clone_from(&inp.mask);
        let mut batch = Batch::default();
        batch.push(&inp.input_ids, 0, Vec::new(), LogitsWanted::All);
        self.run(&batch)
    }

    fn run_token(&mut self, inp: &TokenInputs) -> Result<Vec<f32>, BackendError> {
        self.kv.rows = inp
            .position_ids
            .iter()
            .enumerate()
            .map(|(s, &p)| (s, p as usize))
            .collect();
        self.kv.kv_len = inp.bucket;
        self.kv.mask.clone_from(&inp.mask);
        let mut batch = Batch::default();
        for (&id, &pos) in inp.input_ids.iter().zip(&inp.position_ids) {
            batch.push(&[id], pos as usize, Vec::new(), LogitsWanted::Last);
        }
        self.run(&batch)
    }

    fn describe(&self) -> String {
        format!("cpu ({:?})", self.model.dtype())
    }
}
