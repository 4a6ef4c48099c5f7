//! Building blocks of the forward pass: linear projections, RMSNorm, and RoPE tables.
//!
//! Owns: loading each block's weights by HF name and its forward arithmetic.
//! Must not: know about the KV cache, batching or sampling.

use candle_core::{DType, Device, Tensor};

use super::ModelError;
use crate::weights::Weights;

/// Where and how to load weights: the mapped files, run dtype and device.
pub struct LoadCtx<'a> {
    pub weights: &'a Weights,
    pub dtype: DType,
    pub device: &'a Device,
}

impl LoadCtx<'_> {
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        Ok(self.weights.get(name, shape, self.dtype, self.device)?)
    }
}

/// `y = x Wᵀ + b` with HF's `(out_features, in_features)` weight layout.
pub struct Linear {
    weight: Tensor,       // (out, in)
    bias: Option<Tensor>, // (out)
}

impl Linear {
    pub fn load(ctx: &LoadCtx, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear, ModelError> {
        let weight = ctx.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = match bias {
            true => Some(ctx.get(&format!("{prefix}.bias"), &[out_dim])?),
            false => None,
        };
        Ok(Linear { weight, bias })
    }

    /// Wrap an existing `(out, in)` matrix (tied embeddings).
    pub fn from_weight(weight: Tensor) -> Linear {
        Linear { weight, bias: None }
    }

    /// x: (tokens, in) → (tokens, out)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Root-mean-square normalisation over the last dimension, computed in f32.
pub struct RmsNorm {
    weight: Tensor, // (dim)
    eps: f32,
}

impl RmsNorm {
    pub fn load(ctx: &LoadCtx, name: &str, dim: usize, eps: f64) -> Result<RmsNorm, ModelError> {
        let weight = ctx.get(&format!("{name}.weight"), &[dim])?;
        Ok(RmsNorm {
            weight,
            eps: eps as f32,
        })
    }

    /// x: (..., dim) → (..., dim)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// RoPE inverse frequencies; cos/sin tables are built per step for the batch's positions,
/// so no table of `max_position_embeddings` rows is kept.
pub struct Rope {
    inv_freq: Vec<f32>, // (head_dim / 2)
}

impl Rope {
    pub fn new(inv_freq: Vec<f32>) -> Rope {
        Rope { inv_freq }
    }

    /// cos and sin for each position: two (tokens, head_dim / 2) tensors in `dtype`.
    pub fn cos_sin(&self, positions: &[u32], dtype: DType, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (positions.len(), half);
        let cos = Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Apply RoPE (HF rotate-half convention) to x: (tokens, heads, head_dim).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?.unsqueeze(0)?; // (1, tokens, heads, head_dim)
    candle_nn::rotary_emb::rope_thd(&x, cos, sin)?.squeeze(0)
}
