#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (golden numerics, engine, in-process
# HTTP), then the end-to-end tests against a real server with the openai SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked
scripts/test_e2e.sh
