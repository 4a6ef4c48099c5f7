//! Shared by the benchmarks: which model they run.

use std::path::PathBuf;

use aisle::backend::Quantize;
use aisle::runtime::LoadedModel;
use candle_core::DType;

/// Every benchmarked format: name, run dtype, `--quantize`.
const FORMATS: [(&str, DType, Option<Quantize>); 5] = [
    ("as-stored", DType::F32, None),
    ("f32", DType::F32, Some(Quantize::Dequantize)),
    ("bf16", DType::BF16, Some(Quantize::Dequantize)),
    ("q8_0", DType::F32, Some(Quantize::Q8_0)),
    ("q4_k", DType::F32, Some(Quantize::Q4K)),
];

/// The formats of `names` to run, narrowed by `AISLE_BENCH_FORMATS=f32,q8_0`; `as-stored` (a
/// GGUF file's own block formats) only for GGUF models, where for safetensors it would be
/// the f32 row again.
pub fn formats(model: &LoadedModel, names: &[&str]) -> Vec<(&'static str, DType, Option<Quantize>)> {
    let wanted = std::env::var("AISLE_BENCH_FORMATS").unwrap_or_default();
    FORMATS
        .into_iter()
        .filter(|(name, ..)| names.contains(name))
        .filter(|(name, ..)| *name != "as-stored" || model.gguf.is_some())
        .filter(|(name, ..)| wanted.is_empty() || wanted.split(',').any(|w| w == *name))
        .collect()
}

/// `AISLE_BENCH_MODEL=PATH` (a directory or a .gguf file); else the real SmolLM2-135M-Instruct
/// GGUF that `scripts/fetch_models.sh` extracts to `target/models`; else the SmolLM2-shaped
/// random-weight model `scripts/make_bench_model.py` writes; else the tiny `tests/fixtures/llama3`.
pub fn model_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let real = root.join("target/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let random = root.join("target/bench-models/smollm2-135m");
    match std::env::var_os("AISLE_BENCH_MODEL") {
        Some(path) => PathBuf::from(path),
        None if real.exists() => real,
        None if random.join("model.safetensors").exists() => random,
        None => root.join("tests/fixtures/llama3"),
    }
}

/// The bench model, loaded; its path goes to stderr so every report names it.
pub fn load_model() -> LoadedModel {
    let path = model_path();
    eprintln!("bench model: {}", path.display());
    let spec = path.to_str().expect("a UTF-8 model path");
    LoadedModel::load(spec).unwrap_or_else(|e| panic!("bench model: {e}"))
}
