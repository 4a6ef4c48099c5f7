#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (golden numerics, engine, static-shape
# executor, in-process HTTP), the Neuron backend against the fake libnrt, then the
# end-to-end tests against a real server with the openai SDK. The real-model tests need
# scripts/fetch_models.sh's downloads (cached under target/models; a re-run fetches nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_models.sh
cargo test --release --locked
cargo test --release --locked --features neuron --test neuron
scripts/test_e2e.sh
