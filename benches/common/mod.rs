//! Shared by the benchmarks: which model they run.

use std::path::PathBuf;

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
pub fn load_model() -> aisle::runtime::LoadedModel {
    let path = model_path();
    eprintln!("bench model: {}", path.display());
    let spec = path.to_str().expect("a UTF-8 model path");
    aisle::runtime::LoadedModel::load(spec).unwrap_or_else(|e| panic!("bench model: {e}"))
}
