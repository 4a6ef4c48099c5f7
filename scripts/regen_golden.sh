#!/usr/bin/env bash
# Regenerate tests/fixtures/* from scratch and show whether anything changed. The script is
# deterministic (fixed seeds, one thread), so a clean checkout should report no changes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup_python.sh
.venv/bin/python scripts/make_golden.py
.venv/bin/python scripts/make_tool_fixture.py
git status --short tests/fixtures
