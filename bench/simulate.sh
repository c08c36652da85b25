#!/usr/bin/env bash
# Benchmark of `dealflow simulate`: 1,000 leads arriving over a working day
# run through the default workflows (5-touch cold outreach, scoring, stalls)
# for 30 days of virtual time. Prints the median wall time over RUNS runs,
# the peak resident memory, and how many timeline entries one run printed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
LEADS=${LEADS:-1000}
cargo build --release --quiet
events=$(mktemp)
trap 'rm -f "$events"' EXIT
python3 - "$LEADS" > "$events" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    minutes = (i * 480) // int(sys.argv[1])
    zone = ["America/New_York", "America/Chicago", "Europe/London", "America/Los_Angeles"][i % 4]
    print(json.dumps({"at": f"+{minutes * 60}s", "type": "form.submitted",
        "record": {"kind": "lead", "id": f"L{i}", "fields": {"email": f"p{i}@prospect{i % 50}.example",
        "name": f"Prospect {i}", "company": f"Co {i % 50}", "title": "VP Sales" if i % 3 == 0 else "Analyst",
        "timezone": zone}}}))
PY
run() {
  ./target/release/dealflow simulate --workflows workflows --events "$events" \
    --start 2026-03-02T08:00:00-05:00 --until 30d
}
lines=$(run | wc -l)
times=()
for _ in $(seq "$RUNS"); do
  start=$(date +%s%N)
  run > /dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
rss=$(/usr/bin/time -f '%M' bash -c "$(declare -f run); events=$events; run > /dev/null" 2>&1 | tail -1)
echo "simulate: leads=$LEADS days=30 runs=$RUNS median=${median} ms min=$(printf '%s\n' "${times[@]}" | sort -n | head -1) ms max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1) ms peak_rss=${rss} KiB timeline_lines=$lines"
