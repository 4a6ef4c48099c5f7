//! GGUF metadata (`general.architecture`, `{arch}.*`, `tokenizer.ggml.*` ids) → the same
//! `HfConfig` a `config.json` gives, resolved and validated by `config.rs`.
//!
//! Owns: the key table and the layout facts the weights need (q/k permutation, tied
//! embeddings). Must not: read tensors or build the tokenizer.

use serde_json::{json, Map, Value};

use super::{GgufError, GgufFile};
use crate::config::{Config, HfConfig};
use crate::weights::GgufLayout;

/// GGUF architectures Aisle runs, with the HF `model_type` each becomes.
const ARCHITECTURES: &[(&str, &str)] = &[("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3")];

/// (`{arch}.` key suffix, `config.json` field) for plain numbers.
const KEYS: &[(&str, &str)] = &[
    ("embedding_length", "hidden_size"),
    ("feed_forward_length", "intermediate_size"),
    ("block_count", "num_hidden_layers"),
    ("attention.head_count", "num_attention_heads"),
    ("attention.head_count_kv", "num_key_value_heads"),
    ("attention.key_length", "head_dim"),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ("context_length", "max_position_embeddings"),
    ("rope.freq_base", "rope_theta"),
    ("attention.sliding_window", "sliding_window"),
];

/// Keys without which there is no model.
const REQUIRED: &[&str] = &[
    "embedding_length",
    "feed_forward_length",
    "block_count",
    "attention.head_count",
];

impl GgufFile {
    /// The architecture's `general.architecture` name and HF `model_type`.
    fn architecture(&self) -> Result<(&str, &'static str), GgufError> {
        let arch = self.require("general.architecture", self.string("general.architecture"))?;
        ARCHITECTURES
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(a, t)| (*a, *t))
            .ok_or_else(|| GgufError::Unsupported {
                path: self.path.clone(),
                message: format!(
                    "architecture `{arch}` is not supported (supported: {})",
                    ARCHITECTURES.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
                ),
            })
    }

    /// The model's configuration, as `config.json` would state it.
    pub fn config(&self) -> Result<Config, GgufError> {
        let (arch, model_type) = self.architecture()?;
        let mut hf = Map::new();
        hf.insert("model_type".into(), json!(model_type));
        for suffix in REQUIRED {
            let key = format!("{arch}.{suffix}");
            self.require(&key, self.float(&key))?;
        }
        for (suffix, field) in KEYS {
            let key = format!("{arch}.{suffix}");
            if let Some(v) = self.float(&key)? {
                let v = match *field {
                    "rms_norm_eps" | "rope_theta" => json!(v),
                    _ => json!(self.uint(&key)?),
                };
                hf.insert((*field).into(), v);
            }
        }
        let vocab = self.vocab_size(arch)?;
        hf.insert("vocab_size".into(), json!(vocab));
        hf.insert("tie_word_embeddings".into(), json!(!self.has_tensor("output.weight")));
        if hf.contains_key("sliding_window") {
            hf.insert("use_sliding_window".into(), json!(true));
        }
        for (key, field) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ] {
            if let Some(id) = self.uint(key)? {
                if id >= vocab {
                    return Err(GgufError::Metadata {
                        path: self.path.clone(),
                        key: key.into(),
                        message: format!("id {id} is outside the {vocab}-token vocabulary"),
                    });
                }
                hf.insert(field.into(), json!(id));
            }
        }
        if let Some(scaling) = self.rope_scaling(arch)? {
            hf.insert("rope_scaling".into(), scaling);
        }
        self.check_rotary(arch, &hf)?;
        let file = self.path.display().to_string();
        let parsed: HfConfig = serde_json::from_value(Value::Object(hf)).map_err(|e| GgufError::Metadata {
            path: self.path.clone(),
            key: format!("{arch}.*"),
            message: e.to_string(),
        })?;
        parsed.resolve(&file).map_err(|e| GgufError::Unsupported {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// How the weights were written: llama-architecture files permute q/k rows per head.
    pub fn layout(&self, cfg: &Config) -> Result<GgufLayout, GgufError> {
        let (arch, _) = self.architecture()?;
        Ok(GgufLayout {
            permute_qk: (arch == "llama").then_some((cfg.num_heads, cfg.num_kv_heads)),
        })
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn vocab_size(&self, arch: &str) -> Result<u64, GgufError> {
        if let Some(n) = self.uint(&format!("{arch}.vocab_size"))? {
            return Ok(n);
        }
        match self.get("tokenizer.ggml.tokens") {
            Some(candle_core::quantized::gguf_file::Value::Array(a)) => Ok(a.len() as u64),
            _ => Err(GgufError::Metadata {
                path: self.path.clone(),
                key: format!("{arch}.vocab_size"),
                message: "missing, and no tokenizer.ggml.tokens to count".into(),
            }),
        }
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*`: none or linear (yarn and others refused).
    fn rope_scaling(&self, arch: &str) -> Result<Option<Value>, GgufError> {
        let key = format!("{arch}.rope.scaling.type");
        let factor = self.float(&format!("{arch}.rope.scaling.factor"))?;
        match self.string(&key)? {
            None | Some("none") => Ok(None),
            Some("linear") => Ok(Some(json!({"rope_type": "linear", "factor": factor.unwrap_or(1.0)}))),
            Some(other) => Err(GgufError::Unsupported {
                path: self.path.clone(),
                message: format!(
                    "`{key}` = `{other}` is not supported (supported: none, linear, and llama 3's rope_freqs tensor)"
                ),
            }),
        }
    }

    /// Partial rotary embeddings (`rope.dimension_count` < head_dim) are not supported.
    fn check_rotary(&self, arch: &str, hf: &Map<String, Value>) -> Result<(), GgufError> {
        let key = format!("{arch}.rope.dimension_count");
        let Some(dims) = self.uint(&key)? else { return Ok(()) };
        let num = |k: &str| hf.get(k).and_then(Value::as_u64);
        let head_dim = num("head_dim").or_else(|| Some(num("hidden_size")? / num("num_attention_heads")?.max(1)));
        match head_dim {
            Some(hd) if hd != dims => Err(GgufError::Unsupported {
                path: self.path.clone(),
                message: format!(
                    "`{key}` = {dims} rotates part of each {hd}-wide head; only full rotary embeddings are supported"
                ),
            }),
            _ => Ok(()),
        }
    }
}
