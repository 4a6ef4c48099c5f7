//! GGUF files in the block types the real model does not ship in: Q4_K_M (llama.cpp's mix of
//! Q4_K and Q6_K, with its fallbacks for rows that are not a multiple of 256: Q5_0 and Q8_0),
//! Q5_1 and Q5_K, written from the real SmolLM2-135M-Instruct's dequantized weights with
//! candle's quantizers. Each must load and run, and its conversion cost is measured: the
//! as-stored run (q4_k / q8_0 panels, int8 activations) against the `--quantize none` f32
//! run of the same file, which `real_model.rs` holds equal to transformers.

use crate::common;

use aisle::backend::{DeviceSpec, Quantize};
use aisle::runtime::LoadedModel;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use common::real::{greedy_runs, log_softmax, Run};

/// A mix: the block type wanted for each tensor name.
type Rule<'a> = &'a dyn Fn(&str) -> GgmlDType;

/// llama.cpp's type for a tensor under a mix: `k` for K-quant-able rows, `fallback` otherwise;
/// norms and the embedding table keep the file's types.
fn mixed(name: &str, cols: usize, rule: Rule) -> Option<GgmlDType> {
    if !name.ends_with(".weight") || name.contains("norm") || name == "token_embd.weight" {
        return None;
    }
    let t = rule(name);
    let fallback = match t {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K | GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    };
    Some(if cols.is_multiple_of(t.block_size()) {
        t
    } else {
        fallback
    })
}

/// Requantize the real model's matrices as `rule` says and write the file into `dir`.
fn write_mix(dir: &std::path::Path, label: &str, rule: Rule) -> std::path::PathBuf {
    let src_path = common::smollm2_gguf();
    let mut src = std::fs::File::open(&src_path).unwrap();
    let content = gguf_file::Content::read(&mut src).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .iter()
        .map(|name| {
            let qt = content.tensor(&mut src, name, &Device::Cpu).unwrap();
            let cols = *qt.shape().dims().last().unwrap();
            match mixed(name, cols, rule) {
                Some(t) if t != qt.dtype() => {
                    let f = qt.dequantize(&Device::Cpu).unwrap();
                    (name.to_string(), QTensor::quantize(&f, t).unwrap())
                }
                _ => (name.to_string(), qt),
            }
        })
        .collect();
    let meta: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = dir.join(format!("smollm2-{label}.gguf"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    gguf_file::write(&mut out, &meta, &refs).unwrap();
    path
}

/// (largest step-0 logprob error over the reference's top 20, greedy agreement, total).
fn cost(reference: &[Run], run: &[Run]) -> (f64, usize, usize) {
    let (mut worst, mut agree, mut total) = (0f64, 0, 0);
    for ((want, ref_logits), (got, logits)) in reference.iter().zip(run) {
        agree += got.iter().zip(want).take_while(|(a, b)| a == b).count();
        total += want.len();
        let (lr, lp) = (log_softmax(&ref_logits[0]), log_softmax(&logits[0]));
        let mut top: Vec<usize> = (0..lr.len()).collect();
        top.sort_by(|&a, &b| lr[b].total_cmp(&lr[a]));
        for &i in &top[..20] {
            worst = worst.max((lr[i] - lp[i]).abs());
        }
    }
    (worst, agree, total)
}

#[test]
fn q4_k_m_q5_1_and_q5_k_files_run_and_their_conversion_cost_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    // llama.cpp's Q4_K_M: attn_v and ffn_down get Q6_K in the first and last eighth of the
    // layers and every third in between (`use_more_bits`), Q4_K elsewhere. Only ffn_down
    // (1,536 columns) is K-quant-able here: the rest fall back to Q5_0 / Q8_0.
    let q4_k_m = |n: &str| {
        let layer: usize = n.split('.').nth(1).and_then(|i| i.parse().ok()).unwrap_or(0);
        let more_bits = !(30 / 8..7 * 30 / 8).contains(&layer) || (layer - 30 / 8) % 3 == 2;
        match (n.contains("attn_v") || n.contains("ffn_down")) && more_bits {
            true => GgmlDType::Q6K,
            false => GgmlDType::Q4K,
        }
    };
    let mixes: [(&str, Rule, &str); 3] = [
        ("Q4_K_M", &q4_k_m, "Q4K ×16, Q8_0 ×105"),
        ("Q5_1", &|_| GgmlDType::Q5_1, "Q8_0 ×121"),
        ("Q5_K", &|_| GgmlDType::Q5K, "Q8_0 ×121"),
    ];
    for (label, rule, formats) in mixes {
        let path = write_mix(dir.path(), label, rule);
        let model = LoadedModel::load(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{label}: {e}"));
        let on_disk = model.weights.describe_disk_types();
        let packed = aisle::backend::cpu::weight_formats(&model.weights, &model.config, DType::F32, None);
        assert_eq!(packed, formats, "{label}: on disk {on_disk}");
        let reference = greedy_runs(&model, DeviceSpec::Cpu, DType::F32, Some(Quantize::Dequantize));
        let (worst, agree, total) = cost(&reference, &greedy_runs(&model, DeviceSpec::Cpu, DType::F32, None));
        eprintln!(
            "{label} (on disk {}): as stored ({packed}) vs --quantize none: step-0 top-20 logprob error {worst:.3}, greedy agreement {agree}/{total}",
            on_disk
        );
        assert!(worst < 1.0, "{label}: step-0 logprobs off by {worst}");
        assert!(agree * 2 >= total, "{label}: greedy agreement {agree}/{total}");
    }
}
