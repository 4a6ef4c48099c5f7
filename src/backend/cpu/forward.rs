//! The CPU backend's forward pass over a flattened `Batch`, in f32 activations, on packed
//! weights, with every intermediate in buffers that persist across steps.
//!
//! Reading order: embed → per layer (RMSNorm → fused QKV matmul → q/k norm → RoPE → KV write
//! → paged attention → O matmul added into the residual → RMSNorm → fused gate/up matmul →
//! SwiGLU → down matmul added into the residual) → final norm on the logit rows → lm_head.
//! Must not: allocate per step once buffers have grown, or sample.

use super::attention::{PagedKv, QkvView, StepSlots};
use super::isa::Isa;
use super::matmul::Scratch;
use super::model::{CpuModel, Layer};
use super::pool::{share, Pool, SyncPtr};
use super::profile::{Phase, Profile};
use super::CpuError;
use crate::batch::Batch;

/// Activations of one step; sized for the largest step seen so far.
#[derive(Default)]
pub struct Buffers {
    x: Vec<f32>,    // (tokens, hidden) residual stream
    xn: Vec<f32>,   // (tokens, hidden) normalised input of the next matmul
    qkv: Vec<f32>,  // (tokens, q_dim + 2 kv_dim)
    attn: Vec<f32>, // (tokens, q_dim)
    gu: Vec<f32>,   // (tokens, 2 intermediate): gate | up
    act: Vec<f32>,  // (tokens, intermediate)
    cos: Vec<f32>,  // (tokens, head_dim / 2)
    sin: Vec<f32>,  // (tokens, head_dim / 2)
    steps: StepSlots,
    scratch: Scratch,
    pub profile: Profile,
}

/// RMSNorm of each `dim`-row of x into out: x / sqrt(mean(x²) + eps) * w.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, orow) in x.chunks(dim).zip(out.chunks_mut(dim)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in orow.iter_mut().zip(xr).zip(w) {
            *o = v * r * g;
        }
    }
}

/// RMSNorm of one row in place.
fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter_mut().zip(w).for_each(|(v, g)| *v = *v * r * g);
}

fn add_bias(y: &mut [f32], bias: &Option<Vec<f32>>) {
    if let Some(b) = bias {
        for row in y.chunks_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(a, c)| *a += c);
        }
    }
}

/// HF rotate-half RoPE in place on `heads` heads of one token. x: (heads, head_dim)
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in x.chunks_mut(2 * half) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

impl Buffers {
    fn resize(&mut self, m: &CpuModel, t: usize) {
        let c = &m.cfg;
        let (h, qd, kvd) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        self.x.resize(t * h, 0.0);
        self.xn.resize(t * h, 0.0);
        self.qkv.resize(t * (qd + 2 * kvd), 0.0);
        self.attn.resize(t * qd, 0.0);
        self.gu.resize(t * 2 * c.intermediate_size, 0.0);
        self.act.resize(t * c.intermediate_size, 0.0);
        self.cos.resize(t * c.head_dim / 2, 0.0);
        self.sin.resize(t * c.head_dim / 2, 0.0);
    }

    /// cos/sin of every token's position (f32, as HF computes them).
    fn rope_tables(&mut self, positions: &[u32], inv_freq: &[f32]) {
        let half = inv_freq.len();
        for (t, &p) in positions.iter().enumerate() {
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = p as f32 * f;
                self.cos[t * half + i] = angle.cos();
                self.sin[t * half + i] = angle.sin();
            }
        }
    }
}

impl CpuModel {
    /// Run one step; writes f32 logits (rows, vocab) for `batch.logit_rows()` into `logits`.
    pub fn forward(
        &self,
        batch: &Batch,
        kv: &mut PagedKv,
        b: &mut Buffers,
        pool: &Pool,
        logits: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (t, h) = (batch.num_tokens(), self.cfg.hidden_size);
        b.resize(self, t);
        b.profile.start(t);
        b.rope_tables(&batch.positions, &self.inv_freq);
        b.steps.prepare(batch, kv.geometry().block_size);
        let embed = self.embedding();
        for (row, &id) in b.x.chunks_mut(h).zip(&batch.token_ids) {
            embed.row(id as usize, row)?;
        }
        b.profile.mark(Phase::Embed);
        for (i, layer) in self.layers.iter().enumerate() {
            self.attention_block(i, layer, batch, kv, b, pool);
            self.mlp_block(layer, t, b, pool);
        }
        let rows = batch.logit_rows();
        for (dst, &r) in rows.iter().enumerate() {
            let src = r as usize * h;
            let (x, xn) = (&b.x[src..src + h], &mut b.xn[dst * h..(dst + 1) * h]);
            rms_norm(x, &self.norm, self.cfg.rms_norm_eps as f32, xn);
        }
        let vocab = self.cfg.vocab_size;
        // The matmul overwrites every element, so a recycled buffer of the right size is used
        // as it is: no zeroing, and no page faults for a fresh allocation each step.
        logits.resize(rows.len() * vocab, 0.0);
        self.lm_head
            .matmul(&b.xn, rows.len(), logits, false, pool, &mut b.scratch);
        b.profile.mark(Phase::LmHead);
        Ok(())
    }

