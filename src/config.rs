//! Model configuration: the serde mirror of Hugging Face's `config.json` (`HfConfig`) and the
//! resolved, validated `Config` the model code runs from.
//!
//! Owns: parsing both config styles (transformers 4.x `rope_theta`/`rope_scaling`/`torch_dtype`
//! and 5.x `rope_parameters`/`dtype`), family detection, defaults, and RoPE frequencies.
//! Must not: touch files other than the JSON text it is given (`apply_rope_factors` reads one
//! named tensor from already-opened weights).

use serde::Deserialize;
use serde_json::Value;

/// Errors in `config.json`, written for the person who owns the model directory.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: malformed JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: unknown architecture `{found}`; supported model_type values: llama, mistral, qwen2, qwen3")]
    UnknownArchitecture { file: String, found: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// The model families Aisle runs. All share one forward pass; they differ in flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }
}

/// `config.json` as Hugging Face writes it. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<usize>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub hidden_act: Option<String>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
    pub torch_dtype: Option<String>,
    pub dtype: Option<String>,
}

/// How RoPE frequencies are derived from the base frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (HF `linear`).
    Linear {
        factor: f64,
    },
    /// Llama 3.x frequency-band scaling (HF `llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Per-frequency divisors (llama.cpp's `rope_freqs` tensor, how GGUF files carry Llama
    /// 3's scaling): `(head_dim / 2)` values.
    Factors(Vec<f32>),
}

/// The resolved configuration every other module reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (always on for qwen2).
    pub qkv_bias: bool,
    /// Bias on the output projection (llama `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (qwen3).
    pub qk_norm: bool,
    /// Sliding attention window per layer (`None`: full attention).
    pub sliding_window: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The dtype the checkpoint declares (informational; `--dtype` decides the run dtype).
    pub declared_dtype: Option<String>,
}

impl Config {
    /// Parse and resolve `config.json` text; `file` names the file in error messages.
    pub fn from_json(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: Value = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            file: file.to_string(),
            source,
        })?;
        let hf: HfConfig = serde_json::from_value(raw).map_err(|source| ConfigError::Json {
            file: file.to_string(),
            source,
        })?;
        hf.resolve(file)
    }

    /// Number of query heads per KV head (GQA group size).
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Total parameter count implied by the shapes (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_heads * hd;
        let kv = self.num_kv_heads * hd;
        let mut attn = h * q + 2 * h * kv + q * h;
        if self.qkv_bias {
            attn += q + 2 * kv;
        }
        if self.o_bias {
            attn += h;
        }
        if self.qk_norm {
            attn += 2 * hd;
        }
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attn + mlp + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_layers * layer + h + head
    }

    /// RoPE inverse frequencies, `(head_dim / 2)`, after scaling, in f32 as HF computes them.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / (self.rope_theta as f32).powf((2 * i) as f32 / dim as f32))
            .collect();
        match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Factors(f) => base.iter().zip(f).map(|(b, f)| b / f).collect(),
            RopeScaling::Linear { factor } => base.iter().map(|f| f / *factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => base
                .iter()
                .map(|&f| llama3_scale(f, *factor, *low_freq_factor, *high_freq_factor, *old))
                .collect(),
        }
    }
}

impl Config {
    /// Take RoPE frequency divisors from a `rope_freqs.weight` tensor when the weights have
    /// one (GGUF files of Llama 3.x).
    pub fn apply_rope_factors(
        &mut self,
        weights: &crate::weights::Weights,
    ) -> Result<(), crate::weights::WeightsError> {
        const NAME: &str = "rope_freqs.weight";
        if !weights.contains(NAME) {
            return Ok(());
        }
        let factors = weights.vec_f32(NAME, &[self.head_dim / 2])?;
        if factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
            return Err(weights.invalid(NAME, "RoPE frequency factors must be positive and finite"));
        }
        self.rope_scaling = RopeScaling::Factors(factors);
        Ok(())
    }
}

