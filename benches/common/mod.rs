//! Shared by the benchmarks: which model they run.

use std::path::PathBuf;

/// `AISLE_BENCH_MODEL=DIR`, else `target/bench-models/smollm2-135m` (made by
/// `scripts/make_bench_model.py`) when present, else the tiny `tests/fixtures/llama3`.
pub fn model_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let smol = root.join("target/bench-models/smollm2-135m");
    match std::env::var_os("AISLE_BENCH_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None if smol.join("model.safetensors").exists() => smol,
        None => root.join("tests/fixtures/llama3"),
    }
}
