#!/usr/bin/env bash
# Issue 12: the hft preset with Kite ticker frames beside the native JSON
# and rkyv frames, interleaved in one sitting (each round runs the three
# formats in turn, so a noisy minute hits all of them). Server on CPU 0,
# harness on CPU 1; 10 clients × 500 of 1,000 tokens, 100k ticks/s, every
# client in quote mode (the native default; Kite's subscribe default).
#
# Results: perf/kite/<format>-<round>.json and perf/kite/summary.md
# (medians: bytes per message, msgs/s, server CPU, p50/p99/p99.9, loss).
#
# Usage: perf/kite.sh [ROUNDS] [SECS]   (defaults 5 rounds, 8 s measured after 2 s warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-8}
cargo build --release --quiet
BIN=target/release/tickcast
OUT=perf/kite
mkdir -p "$OUT"
rm -f "$OUT"/*.json
for r in $(seq 1 "$ROUNDS"); do
    for f in kite json rkyv; do
        "$BIN" bench --spawn --scenario hft --format "$f" --server-cpus 0 --load-cpus 1 \
            --secs "$SECS" --warmup 2 --json --label "hft-$f" > "$OUT/$f-$r.json"
    done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
rows = []
for f in ("kite", "json", "rkyv"):
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{f}-*.json"))]
    med = lambda xs: statistics.median(xs)
    bpm = med([r["bytes_per_sec"] / r["msgs_per_sec"] for r in runs])
    rows.append((f, len(runs), bpm, med([r["msgs_per_sec"] for r in runs]), med([r["server_cpu"] for r in runs]),
                 med([r["latency_ns"]["p50"] for r in runs]) / 1e3, med([r["latency_ns"]["p99"] for r in runs]) / 1e3,
                 med([r["latency_ns"]["p99.9"] for r in runs]) / 1e3, max(r["loss_pct"] for r in runs)))
with open(f"{out}/summary.md", "w") as s:
    s.write("| format | runs | bytes/msg | msgs/s | server CPU | p50 µs | p99 µs | p99.9 µs | worst loss % |\n|---|---|---|---|---|---|---|---|---|\n")
    for f, n, bpm, mps, cpu, p50, p99, p999, loss in rows:
        s.write(f"| {f} | {n} | {bpm:.1f} | {mps:,.0f} | {cpu:.3f} | {p50:.1f} | {p99:.1f} | {p999:.1f} | {loss:.4f} |\n")
print(open(f"{out}/summary.md").read())
PY
