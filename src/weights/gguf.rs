//! GGUF tensors: llama.cpp's names mapped onto Hugging Face's (one table), every tensor's
//! byte range checked against the file, and llama.cpp's per-head q/k row interleaving undone.
//!
//! Owns: `NAMES`/`LAYER_NAMES` and the row permutation. Must not: parse GGUF headers (candle's
//! `gguf_file` does, through `crate::gguf`) or dequantize (`mod.rs` does).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;

use super::{ggml_name, DiskType, Entry, WeightsError};

/// Whole-model tensors: (GGUF name, HF name).
const NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("rope_freqs.weight", "rope_freqs.weight"),
];

/// Per-layer tensors under `blk.{i}.` / `model.layers.{i}.`, before `.weight` / `.bias`.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// How the file's writer laid tensors out.
#[derive(Debug, Clone, Default)]
pub struct GgufLayout {
    /// llama.cpp's converter interleaves the rotary halves of each head's q and k rows for the
    /// `llama` architecture: (query heads, kv heads) to undo that; `None` for qwen2/qwen3.
    pub permute_qk: Option<(usize, usize)>,
}

/// The HF name of a GGUF tensor name, if the table knows it.
pub fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (base, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == base)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// HF row `r` of a permuted `(rows, cols)` q/k matrix of `heads` heads reads file row:
/// within a head of `d` rows, HF row `s·d/2 + j` (rotary half `s`, pair `j`) is row `2j + s`.
pub fn unpermuted_row(r: usize, heads: usize, rows: usize) -> usize {
    let d = rows / heads.max(1);
    if d < 2 {
        return r;
    }
    let (head, within) = (r / d, r % d);
    let (s, j) = (within / (d / 2), within % (d / 2));
    head * d + 2 * j + s
}

fn disk_type(t: GgmlDType) -> DiskType {
    match t {
        GgmlDType::F32 => DiskType::F32,
        GgmlDType::F16 => DiskType::F16,
        GgmlDType::BF16 => DiskType::Bf16,
        t => DiskType::Ggml(t),
    }
}

/// Index every tensor of a GGUF file under its HF name, checking sizes against `map`.
pub fn index(
    path: &Path,
    map: &[u8],
    content: &Content,
    layout: &GgufLayout,
) -> Result<HashMap<String, Entry>, WeightsError> {
    let tensor_err = |name: &str, message: String| WeightsError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let mut index = HashMap::new();
    for (name, info) in &content.tensor_infos {
        let hf = hf_name(name).ok_or_else(|| {
            tensor_err(
                name,
                "no Hugging Face counterpart in Aisle's GGUF name table (an unsupported architecture?)".into(),
            )
        })?;
        let shape = info.shape.dims().to_vec();
        let (start, end) = byte_range(&shape, info.ggml_dtype, content.tensor_data_offset, info.offset)
            .map_err(|m| tensor_err(name, m))?;
        if end > map.len() as u64 {
            return Err(tensor_err(
                name,
                format!(
                    "needs bytes {start}..{end} but the file has only {} (truncated download?)",
                    map.len()
                ),
            ));
        }
        let permute_heads = match (layout.permute_qk, hf.rsplit('.').nth(1)) {
            (Some((q, _)), Some("q_proj")) => Some(q),
            (Some((_, kv)), Some("k_proj")) => Some(kv),
            _ => None,
        };
        if let Some(h) = permute_heads {
            let rows = shape.first().copied().unwrap_or(0);
            if h == 0 || !rows.is_multiple_of(h) || !(rows / h).is_multiple_of(2) {
                return Err(tensor_err(
                    name,
                    format!("{rows} rows do not split into {h} heads of even size"),
                ));
            }
        }
        let entry = Entry {
            file: 0,
            dtype: disk_type(info.ggml_dtype),
            shape,
            start: start as usize,
            end: end as usize,
            permute_heads,
        };
        if index.insert(hf.clone(), entry).is_some() {
            return Err(tensor_err(name, format!("a second tensor maps to `{hf}`")));
        }
    }
    Ok(index)
}

/// The byte range of a tensor, with every product and sum checked.
fn byte_range(shape: &[usize], t: GgmlDType, data: u64, offset: u64) -> Result<(u64, u64), String> {
    let elems = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let (block, size) = (t.block_size(), t.type_size());
    let row = shape.last().copied().unwrap_or(1);
    if !row.is_multiple_of(block) {
        return Err(format!(
            "rows of {row} values are not whole {} blocks of {block}",
            ggml_name(t)
        ));
    }
    let bytes = (elems / block)
        .checked_mul(size)
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let start = data
        .checked_add(offset)
        .ok_or_else(|| format!("offset {offset} overflows"))?;
    let end = start
        .checked_add(bytes as u64)
        .ok_or_else(|| format!("offset {offset} + {bytes} bytes overflows"))?;
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_of_a_layer() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.bias").as_deref(),
            Some("model.layers.0.mlp.down_proj.bias")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }

    /// The inverse of llama.cpp's `permute`: reshape(heads, 2, d/2).swapaxes(1, 2).
    #[test]
    fn unpermuting_inverts_llama_cpp_permute() {
        let (heads, d) = (3, 8);
        let rows = heads * d;
        let permuted: Vec<usize> = (0..rows)
            .map(|g| {
                let (h, w) = (g / d, g % d);
                h * d + (w % 2) * (d / 2) + w / 2
            })
            .collect(); // file row g holds HF row permuted[g]
        for r in 0..rows {
            assert_eq!(permuted[unpermuted_row(r, heads, rows)], r);
        }
    }
}
