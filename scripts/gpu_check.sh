#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine that has no Rust toolchain and no network: run the
# `--features cuda` test binaries and the `aisle` binary built elsewhere (by
# scripts/gpu_pack.sh, which xz-compresses them into .gpu/), from the repository root.
#
#   scripts/gpu_check.sh [OUT_DIR]      # OUT_DIR gets log.txt
#
# It finds the CUDA 13 libraries (cuBLAS, cuRAND, NVRTC, runtime) that Python wheels installed
# on that machine, runs tests/cuda.rs (our kernels against their CPU references, then the model
# on --device cuda against the CPU reference pass), the golden, batching and liveness tests
# with AISLE_TEST_DEVICE=cuda, our kernels under compute-sanitizer, and `aisle generate` and
# `aisle bench-serve` on --device cuda.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lib_dirs=$(find / -xdev \( -name 'libcublas.so.13*' -o -name 'libcurand.so.10*' -o -name 'libnvrtc.so.13*' \
  -o -name 'libcudart.so.13*' -o -name 'libcublasLt.so.13*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="${lib_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

step unpack
mkdir -p target/release
for f in .gpu/*.xz; do
  [ -f "$f" ] || continue
  xz -dc "$f" > "target/release/$(basename "$f" .xz)" && chmod +x "target/release/$(basename "$f" .xz)"
done
# The test binaries find fixtures and the `aisle` binary through the source path they were
# built in (CARGO_MANIFEST_DIR, CARGO_BIN_EXE_aisle).
built_in=$(cat .gpu/built_in)
if [ "$built_in" != "$PWD" ]; then
  mkdir -p "$(dirname "$built_in")" && ln -sfn "$PWD" "$built_in"
fi
ls -la target/release
ldd target/release/aisle | grep -E 'cuda|cublas|curand|nvrtc|not found'

bin=target/release
has() { [ -x "$bin/$1" ]; }
# serve_and_bench PORT LOG PROMPTS_PER_CLIENT [serve flags...]: `aisle serve --device cuda:0`,
# wait until the model is loaded, bench-serve at concurrency 1 and 32, SIGTERM.
serve_and_bench() {
  local port=$1 log=$2 per=$3 pid c
  shift 3
  "$bin/aisle" serve --device cuda:0 --port "$port" "$@" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 240); do curl -sf "localhost:$port/v1/models" > /dev/null && break; sleep 0.5; done
  for c in 1 32; do
    echo "--- concurrency $c"
    "$bin/aisle" bench-serve --url "http://127.0.0.1:$port" --concurrency "$c" \
      --num-prompts $((c * per)) --input-len 128 --output-len 64 | grep -E 'Output token|Mean|P99|Failed'
  done
  kill -TERM "$pid"; wait "$pid"
  echo "serve exit $?"
  tail -2 "$log"
}
if has cuda; then
  step "tests/cuda.rs"
  "$bin/cuda" --test-threads 1
fi
if has suite; then
  step "tests/{golden,batching,liveness}.rs with AISLE_TEST_DEVICE=cuda"
  AISLE_TEST_DEVICE=cuda "$bin/suite" --test-threads 4 golden:: batching:: liveness::
fi
if has cuda && command -v compute-sanitizer > /dev/null; then
  step "kernels under compute-sanitizer memcheck"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/cuda" kernels_match --test-threads 1
  echo "compute-sanitizer exit $?"
fi
if has aisle; then
  step "aisle generate --device cuda:0 against --device cpu-reference"
  for dev in cuda:0 cpu-reference; do
    "$bin/aisle" generate --device "$dev" --chat --temperature 0 --max-tokens 40 \
      --prompt "What is the wattage of the Ironhand Edge N20?" > "$out/gen-${dev%%:*}.txt"
    echo "$dev: $(cat "$out/gen-${dev%%:*}.txt")"
  done
  cmp "$out/gen-cuda.txt" "$out/gen-cpu-reference.txt" && echo "same text on both devices"

  step "aisle serve --device cuda:0 + bench-serve"
  serve_and_bench 18080 "$out/serve.log" 8
fi
if has aisle && python3 -c "import transformers" 2> /dev/null; then
  # No real checkpoint can travel (the working tree is capped at 64 MiB), so the throughput
  # figure at real size uses random weights in SmolLM2-135M's shape, written by transformers
  # there, with shop-tiny's tokenizer (bench-serve sends token ids).
  step "SmolLM2-135M-shaped random model: bench-serve on --device cuda:0, f32 and bf16"
  m=/tmp/smollm2-shape
  python3 - "$m" <<'PY'
import shutil, sys, torch, transformers
out = sys.argv[1]
cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
transformers.LlamaForCausalLM(cfg).save_pretrained(out)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f"models/shop-tiny/{f}", out)
PY
  for dtype in f32 bf16; do
    echo "--- $dtype"
    serve_and_bench 18081 "$out/serve-$dtype.log" 4 --model "$m" --dtype "$dtype" \
      --kv-cache-mb 4096 --max-seqs 64
  done
fi
step done
