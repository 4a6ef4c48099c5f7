//! The CPU backend's decoder weights: loaded by their Hugging Face names, with q/k/v and
//! gate/up fused into one packed matrix each, each matrix in the format the plan gives it.
//!
//! Owns: the plan (which matrices, from which tensors, in which `Format`: the run's, or for
//! GGUF weights "as stored": q4_k for Q4_0/Q4_1/Q4_K, q8_0 for other block types), turning
//! tensors into `PackedMatrix`es (GGUF blocks repacked without requantizing where the format
//! holds them exactly) and f32 norm/bias vectors.
//! Must not: run the forward pass (`forward.rs`) or keep the f32 copies it packs from.

use std::collections::BTreeMap;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};

use super::ggml_blocks;
use super::matmul::{Format, PackedMatrix, SourceRow};
use super::CpuError;
use crate::backend::Quantize;
use crate::config::Config;
use crate::weights::{DiskType, Weights};

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
    /// How many matrices use each format (for `describe`).
    pub formats: BTreeMap<String, usize>,
}

/// How the weights are to be packed: the run dtype and `--quantize`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub dtype: DType,
    pub quantize: Option<Quantize>,
}

/// One packed matrix: the stacked `(name, rows)` tensors it is read from, and its columns.
struct Spec {
    parts: Vec<(String, usize)>,
    cols: usize,
    /// Embeddings / lm_head (q8_0 where the layers are quantized to q4_k).
    head: bool,
}

impl Plan {
    fn float(&self) -> Format {
        match self.dtype {
            DType::BF16 => Format::Bf16,
            _ => Format::F32,
        }
    }

    /// The format of one matrix whose parts are stored as `disk`.
    pub fn format(&self, disk: &[DiskType], head: bool) -> Format {
        let q4 = |d: &DiskType| matches!(d, DiskType::Ggml(GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K));
        match self.quantize {
            Some(Quantize::Q8_0) => Format::Q8_0,
            Some(Quantize::Q4K) if head => Format::Q8_0,
            Some(Quantize::Q4K) => Format::Q4K,
            Some(Quantize::Dequantize) => self.float(),
            None if !disk.is_empty() && disk.iter().all(q4) => Format::Q4K,
            None if disk.iter().any(|d| matches!(d, DiskType::Ggml(_))) => Format::Q8_0,
            None => self.float(),
        }
    }
}

/// Every packed matrix of layer `i`: qkv, o, gate_up, down.
fn layer_specs(cfg: &Config, i: usize) -> [Spec; 4] {
    let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let a = format!("model.layers.{i}.self_attn");
    let m = format!("model.layers.{i}.mlp");
    let spec = |parts: Vec<(String, usize)>, cols| Spec {
        parts,
        cols,
        head: false,
    };
    [
        spec(
            vec![
                (format!("{a}.q_proj.weight"), qd),
                (format!("{a}.k_proj.weight"), kvd),
                (format!("{a}.v_proj.weight"), kvd),
            ],
            h,
        ),
        spec(vec![(format!("{a}.o_proj.weight"), h)], qd),
        spec(
            vec![
                (format!("{m}.gate_proj.weight"), inter),
                (format!("{m}.up_proj.weight"), inter),
            ],
            h,
        ),
        spec(vec![(format!("{m}.down_proj.weight"), h)], inter),
    ]
}

/// lm_head, then the embedding table when it is not tied.
fn head_specs(cfg: &Config) -> Vec<Spec> {
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let spec = |name: &str| Spec {
        parts: vec![(name.to_string(), v)],
        cols: h,
        head: true,
    };
    match cfg.tie_word_embeddings {
        true => vec![spec("model.embed_tokens.weight")],
        false => vec![spec("lm_head.weight"), spec("model.embed_tokens.weight")],
    }
}

/// Reads tensors as f32 vectors or packed matrices, naming file and tensor on failure.
struct Loader<'a> {
    weights: &'a Weights,
    plan: Plan,
}

