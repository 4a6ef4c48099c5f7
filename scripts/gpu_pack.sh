#!/usr/bin/env bash
# Build the `--features cuda` binaries that scripts/gpu_check.sh runs on a GPU machine (which
# has no Rust toolchain and no network), strip them and xz them into .gpu/ (git-ignored), small
# enough to travel with the working tree:
#
#   scripts/gpu_pack.sh        # then, on the GPU machine: scripts/gpu_check.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda_env.sh)"
tests=(cuda suite)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
json=$(cargo test --release --locked --features cuda "${args[@]}" --no-run --message-format=json)
rm -rf .gpu && mkdir -p .gpu
for t in "${tests[@]}"; do
  exe=$(jq -r --arg t "$t" 'select(.reason == "compiler-artifact" and .target.name == $t
        and (.target.kind | index("test"))) | .executable' <<<"$json" | tail -1)
  strip --strip-all -o ".gpu/$t" "$exe"
done
strip --strip-all -o .gpu/aisle target/release/aisle
xz -T2 -9e .gpu/cuda .gpu/suite .gpu/aisle
pwd > .gpu/built_in
ls -la .gpu
