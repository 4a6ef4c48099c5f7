//! `aisle inspect`: a model's resolved configuration, size and memory footprint.
//!
//! Owns: the report's rows. Must not: compute sizes itself (the backends' formats do).

use std::io::Write;

use anyhow::Result;

use super::args::ModelArgs;
use aisle::backend::{compiled_backends, DeviceSpec, ExecutorOptions};
use aisle::runtime::LoadedModel;

pub fn run(args: ModelArgs) -> Result<()> {
    let model = args.load()?;
    let mut text = String::new();
    let mut row = |label: &str, value: String| text.push_str(&format!("{label:<22}{value}\n"));
    config_rows(&model, &mut row);
    memory_rows(&args, &model, &mut row);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The resolved configuration.
fn config_rows(model: &LoadedModel, row: &mut impl FnMut(&str, String)) {
    let c = &model.config;
    match &model.gguf {
        Some(file) => row("model file", format!("{} (GGUF)", file.display())),
        None => row("model directory", model.dir.display().to_string()),
    }
    row("family", c.family.name().to_string());
    row("layers", c.num_layers.to_string());
    row(
        "hidden / intermediate",
        format!("{} / {}", c.hidden_size, c.intermediate_size),
    );
    row(
        "heads / kv heads",
        format!("{} / {} (head_dim {})", c.num_heads, c.num_kv_heads, c.head_dim),
    );
    row("vocab", c.vocab_size.to_string());
    row("context", c.max_position_embeddings.to_string());
    row("rope", format!("theta {} scaling {:?}", c.rope_theta, c.rope_scaling));
    row("tied embeddings", c.tie_word_embeddings.to_string());
    row("qkv bias / qk norm", format!("{} / {}", c.qkv_bias, c.qk_norm));
    row("sliding window", format!("{:?}", c.sliding_window));
    row("eos token ids", format!("{:?}", model.eos_token_ids()));
    row(
        "chat template",
        if model.tokenizer.has_chat_template() {
            "yes"
        } else {
            "no"
        }
        .to_string(),
    );
    row("weights on disk", model.weights.describe_disk_types());
}

/// Sizes on the chosen device: the native backend's packed sizes come from its formats
/// (panel padding included); other devices hold the weights in the run dtype.
fn memory_rows(args: &ModelArgs, model: &LoadedModel, row: &mut impl FnMut(&str, String)) {
    let c = &model.config;
    let dtype = args.dtype.0;
    let opts = args.executor_options(ExecutorOptions::default().block_size, 0);
    let params = c.num_parameters();
    let bytes = match opts.device {
        DeviceSpec::Cpu => aisle::backend::cpu::weight_bytes(&model.weights, c, dtype, args.quantize),
        _ => params * dtype.size_in_bytes(),
    };
    let kv_per_token = 2 * c.num_layers * c.num_kv_heads * c.head_dim * opts.kv_dtype().size_in_bytes();
    row("parameters", format!("{params} ({:.2} M)", params as f64 / 1e6));
    row("run dtype", format!("{dtype:?}"));
    let quantize = args.quantize.map_or("unset".into(), |q| format!("{q:?}"));
    let formats = match opts.device {
        DeviceSpec::Cpu => aisle::backend::cpu::weight_formats(&model.weights, c, dtype, args.quantize),
        _ => format!("{dtype:?} (weights dequantized)"),
    };
    row("packed formats", format!("{formats} (--quantize {quantize})"));
    if opts.device == DeviceSpec::Cpu {
        let isa = aisle::backend::cpu::Isa::get().describe();
        let threads = if args.threads == 0 {
            aisle::backend::cpu::default_threads()
        } else {
            args.threads
        };
        row("cpu kernels", format!("{isa}, {threads} threads"));
    }
    row(
        "weights in memory",
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64),
    );
    row("KV cache per token", format!("{:.1} KiB", kv_per_token as f64 / 1024.0));
    let full = (kv_per_token * c.max_position_embeddings) as f64 / (1 << 20) as f64;
    row("KV cache, full ctx", format!("{full:.2} MiB"));
    row("backends compiled in", compiled_backends().join(", "));
}