/// Llama 3 frequency scaling of one inverse frequency (HF `_compute_llama3_parameters`).
fn llama3_scale(inv_freq: f32, factor: f64, low: f64, high: f64, old_ctx: f64) -> f32 {
    let (factor, low, high, old_ctx) = (factor as f32, low as f32, high as f32, old_ctx as f32);
    let low_freq_wavelen = old_ctx / low;
    let high_freq_wavelen = old_ctx / high;
    let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
    if wavelen > low_freq_wavelen {
        inv_freq / factor
    } else if wavelen < high_freq_wavelen {
        inv_freq
    } else {
        let smooth = (old_ctx / wavelen - low) / (high - low);
        (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    }
}

/// RoPE's base and scaling numbers positive and finite.
fn check_rope(theta: f64, scaling: &RopeScaling) -> Result<(), String> {
    if !(theta.is_finite() && theta > 0.0) {
        return Err(format!("rope_theta must be a positive number, found {theta}"));
    }
    let numbers: Vec<f64> = match scaling {
        RopeScaling::None | RopeScaling::Factors(_) => vec![],
        RopeScaling::Linear { factor } => vec![*factor],
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => vec![
            *factor,
            *low_freq_factor,
            *high_freq_factor,
            *original_max_position_embeddings,
        ],
    };
    match numbers.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        Some(x) => Err(format!("rope scaling numbers must be positive, found {x}")),
        None => Ok(()),
    }
}

/// Token id fields may be a number, a list of numbers or null. An id beyond `u32` reads as
/// `u32::MAX` (outside any vocabulary), never wrapped into a valid one.
/// Check a `bos_token_id` / `eos_token_id` value: absent, null, an id or a list of ids, each
/// inside a vocabulary of `vocab` (a string or a float would otherwise be ignored).
pub(crate) fn check_token_ids(name: &str, v: &Option<Value>, vocab: usize) -> Result<(), String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(one) => vec![one],
    };
    for x in list {
        match x.as_u64() {
            Some(id) if id < vocab as u64 => {}
            Some(id) => return Err(format!("{name} {id} is outside the vocabulary of {vocab}")),
            None => return Err(format!("{name} must be a token id or a list of token ids, found {x}")),
        }
    }
    Ok(())
}

pub(crate) fn token_ids(v: &Option<Value>) -> Vec<u32> {
    let id = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![id(x)]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(id).collect(),
        _ => Vec::new(),
    }
}

impl HfConfig {
    fn family(&self, file: &str) -> Result<Family, ConfigError> {
        let arch = self.architectures.first().map(|a| a.as_str());
        let name = match (self.model_type.as_deref(), arch) {
            (Some(t), _) => t.to_string(),
            (None, Some(a)) => a.trim_end_matches("ForCausalLM").to_lowercase(),
            (None, None) => String::from("<missing model_type>"),
        };
        match name.as_str() {
            "llama" => Ok(Family::Llama),
            "mistral" => Ok(Family::Mistral),
            "qwen2" => Ok(Family::Qwen2),
            "qwen3" => Ok(Family::Qwen3),
            _ => Err(ConfigError::UnknownArchitecture {
                file: file.to_string(),
                found: name,
            }),
        }
    }

