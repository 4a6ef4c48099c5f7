#!/usr/bin/env bash
# End-to-end tests against a real `aisle serve` on loopback: the official `openai` Python SDK
# (chat and completions, streaming and not, usage, stop, seed, logprobs, error classes), a
# bounded load test (64 streaming clients, half disconnecting early) and SIGTERM draining;
# the real SmolLM2 GGUF served and answering as transformers does (tests/e2e_gguf.py);
# tool calling and structured outputs with the openai SDK, LangChain and LlamaIndex; the
# grounded answers through the built-in tools with a live catalog edit (tests/e2e_grounded.py);
# README's examples as written (tests/e2e_readme.py); lm-evaluation-harness's local-completions
# and local-chat-completions (tests/e2e_lm_eval.py).
# Installs its pinned Python packages into target/e2e-venv, target/e2e-li-venv and
# target/e2e-lm-venv (PyPI only); needs no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/e2e-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-e2e.txt
cargo build --release --locked --quiet --features neuron # the binary scripts/test.sh tested
"$venv/bin/python" tests/e2e_openai.py target/release/aisle tests/fixtures/mistral
"$venv/bin/python" tests/e2e_gguf.py target/release/aisle \
  target/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf tests/fixtures/smollm2-gguf/golden.json
"$venv/bin/python" tests/e2e_tools.py target/release/aisle
"$venv/bin/python" tests/e2e_grounded.py target/release/aisle
"$venv/bin/python" tests/e2e_readme.py target/release/aisle
li=target/e2e-li-venv
if [ ! -x "$li/bin/python" ]; then
  python3 -m venv "$li"
fi
"$li/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-e2e-llamaindex.txt
"$li/bin/python" tests/e2e_llamaindex.py target/release/aisle
lm=target/e2e-lm-venv
if [ ! -x "$lm/bin/python" ]; then
  python3 -m venv "$lm"
fi
"$lm/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-e2e-lm-eval.txt
"$lm/bin/python" tests/e2e_lm_eval.py target/release/aisle
