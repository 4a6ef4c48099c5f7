#!/usr/bin/env bash
# Create the project's Python environment (.venv, git-ignored) with the pinned packages that
# scripts/ need. Torch from PyPI is large (several GB with its CUDA wheels): only run this to
# regenerate fixtures, never in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r scripts/requirements-golden.txt
echo "ready: .venv/bin/python scripts/make_golden.py"