    /// RoPE base and scaling from either `rope_parameters` (v5) or `rope_theta`/`rope_scaling`.
    fn rope(&self, file: &str) -> Result<(f64, RopeScaling), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        for (key, v) in [
            ("rope_parameters", &self.rope_parameters),
            ("rope_scaling", &self.rope_scaling),
        ] {
            if v.as_ref().is_some_and(|v| !v.is_object() && !v.is_null()) {
                return Err(invalid(format!("{key} must be an object or null")));
            }
        }
        let params = self.rope_parameters.as_ref().filter(|v| v.is_object());
        let scaling = params.or(self.rope_scaling.as_ref().filter(|v| v.is_object()));
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        let Some(s) = scaling else {
            return Ok((theta, RopeScaling::None));
        };
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str);
        // A factor without a type would otherwise run unscaled without a word.
        if kind.is_none() && s.get("factor").is_some() {
            return Err(invalid("rope scaling has a `factor` but no `rope_type`".into()));
        }
        let kind = kind.unwrap_or("default");
        let num = |key: &str| -> Result<f64, ConfigError> {
            s.get(key).and_then(Value::as_f64).ok_or_else(|| ConfigError::Invalid {
                file: file.to_string(),
                message: format!("rope scaling `{kind}` needs a numeric `{key}`"),
            })
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: num("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    message: format!("unsupported rope scaling type `{other}` (supported: default, linear, llama3)"),
                })
            }
        };
        Ok((theta, scaling))
    }

    /// Per-layer sliding window: `layer_types` when present, else the family's rules.
    fn sliding_windows(&self, family: Family) -> Vec<Option<usize>> {
        let n = self.num_hidden_layers;
        let window = self.sliding_window;
        if let Some(types) = &self.layer_types {
            return (0..n)
                .map(|i| match types.get(i).map(String::as_str) {
                    Some("sliding_attention") => window,
                    _ => None,
                })
                .collect();
        }
        match family {
            Family::Mistral => vec![window; n],
            Family::Qwen2 | Family::Qwen3 if self.use_sliding_window == Some(true) => {
                let start = self.max_window_layers.unwrap_or(0);
                (0..n).map(|i| if i >= start { window } else { None }).collect()
            }
            _ => vec![None; n],
        }
    }

    /// Every size within bounds (nothing is allocated from an absurd number), the
    /// norm epsilon and the window usable, token ids inside the vocabulary.
    fn check_bounds(&self, head_dim: usize) -> Result<(), String> {
        // Upper bounds far above any model this engine serves, far below an overflow.
        let sizes = [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_hidden_layers, 1024),
            ("num_attention_heads", self.num_attention_heads, 1024),
            (
                "num_key_value_heads",
                self.num_key_value_heads.unwrap_or(self.num_attention_heads),
                1024,
            ),
            ("head_dim", head_dim, 1024),
            (
                "max_position_embeddings",
                self.max_position_embeddings.unwrap_or(4096),
                1 << 24,
            ),
        ];
        for (name, v, max) in sizes {
            if v == 0 || v > max {
                return Err(format!("{name} must be between 1 and {max}, found {v}"));
            }
        }
        if let Some(eps) = self.rms_norm_eps {
            if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
                return Err(format!("rms_norm_eps must be a positive number below 1, found {eps}"));
            }
        }
        if self.sliding_window == Some(0) {
            return Err("sliding_window must be at least 1 (or null for full attention)".into());
        }
        check_token_ids("bos_token_id", &self.bos_token_id, self.vocab_size)?;
        check_token_ids("eos_token_id", &self.eos_token_id, self.vocab_size)
    }

    /// Validate and resolve into the `Config` the model runs from.
    pub fn resolve(&self, file: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        let family = self.family(file)?;
        let act = self.hidden_act.as_deref().unwrap_or("silu");
        if act != "silu" {
            return Err(invalid(format!("unsupported hidden_act `{act}` (only silu)")));
        }
        let num_heads = self.num_attention_heads;
        let num_kv_heads = self.num_key_value_heads.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(invalid(format!(
                "num_attention_heads ({num_heads}) must be a positive multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        let head_dim = self.head_dim.unwrap_or(self.hidden_size / num_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(invalid(format!("head_dim must be even and positive, found {head_dim}")));
        }
        self.check_bounds(head_dim).map_err(invalid)?;
        let (rope_theta, rope_scaling) = self.rope(file)?;
        check_rope(rope_theta, &rope_scaling).map_err(invalid)?;
        let bias = self.attention_bias.unwrap_or(false);
        Ok(Config {
            family,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: self.max_position_embeddings.unwrap_or(4096),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            qkv_bias: family == Family::Qwen2 || bias,
            o_bias: family != Family::Qwen2 && bias,
            mlp_bias: self.mlp_bias.unwrap_or(false),
            qk_norm: family == Family::Qwen3,
            sliding_window: self.sliding_windows(family),
            bos_token_id: token_ids(&self.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&self.eos_token_id),
            declared_dtype: self.dtype.clone().or(self.torch_dtype.clone()),
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
