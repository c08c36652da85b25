#!/usr/bin/env bash
# Benchmark of `dealflow validate` on a generated folder with 1,000 rules,
# 100 sequences and 100 templates in 100 files. Prints the median wall time
# over RUNS runs and the peak resident memory of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-21}
cargo build --release --quiet
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
python3 bench/gen_validate_corpus.py "$corpus"
./target/release/dealflow validate "$corpus" | tail -1
times=()
for _ in $(seq "$RUNS"); do
  start=$(date +%s%N)
  ./target/release/dealflow validate "$corpus" > /dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000 )))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
min=$(printf '%s\n' "${times[@]}" | sort -n | head -1)
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
rss=$(/usr/bin/time -f '%M' ./target/release/dealflow validate "$corpus" 2>&1 >/dev/null | tail -1)
echo "validate: runs=$RUNS median=$((median / 1000)).$(( (median % 1000) / 100 )) ms min=$((min / 1000)) ms max=$((max / 1000)) ms peak_rss=${rss} KiB"