impl Loader<'_> {
    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CpuError> {
        let t = self.weights.get(name, shape, DType::F32, &Device::Cpu)?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    fn opt(&self, on: bool, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, CpuError> {
        on.then(|| self.vec(name, shape)).transpose()
    }

    fn format(&self, spec: &Spec) -> Format {
        let disk: Vec<DiskType> = spec
            .parts
            .iter()
            .filter_map(|(n, _)| self.weights.disk_type(n))
            .collect();
        self.plan.format(&disk, spec.head)
    }

    /// Stack the spec's `(rows_i, cols)` tensors row-wise and pack them, reading rows
    /// straight from the mapping (GGUF blocks the format holds exactly are copied, not
    /// requantized); then let the OS drop the tensors' pages.
    fn packed(&self, spec: &Spec) -> Result<PackedMatrix, CpuError> {
        let (format, cols) = (self.format(spec), spec.cols);
        let parts = spec
            .parts
            .iter()
            .map(|(name, rows)| Ok((self.weights.rows(name, &[*rows, cols])?, *rows)))
            .collect::<Result<Vec<_>, CpuError>>()?;
        let rows = spec.parts.iter().map(|n| n.1).sum();
        let packed = PackedMatrix::pack_source(rows, cols, format, |mut r, out| {
            for (part, n) in &parts {
                if r < *n {
                    let blocks = part.blocks(r);
                    let direct = match (format, blocks) {
                        (Format::Q8_0, Some((t, b))) => ggml_blocks::q8_row(t, b).map(SourceRow::Q8),
                        (Format::Q4K, Some((t, b))) => ggml_blocks::q4_row(t, b, cols).map(SourceRow::Q4),
                        _ => None,
                    };
                    return Ok(direct.unwrap_or_else(|| {
                        part.read(r, out);
                        SourceRow::F32
                    }));
                }
                r -= n;
            }
            Err(CpuError::Unsupported(format!("row {r} beyond the stacked tensors")))
        })?;
        for (name, _) in &spec.parts {
            self.weights.release(name);
        }
        Ok(packed)
    }

    /// Concatenated biases of the named `.weight` tensors' `.bias` twins, if `on`.
    fn biases(&self, on: bool, spec: &Spec) -> Result<Option<Vec<f32>>, CpuError> {
        if !on {
            return Ok(None);
        }
        let mut all = Vec::new();
        for (name, n) in &spec.parts {
            all.extend(self.vec(&name.replace(".weight", ".bias"), &[*n])?);
        }
        Ok(Some(all))
    }
}

impl Layer {
    fn load(l: &Loader, i: usize, cfg: &Config) -> Result<Layer, CpuError> {
        let p = format!("model.layers.{i}");
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let a = format!("{p}.self_attn");
        let [qkv, o, gate_up, down] = layer_specs(cfg, i);
        let qk_norm = match cfg.qk_norm {
            true => Some((
                l.vec(&format!("{a}.q_norm.weight"), &[hd])?,
                l.vec(&format!("{a}.k_norm.weight"), &[hd])?,
            )),
            false => None,
        };
        Ok(Layer {
            input_norm: l.vec(&format!("{p}.input_layernorm.weight"), &[h])?,
            qkv: l.packed(&qkv)?,
            qkv_bias: l.biases(cfg.qkv_bias, &qkv)?,
            qk_norm,
            o: l.packed(&o)?,
            o_bias: l.opt(cfg.o_bias, &format!("{a}.o_proj.bias"), &[h])?,
            post_norm: l.vec(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            gate_up: l.packed(&gate_up)?,
            gate_up_bias: l.biases(cfg.mlp_bias, &gate_up)?,
            down: l.packed(&down)?,
            down_bias: l.biases(cfg.mlp_bias, &down)?,
            window: cfg.sliding_window[i],
        })
    }
}

/// Every matrix's format and packed size under `plan`, in load order.
fn planned(weights: &Weights, cfg: &Config, plan: Plan) -> Vec<(Format, usize)> {
    let l = Loader { weights, plan };
    let specs = (0..cfg.num_layers)
        .flat_map(|i| layer_specs(cfg, i))
        .chain(head_specs(cfg));
    specs
        .map(|s| {
            let f = l.format(&s);
            (f, f.packed_bytes(s.parts.iter().map(|p| p.1).sum(), s.cols))
        })
        .collect()
}

impl CpuModel {
    /// Load and pack every tensor as `plan` says.
    pub fn load(weights: &Weights, cfg: &Config, plan: Plan) -> Result<CpuModel, CpuError> {
        let l = Loader { weights, plan };
        let layers = (0..cfg.num_layers)
            .map(|i| Layer::load(&l, i, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let mut heads = head_specs(cfg).into_iter().map(|s| l.packed(&s));
        let lm_head = heads.next().expect("an lm_head spec")?;
        let embed = heads.next().transpose()?;
        let formats = CpuModel::format_counts(weights, cfg, plan);
        Ok(CpuModel {
            cfg: cfg.clone(),
            layers,
            norm: l.vec("model.norm.weight", &[cfg.hidden_size])?,
            lm_head,
            embed,
            inv_freq: cfg.rope_inv_freq(),
            formats,
        })
    }

    /// How many packed matrices `load` will give each format under `plan`, by name.
    pub fn format_counts(weights: &Weights, cfg: &Config, plan: Plan) -> BTreeMap<String, usize> {
        let mut formats = BTreeMap::new();
        for (f, _) in planned(weights, cfg, plan) {
            *formats.entry(format!("{f:?}")).or_default() += 1;
        }
        formats
    }

    /// What `bytes()` will be once `load` packed these weights under `plan`, without
    /// loading: the same matrices and norm vectors (a test holds the two equal).
    pub fn packed_bytes(weights: &Weights, cfg: &Config, plan: Plan) -> usize {
        let matrices: usize = planned(weights, cfg, plan).iter().map(|m| m.1).sum();
        matrices + cfg.num_layers * 2 * cfg.hidden_size * 4
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

    /// "Q4K ×120, Q8_0 ×1": the matrices' formats.
    pub fn describe_formats(&self) -> String {
        crate::weights::describe_counts(&self.formats)
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
            for (dtype, quantize) in [
                (DType::F32, None),
                (DType::BF16, None),
                (DType::F32, Some(Quantize::Q8_0)),
                (DType::F32, Some(Quantize::Q4K)),
            ] {
                let plan = Plan { dtype, quantize };
                let loaded = CpuModel::load(&m.weights, &m.config, plan).unwrap();
                assert_eq!(
                    CpuModel::packed_bytes(&m.weights, &m.config, plan),
                    loaded.bytes(),
                    "{family} {plan:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod gguf_tests {
    use super::*;

    /// GGUF blocks the formats hold exactly are packed without requantizing: every packed
    /// row of the real model's Q4_1 layers and Q8_0 embeddings equals the dequantized row.
    #[test]
    fn as_stored_gguf_weights_keep_the_files_values() {
        let path = format!(
            "{}/target/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            env!("CARGO_MANIFEST_DIR")
        );
        assert!(
            std::path::Path::new(&path).exists(),
            "{path} missing: run scripts/fetch_models.sh"
        );
        let m = crate::runtime::LoadedModel::load(&path).unwrap();
        let plan = Plan {
            dtype: DType::F32,
            quantize: None,
        };
        let cpu = CpuModel::load(&m.weights, &m.config, plan).unwrap();
        assert_eq!(cpu.describe_formats(), "Q4K ×120, Q8_0 ×1");
        let cfg = &m.config;
        let (h, qd) = (cfg.hidden_size, cfg.num_heads * cfg.head_dim);
        let checks: [(&PackedMatrix, &str, usize, usize, usize); 3] = [
            (&cpu.lm_head, "model.embed_tokens.weight", cfg.vocab_size, h, 0),
            (&cpu.layers[3].qkv, "model.layers.3.self_attn.q_proj.weight", qd, h, 0),
            (
                &cpu.layers[3].down,
                "model.layers.3.mlp.down_proj.weight",
                h,
                cfg.intermediate_size,
                0,
            ),
        ];
        for (packed, name, rows, cols, offset) in checks {
            let src = m.weights.rows(name, &[rows, cols]).unwrap();
            let (mut want, mut got) = (vec![0f32; cols], vec![0f32; cols]);
            for r in (0..rows).step_by(7) {
                src.read(r, &mut want);
                packed.row(offset + r, &mut got).unwrap();
                assert_eq!(got, want, "{name} row {r}");
            }
        }
    }
}
