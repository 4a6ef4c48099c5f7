#!/usr/bin/env bash
# Install the CUDA compiler and headers from PyPI (no GPU, no driver needed) into
# target/cuda/py, write link-time stubs of the GPU-only libraries, then print the
# environment that `cargo build --features cuda` needs.
#
#   eval "$(scripts/cuda_env.sh)"      # once per shell
#   cargo build --release --features cuda
#
# PyPI's CUDA 12 nvcc wheels ship only ptxas; CUDA 13's `nvidia-cuda-nvcc` ships the whole
# nvcc driver, so that is the toolkit used here (13.0: the oldest 13.x, for older drivers).
# CUDA_COMPUTE_CAP defaults to 90 (H100/H200); set it before running this for other GPUs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/target/cuda/py"
cuda="$py/nvidia/cu13"
if [ ! -x "$cuda/bin/nvcc" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$py" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" \
    "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-cccl==13.0.*" >&2
fi
[ -x "$cuda/bin/nvcc" ] || { echo "cuda_env.sh: nvcc did not install under $cuda" >&2; exit 1; }
# Link-time stubs for the libraries only a GPU machine has (see scripts/cuda_stubs.py), and
# the unversioned name the linker looks for.
if [ ! -f "$cuda/lib/libcuda.so" ]; then
  cudarc=$(cd "$root" && cargo metadata --format-version 1 --features cuda 2>/dev/null |
    python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
  python3 "$root/scripts/cuda_stubs.py" "$cudarc" "$cuda/lib"
fi
ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"
echo "export CUDA_ROOT='$cuda'"
echo "export CUDA_PATH='$cuda'"
echo "export PATH='$cuda/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP=\"\${CUDA_COMPUTE_CAP:-90}\""
