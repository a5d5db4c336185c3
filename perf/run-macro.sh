#!/usr/bin/env bash
# Macro benchmarks: every preset twice (server pinned to CPU 0, harness to
# CPU 1): JSON and rkyv for hft; for hft and retail the idle strategies
# (park, hybrid, spin) and where the feed is read (--feed-poll worker, the
# default with one worker, vs thread). Results as JSON in perf/macro/, one
# percentile plot per scenario, the variants of hft and retail on one chart
# each (from their --hlog files), broadcast --find-max; then a summary table.
#
#   feeder+clients (CPU 1) ──UDP TCF1──► tickcast worker+feed (CPU 0) ──ws──► clients (CPU 1)
#
# Usage: perf/run-macro.sh [SECS]      (default 5 s measured after 2 s warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
cargo build --release --quiet
B=target/release/tickcast
OUT=perf/macro
mkdir -p "$OUT"
run() { # name, extra args...
    local name=$1; shift
    for i in 1 2; do
        "$B" bench --spawn --server-cpus 0 --load-cpus 1 --secs "$SECS" --warmup 2 --json --label "$name-$i" \
            --hlog "$OUT/$name-$i.hlog" "$@" > "$OUT/$name-$i.json"
    done
}
run hft-json        --scenario hft
run hft-rkyv        --scenario hft --format rkyv
run hft-rkyv-thread --scenario hft --format rkyv --server-arg=--feed-poll --server-arg=thread
run hft-rkyv-hybrid --scenario hft --format rkyv --server-arg=--idle --server-arg=hybrid
run hft-rkyv-spin   --scenario hft --format rkyv --server-arg=--idle --server-arg=spin
run retail          --scenario retail
run retail-hybrid   --scenario retail --server-arg=--idle --server-arg=hybrid
run broadcast       --scenario broadcast
# The variants of a scenario side by side (each run 1, from its hlog).
"$B" bench --plot "$OUT/hft-variants.svg" $(for v in json rkyv rkyv-thread rkyv-hybrid rkyv-spin; do echo --plot-hlog "$OUT/hft-$v-1.hlog"; done)
"$B" bench --plot "$OUT/retail-variants.svg" --plot-hlog "$OUT/retail-1.hlog" --plot-hlog "$OUT/retail-hybrid-1.hlog"
for sc in hft retail broadcast; do
    "$B" bench --spawn --server-cpus 0 --load-cpus 1 --secs "$SECS" --warmup 2 --scenario $sc --plot "$OUT/$sc.svg" --json > "$OUT/$sc-plot.json"
done
"$B" bench --spawn --server-cpus 0 --load-cpus 1 --secs "$SECS" --warmup 2 --scenario broadcast --format rkyv --find-max --rate 10000 --slo 5ms \
    --plot "$OUT/broadcast-find-max.svg" --json > "$OUT/broadcast-find-max.json"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def us(ns): return f"{ns/1000:.0f} µs" if ns < 1e6 else f"{ns/1e6:.2f} ms"
print("| run | rate | clients×subs/tokens | delivered/expected | loss | msgs/s | p50 | p90 | p99 | p99.9 | max | feeder lag p50 / max | harness CPU | server CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(out.glob("*-[12].json")):
    r = json.loads(f.read_text()); l = r["latency_ns"]
    print(f"| {f.stem} | {r['rate']:,} | {r['clients']}×{r['subs']}/{r['tokens']} | {r['delivered']:,}/{r['expected']:,} | {r['loss_pct']:.3f}% | "
          f"{r['msgs_per_sec']:,.0f} | {us(l['p50'])} | {us(l['p90'])} | {us(l['p99'])} | {us(l['p99.9'])} | {us(l['max'])} | "
          f"{us(r['feeder_lag_ns']['p50'])} / {us(r['feeder_lag_ns']['max'])} | {r['client_cpu']:.2f} | {r['server_cpu']:.2f} |")
fm = json.loads((out / "broadcast-find-max.json").read_text())
fm = fm if isinstance(fm, list) else [fm]
print("\nbroadcast --find-max (rkyv):")
for r in fm:
    l = r["latency_ns"]
    print(f"  {r['rate']:>8,} ticks/s → {r['msgs_per_sec']:>12,.0f} msgs/s, loss {r['loss_pct']:.3f}%, p99 {us(l['p99'])}, harness CPU {r['client_cpu']:.2f}")
PY
