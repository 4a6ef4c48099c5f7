#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (golden numerics, engine, static-shape
# executor, in-process HTTP, the fuzz targets' replay, the Neuron backend against the fake
# libnrt), the corrupted-model-directory run, then the
# end-to-end tests against a real server with the openai SDK. The real-model tests need
# scripts/fetch_models.sh's downloads (cached under target/models; a re-run fetches nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo "[test.sh] ${SECONDS}s: $*" >&2; }
stage fetch models
scripts/fetch_models.sh
stage cargo test
# One release build with the `neuron` feature runs every test, the Neuron backend's included:
# the feature only adds that backend (loaded at run time), so the default build's behaviour is
# all in it, and a second release build of the crate without it (a minute on 2 cores) would
# add only the `not compiled` stub. CI lints the default build with clippy.
cargo test --release --locked --features neuron
# Corrupted model directories (~600, one defect each) through `aisle generate`: 0 panics,
# 0 hangs, 0 blowups (tests/fuzz_models.py; the binary is the one cargo test just built).
stage corrupted model directories
python3 tests/fuzz_models.py target/release/aisle
stage end-to-end
scripts/test_e2e.sh
stage done
