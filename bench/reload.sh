#!/usr/bin/env bash
# Benchmark of hot reload on the validate corpus (1,000 rules, 100 sequences,
# 100 templates in 100 YAML files): save → new version running.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
python3 bench/gen_validate_corpus.py "$corpus"
python3 bench/reload.py ./target/release/dealflow "$corpus"
