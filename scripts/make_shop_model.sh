#!/usr/bin/env bash
# Regenerate the shipped shopping model from nothing but this repository:
#   catalog -> QA corpus + held-out eval set -> byte-level BPE tokenizer -> training (CPU)
# then score it with `aisle eval` in-process. Deterministic for a given SEED on this machine
# class (torch on 2 threads); training takes about 47 minutes on the 2-core CI machine.
#
#   scripts/make_shop_model.sh [OUT_DIR]      (default: models/shop-tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-models/shop-tiny}
SEED=${SEED:-7}
EPOCHS=${EPOCHS:-7.5}
WORK=target/shop
[ -x .venv/bin/python ] || scripts/setup_python.sh
PY=.venv/bin/python
mkdir -p "$OUT/eval" "$WORK"
$PY scripts/shop/catalog.py --seed "$SEED" --out "$OUT/catalog.json"
$PY scripts/shop/qa.py --catalog "$OUT/catalog.json" --corpus "$WORK/corpus.jsonl" --eval-dir "$OUT/eval" --seed "$SEED"
$PY scripts/shop/tokenizer.py --corpus "$WORK/corpus.jsonl" --out "$OUT"
$PY scripts/shop/train.py --corpus "$WORK/corpus.jsonl" --tok "$OUT" --heldout "$OUT/eval/heldout.jsonl" \
    --out "$OUT" --seed "$SEED" --epochs "$EPOCHS" --bf16 2>&1 | grep --line-buffered -v "Writing model shards"
cargo run --release --locked -- eval --model "$OUT" --json > "$WORK/eval.json"
cargo run --release --locked -- eval --model "$OUT"
