//! The one forward pass shared by every supported family (llama, mistral, qwen2, qwen3).
//!
//! Owns: the decoder weights (loaded by their Hugging Face names) and the arithmetic of a step
//! over a flattened `Batch` of many sequences. Family differences are flags in `Config`
//! (q/k/v bias, q/k norm, sliding windows, tied embeddings), never a second forward pass.
//! Must not: own the KV cache (the backend does, behind `KvAttention`), sample, or contain
//! `#[cfg(feature)]` switches.

pub mod layers;

use candle_core::{DType, Device, Tensor};

use crate::batch::Batch;
use crate::config::Config;
use crate::weights::{Weights, WeightsError};
use layers::{apply_rope, Linear, LoadCtx, RmsNorm, Rope};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Attention over a KV cache the backend owns. The model hands it this step's q/k/v; the
/// implementation stores k/v at the batch's slots and attends through the block tables.
pub trait KvAttention {
    /// Called once per step before any layer, with the batch about to run.
    fn prepare(&mut self, batch: &Batch) -> candle_core::Result<()>;

    /// q: (tokens, heads, head_dim); k, v: (tokens, kv_heads, head_dim)
    /// → (tokens, heads * head_dim). `window`: sliding window of this layer, if any.
    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        window: Option<usize>,
    ) -> candle_core::Result<Tensor>;
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
    window: Option<usize>,
}

pub struct Model {
    embed_tokens: Tensor, // (vocab, hidden)
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl Attention {
    fn load(ctx: &LoadCtx, p: &str, cfg: &Config) -> Result<Attention, ModelError> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let qk_norm = |name: &str| -> Result<Option<RmsNorm>, ModelError> {
            match cfg.qk_norm {
                true => Ok(Some(RmsNorm::load(ctx, &format!("{p}.{name}"), hd, cfg.rms_norm_eps)?)),
                false => Ok(None),
            }
        };
        Ok(Attention {
            q_proj: Linear::load(ctx, &format!("{p}.q_proj"), h, q_dim, cfg.qkv_bias)?,
            k_proj: Linear::load(ctx, &format!("{p}.k_proj"), h, kv_dim, cfg.qkv_bias)?,
            v_proj: Linear::load(ctx, &format!("{p}.v_proj"), h, kv_dim, cfg.qkv_bias)?,
            o_proj: Linear::load(ctx, &format!("{p}.o_proj"), q_dim, h, cfg.o_bias)?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
        })
    }
}

impl Mlp {
    fn load(ctx: &LoadCtx, p: &str, cfg: &Config) -> Result<Mlp, ModelError> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::load(ctx, &format!("{p}.gate_proj"), h, i, b)?,
            up_proj: Linear::load(ctx, &format!("{p}.up_proj"), h, i, b)?,
            down_proj: Linear::load(ctx, &format!("{p}.down_proj"), i, h, b)?,
        })
    }

    /// x: (tokens, hidden) → (tokens, hidden)
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?; // (tokens, intermediate)
        let up = self.up_proj.forward(x)?; // (tokens, intermediate)
        self.down_proj.forward(&(gate * up)?)
    }
}

impl DecoderLayer {
    fn load(ctx: &LoadCtx, i: usize, cfg: &Config) -> Result<DecoderLayer, ModelError> {
        let p = format!("model.layers.{i}");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::load(ctx, &format!("{p}.input_layernorm"), h, eps)?,
            self_attn: Attention::load(ctx, &format!("{p}.self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::load(ctx, &format!("{p}.post_attention_layernorm"), h, eps)?,
            mlp: Mlp::load(ctx, &format!("{p}.mlp"), cfg)?,
            window: cfg.sliding_window[i],
        })
    }

    /// x: (tokens, hidden) → (tokens, hidden)
    fn forward(
        &self,
        i: usize,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        kv: &mut dyn KvAttention,
        cfg: &Config,
    ) -> candle_core::Result<Tensor> {
        let a = &self.self_attn;
        let t = x.dim(0)?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let h = self.input_layernorm.forward(x)?; // (tokens, hidden)
        let mut q = a.q_proj.forward(&h)?.reshape((t, nh, hd))?; // (tokens, heads, head_dim)
        let mut k = a.k_proj.forward(&h)?.reshape((t, nkv, hd))?; // (tokens, kv_heads, head_dim)
        let v = a.v_proj.forward(&h)?.reshape((t, nkv, hd))?; // (tokens, kv_heads, head_dim)
        if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let q = apply_rope(&q, &rope.0, &rope.1)?;
        let k = apply_rope(&k, &rope.0, &rope.1)?;
        let attn = kv.attend(i, &q, &k, &v.contiguous()?, self.window)?; // (tokens, heads * head_dim)
        let x = (x + a.o_proj.forward(&attn)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        x + self.mlp.forward(&h)?
    }
}

impl Model {
    /// Load every tensor by its HF name, checking shapes against `cfg`.
    pub fn load(weights: &Weights, cfg: &Config, dtype: DType, device: &Device) -> Result<Model, ModelError> {
        let ctx = LoadCtx { weights, dtype, device };
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = ctx.get("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..cfg.num_layers)
            .map(|i| DecoderLayer::load(&ctx, i, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = RmsNorm::load(&ctx, "model.norm", h, cfg.rms_norm_eps)?;
        let lm_head = match cfg.tie_word_embeddings {
            true => Linear::from_weight(embed_tokens.clone()),
            false => Linear::load(&ctx, "lm_head", h, v, false)?,
        };
        Ok(Model {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rope::new(cfg.rope_inv_freq()),
            cfg: cfg.clone(),
            dtype,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Run one step. Returns f32 logits (rows, vocab), one row per `batch.logit_rows()` entry.
    pub fn forward(&self, batch: &Batch, kv: &mut dyn KvAttention) -> candle_core::Result<Tensor> {
        let t = batch.num_tokens();
        let ids = Tensor::from_slice(&batch.token_ids, t, &self.device)?; // (tokens)
        let rope = self.rope.cos_sin(&batch.positions, self.dtype, &self.device)?; // 2 × (tokens, head_dim/2)
        kv.prepare(batch)?;
        let mut x = self.embed_tokens.index_select(&ids, 0)?; // (tokens, hidden)
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(i, &x, &rope, kv, &self.cfg)?;
        }
        let rows = batch.logit_rows();
        if rows.is_empty() {
            // A step of prompt chunks only. No zero-length device tensors: CUDA refuses a
            // zero-byte allocation (CUDA_ERROR_INVALID_VALUE).
            return Tensor::zeros((0, self.cfg.vocab_size), DType::F32, &Device::Cpu);
        }
        let rows = Tensor::from_slice(&rows, rows.len(), &self.device)?; // (rows)
        let x = x.index_select(&rows, 0)?; // (rows, hidden)
        let x = self.norm.forward(&x)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32) // (rows, vocab)
    }
}