    /// x += o_proj(attention(rope(qkv_proj(rms_norm(x)))))
    fn attention_block(&self, i: usize, layer: &Layer, batch: &Batch, kv: &mut PagedKv, b: &mut Buffers, pool: &Pool) {
        let c = &self.cfg;
        let t = batch.num_tokens();
        let (hd, nh, nkv) = (c.head_dim, c.num_heads, c.num_kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let ld = qd + 2 * kvd;
        let eps = c.rms_norm_eps as f32;
        rms_norm(&b.x, &layer.input_norm, eps, &mut b.xn);
        b.profile.mark(Phase::Norm);
        layer.qkv.matmul(&b.xn, t, &mut b.qkv, false, pool, &mut b.scratch); // (t, q | k | v)
        add_bias(&mut b.qkv, &layer.qkv_bias);
        b.profile.mark(Phase::Qkv);
        let half = hd / 2;
        for (tok, row) in b.qkv.chunks_mut(ld).enumerate() {
            let (q, rest) = row.split_at_mut(qd);
            let k = &mut rest[..kvd];
            if let Some((qn, kn)) = &layer.qk_norm {
                q.chunks_mut(hd).for_each(|hq| rms_norm_in_place(hq, qn, eps));
                k.chunks_mut(hd).for_each(|hk| rms_norm_in_place(hk, kn, eps));
            }
            let (cos, sin) = (
                &b.cos[tok * half..(tok + 1) * half],
                &b.sin[tok * half..(tok + 1) * half],
            );
            rope(q, cos, sin);
            rope(k, cos, sin);
        }
        b.profile.mark(Phase::Rope);
        let view = QkvView {
            qkv: &b.qkv,
            ld,
            k_off: qd,
            v_off: qd + kvd,
        };
        kv.write(i, &b.steps, view);
        b.profile.mark(Phase::KvWrite);
        kv.attend(i, batch, &b.steps, view, nh, layer.window, &mut b.attn, pool);
        b.profile.mark(Phase::Attention);
        layer.o.matmul(&b.attn, t, &mut b.x, true, pool, &mut b.scratch);
        add_bias(&mut b.x, &layer.o_bias);
        b.profile.mark(Phase::OProj);
    }

    /// x += down(silu(gate(rms_norm(x))) * up(rms_norm(x)))
    fn mlp_block(&self, layer: &Layer, t: usize, b: &mut Buffers, pool: &Pool) {
        let inter = self.cfg.intermediate_size;
        rms_norm(&b.x, &layer.post_norm, self.cfg.rms_norm_eps as f32, &mut b.xn);
        b.profile.mark(Phase::Norm);
        layer.gate_up.matmul(&b.xn, t, &mut b.gu, false, pool, &mut b.scratch); // (t, gate | up)
        add_bias(&mut b.gu, &layer.gate_up_bias);
        b.profile.mark(Phase::GateUp);
        swiglu(&b.gu, &mut b.act, inter, pool);
        b.profile.mark(Phase::Swiglu);
        add_bias(&mut b.x, &layer.down_bias); // the matmul adds into x, so the bias goes first
        layer.down.matmul(&b.act, t, &mut b.x, true, pool, &mut b.scratch);
        b.profile.mark(Phase::Down);
    }
}

/// act = silu(gate) * up, row by row, split across the team. gu: (t, 2 inter) → act: (t, inter)
fn swiglu(gu: &[f32], act: &mut [f32], inter: usize, pool: &Pool) {
    let rows = act.len() / inter.max(1);
    let out = SyncPtr::new(act);
    pool.run(|tid, n| {
        let isa = Isa::get();
        let (lo, hi) = share(rows * inter, tid, n); // flat (row, column) indices
        let mut idx = lo;
        while idx < hi {
            let (r, c0) = (idx / inter, idx % inter);
            let c1 = inter.min(c0 + hi - idx);
            let row = &gu[r * 2 * inter..(r + 1) * 2 * inter];
            // SAFETY: each flat index is written by exactly one member.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(r * inter + c0), c1 - c0) };
            isa.swiglu(&row[c0..c1], &row[inter + c0..inter + c1], dst);
            idx += c1 - c0;
        }
    });
}
