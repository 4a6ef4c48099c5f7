#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (golden numerics, engine, static-shape
# executor, in-process HTTP, the fuzz targets' replay), the Neuron backend against the fake
# libnrt, the corrupted-model-directory run, then the
# end-to-end tests against a real server with the openai SDK. The real-model tests need
# scripts/fetch_models.sh's downloads (cached under target/models; a re-run fetches nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_models.sh
cargo test --release --locked
cargo test --release --locked --features neuron --test neuron
# Corrupted model directories (~600, one defect each) through `aisle generate`: 0 panics,
# 0 hangs, 0 blowups (tests/fuzz_models.py; the binary is the one cargo test just built).
python3 tests/fuzz_models.py target/release/aisle
scripts/test_e2e.sh
