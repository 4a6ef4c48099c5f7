//! Build script. Under the `cuda` feature it compiles every `kernels/*.cu` to PTX with nvcc
//! (`$OUT_DIR/<name>.ptx`, embedded by `src/backend/cuda`); without it, it does nothing.
//! The PTX targets `compute_$CUDA_COMPUTE_CAP` (default 80) and is JIT-compiled by the
//! driver for the GPU it runs on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap: String = std::env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "80".into())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    for src in sources {
        compile(&nvcc, &src, &out, &cap);
    }
}

fn compile(nvcc: &str, src: &Path, out: &Path, cap: &str) {
    let stem = src.file_stem().expect("a .cu file").to_string_lossy();
    let ptx = out.join(format!("{stem}.ptx"));
    let result = Command::new(nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&ptx)
        .arg(src)
        .output();
    match result {
        Err(e) => panic!(
            "cannot run `{nvcc}` ({e}). The cuda feature needs the CUDA compiler: run \
             `eval \"$(scripts/cuda_env.sh)\"` (installs it from PyPI) and build again"
        ),
        Ok(o) if !o.status.success() => panic!(
            "nvcc failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
}
