//! The CPU backend's decoder weights: loaded by their Hugging Face names, with q/k/v and
//! gate/up fused into one packed matrix each, in the format the run asks for.
//!
//! Owns: turning safetensors tensors into `PackedMatrix`es and f32 norm/bias vectors.
//! Must not: run the forward pass (`forward.rs`) or keep the f32 copies it packs from.

use candle_core::{DType, Device};

use super::matmul::{Format, PackedMatrix};
use super::CpuError;
use crate::config::Config;
use crate::weights::Weights;

pub struct Layer {
    pub input_norm: Vec<f32>,                  // (hidden)
    pub qkv: PackedMatrix,                     // (q_dim + 2 kv_dim, hidden)
    pub qkv_bias: Option<Vec<f32>>,            // (q_dim + 2 kv_dim)
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>, // 2 × (head_dim)
    pub o: PackedMatrix,                       // (hidden, q_dim)
    pub o_bias: Option<Vec<f32>>,              // (hidden)
    pub post_norm: Vec<f32>,                   // (hidden)
    pub gate_up: PackedMatrix,                 // (2 intermediate, hidden): gate rows, then up rows
    pub gate_up_bias: Option<Vec<f32>>,        // (2 intermediate)
    pub down: PackedMatrix,                    // (hidden, intermediate)
    pub down_bias: Option<Vec<f32>>,           // (hidden)
    pub window: Option<usize>,
}

pub struct CpuModel {
    pub cfg: Config,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,              // (hidden)
    pub lm_head: PackedMatrix,       // (vocab, hidden)
    pub embed: Option<PackedMatrix>, // (vocab, hidden); None: tied to lm_head
    pub inv_freq: Vec<f32>,          // (head_dim / 2)
    pub format: Format,
}

fn refs(v: &[(String, usize)]) -> Vec<(&str, usize)> {
    v.iter().map(|(n, r)| (n.as_str(), *r)).collect()
}

/// Reads tensors as f32 vectors, naming file and tensor on failure.
struct Loader<'a> {
    weights: &'a Weights,
}

impl Loader<'_> {
    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CpuError> {
        let t = self.weights.get(name, shape, DType::F32, &Device::Cpu)?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    fn opt(&self, on: bool, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, CpuError> {
        on.then(|| self.vec(name, shape)).transpose()
    }

    /// Stack the named `(rows_i, cols)` matrices row-wise and pack them, reading rows
    /// straight from the mapping; then let the OS drop the tensors' pages.
    fn packed(&self, names: &[(&str, usize)], cols: usize, format: Format) -> Result<PackedMatrix, CpuError> {
        let parts = names
            .iter()
            .map(|&(name, rows)| Ok((self.weights.rows(name, &[rows, cols])?, rows)))
            .collect::<Result<Vec<_>, CpuError>>()?;
        let rows = names.iter().map(|n| n.1).sum();
        let packed = PackedMatrix::pack_rows(rows, cols, format, |mut r, out| {
            for (part, n) in &parts {
                if r < *n {
                    part.read(r, out);
                    return Ok(());
                }
                r -= n;
            }
            Err(CpuError::Unsupported(format!("row {r} beyond the stacked tensors")))
        })?;
        for &(name, _) in names {
            self.weights.release(name);
        }
        Ok(packed)
    }

    /// Concatenated biases of the named vectors, if `on`.
    fn biases(&self, on: bool, names: &[(&str, usize)]) -> Result<Option<Vec<f32>>, CpuError> {
        if !on {
            return Ok(None);
        }
        let mut all = Vec::new();
        for &(name, n) in names {
            all.extend(self.vec(name, &[n])?);
        }
        Ok(Some(all))
    }
}

impl Layer {
    fn load(l: &Loader, i: usize, cfg: &Config, format: Format) -> Result<Layer, CpuError> {
        let p = format!("model.layers.{i}");
        let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let a = format!("{p}.self_attn");
        let m = format!("{p}.mlp");
        let qkv_names = |suffix: &str| {
            [
                (format!("{a}.q_proj.{suffix}"), qd),
                (format!("{a}.k_proj.{suffix}"), kvd),
                (format!("{a}.v_proj.{suffix}"), kvd),
            ]
        };
        let gu_names = |suffix: &str| {
            [
                (format!("{m}.gate_proj.{suffix}"), inter),
                (format!("{m}.up_proj.{suffix}"), inter),
            ]
        };
        let qk_norm = match cfg.qk_norm {
            true => Some((
                l.vec(&format!("{a}.q_norm.weight"), &[hd])?,
                l.vec(&format!("{a}.k_norm.weight"), &[hd])?,
            )),
            false => None,
        };
        Ok(Layer {
            input_norm: l.vec(&format!("{p}.input_layernorm.weight"), &[h])?,
            qkv: l.packed(&refs(&qkv_names("weight")), h, format)?,
            qkv_bias: l.biases(cfg.qkv_bias, &refs(&qkv_names("bias")))?,
            qk_norm,
            o: l.packed(&[(&format!("{a}.o_proj.weight"), h)], qd, format)?,
            o_bias: l.opt(cfg.o_bias, &format!("{a}.o_proj.bias"), &[h])?,
            post_norm: l.vec(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            gate_up: l.packed(&refs(&gu_names("weight")), h, format)?,
            gate_up_bias: l.biases(cfg.mlp_bias, &refs(&gu_names("bias")))?,
            down: l.packed(&[(&format!("{m}.down_proj.weight"), h)], inter, format)?,
            down_bias: l.opt(cfg.mlp_bias, &format!("{m}.down_proj.bias"), &[h])?,
            window: cfg.sliding_window[i],
        })
    }
}

/// Embeddings and lm_head use q8_0 when the layers use q4_k.
fn head_format(format: Format) -> Format {
    match format {
        Format::Q4K => Format::Q8_0,
        f => f,
    }
}

impl CpuModel {
    /// Load and pack every tensor. `format` is the weights' format; embeddings and lm_head
    /// use q8_0 when the layers use q4_k (as llama.cpp's Q4_K_M keeps its output layer wider).
    pub fn load(weights: &Weights, cfg: &Config, format: Format) -> Result<CpuModel, CpuError> {
        let l = Loader { weights };
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let head_format = head_format(format);
        let layers = (0..cfg.num_layers)
            .map(|i| Layer::load(&l, i, cfg, format))
            .collect::<Result<Vec<_>, _>>()?;
        let (lm_head, embed) = match cfg.tie_word_embeddings {
            true => (l.packed(&[("model.embed_tokens.weight", v)], h, head_format)?, None),
            false => (
                l.packed(&[("lm_head.weight", v)], h, head_format)?,
                Some(l.packed(&[("model.embed_tokens.weight", v)], h, head_format)?),
            ),
        };
        Ok(CpuModel {
            cfg: cfg.clone(),
            layers,
            norm: l.vec("model.norm.weight", &[h])?,
            lm_head,
            embed,
            inv_freq: cfg.rope_inv_freq(),
            format,
        })
    }

    /// What `bytes()` will be once `load` packed this config in `format`, without loading:
    /// the same matrices and norm vectors (a test holds the two equal).
    pub fn packed_bytes(cfg: &Config, format: Format) -> usize {
        let (h, hd, inter, v) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size);
        let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let layer = format.packed_bytes(qd + 2 * kvd, h)
            + format.packed_bytes(h, qd)
            + format.packed_bytes(2 * inter, h)
            + format.packed_bytes(h, inter)
            + 2 * h * 4;
        let heads = if cfg.tie_word_embeddings { 1 } else { 2 };
        cfg.num_layers * layer + heads * head_format(format).packed_bytes(v, h)
    }

    /// Bytes of packed weights and vectors.
    pub fn bytes(&self) -> usize {
        let vecs = |l: &Layer| (l.input_norm.len() + l.post_norm.len()) * 4;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes() + vecs(l))
            .sum();
        layers + self.lm_head.bytes() + self.embed.as_ref().map_or(0, |e| e.bytes())
    }

    /// The embedding table (tied models look rows up in the lm_head).
    pub fn embedding(&self) -> &PackedMatrix {
        self.embed.as_ref().unwrap_or(&self.lm_head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_bytes_predicts_what_loading_packs() {
        for family in ["llama", "qwen3", "mistral"] {
            let dir = format!("{}/tests/fixtures/{family}", env!("CARGO_MANIFEST_DIR"));
            let m = crate::runtime::LoadedModel::load(&dir).unwrap();
            for f in [Format::F32, Format::Bf16, Format::Q8_0] {
                let loaded = CpuModel::load(&m.weights, &m.config, f).unwrap();
                assert_eq!(CpuModel::packed_bytes(&m.config, f), loaded.bytes(), "{family} {f:?}");
            }
        }
    }
}
