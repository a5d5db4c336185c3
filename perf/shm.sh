#!/usr/bin/env bash
# The shared-memory path (issue 10): ROUNDS rounds, each running every
# variant once in turn (interleaved, so a noisy minute hits all of them),
# then medians per variant. Server and feeder on CPU 0, readers (and the
# WebSocket clients, where there are any) on CPU 1:
#
#   feeder (CPU 0) ──UDP TCF1──► tickcast feed+worker (CPU 0) ──► region ──► reader process(es) (CPU 1)
#                                                             └──ws──► clients (CPU 1)
#
# Variants:
#   lat-spin, lat-hybrid, lat-park  100k ticks/s, one reader, no clients: latency
#   1m-spin                         1M ticks/s, one spinning reader: loss
#   5m-sim-spin, 5m-sim-park        the server's simulator at 5M ticks/s, two readers, no feeder
#   side-by-side                    the hft preset (10 clients × 500 of 1000, 100k/s) + one parked reader
#   hft-shm-on, hft-shm-off         the hft preset with and without --shm (no reader): the WebSocket path's cost
#
# Results: perf/shm/<variant>-<round>.json, perf/shm/summary.md (medians),
# perf/shm/latency.svg (round 1's curves).
#
# Usage: perf/shm.sh [ROUNDS] [SECS]     (defaults 5 rounds, 5 s measured after 2 s warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-5}
cargo build --release --quiet
B=target/release/tickcast
OUT=perf/shm
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.hlog
REGION=/dev/shm/tickcast-perf-off-$$
trap 'rm -f "$REGION" "$REGION.wait"' EXIT
bench() { # variant round args...   (round 1 also keeps its HdrHistogram log, for the chart)
    local v=$1 r=$2; shift 2
    local hlog=(); [ "$r" = 1 ] && hlog=(--hlog "$OUT/$v-1.hlog")
    "$B" bench --spawn --server-cpus 0 --secs "$SECS" --warmup 2 --json --label "$v" "${hlog[@]}" "$@" > "$OUT/$v-$r.json"
}
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r of $ROUNDS" >&2
    for w in spin hybrid park; do
        bench "lat-$w" "$r" --scenario hft --clients 0 --load-cpus 0 --shm-readers 1 --shm-wait $w --shm-cpus 1
    done
    bench 1m-spin "$r" --scenario hft --clients 0 --rate 1000000 --load-cpus 0 --shm-readers 1 --shm-wait spin --shm-cpus 1
    for w in spin park; do
        bench "5m-sim-$w" "$r" --source sim --clients 0 --rate 5000000 --tokens 1000 --shm-readers 2 --shm-wait $w --shm-cpus 1
    done
    bench side-by-side "$r" --scenario hft --load-cpus 1 --shm-readers 1 --shm-wait park --shm-cpus 1
    bench hft-shm-on "$r" --scenario hft --load-cpus 1 --server-arg=--shm --server-arg="$REGION"
    bench hft-shm-off "$r" --scenario hft --load-cpus 1
done
# The Python reader's cost per tick: the time poll() takes to hand over a
# tick, spinning, against a server's simulator at 100k ticks/s.
PYREGION=/dev/shm/tickcast-perf-py-$$
trap 'rm -f "$REGION" "$REGION.wait" "$PYREGION" "$PYREGION.wait"' EXIT
SRV_OUT=$(mktemp)
taskset -c 0 "$B" --listen 127.0.0.1:0 --openalgo-listen off --feed sim:rate=100000 --shm "$PYREGION" > "$SRV_OUT" 2>&1 &
SRV=$!
for _ in $(seq 1 100); do [ -e "$PYREGION" ] && break; sleep 0.1; done
for r in $(seq 1 "$ROUNDS"); do
    taskset -c 1 python3 clients/python/tickcast_shm.py "$PYREGION" --wait spin --bench 200000 > "$OUT/python-$r.json"
done
kill "$SRV"; wait "$SRV" || true; rm -f "$SRV_OUT"
"$B" bench --plot "$OUT/latency.svg" $(for v in lat-spin lat-hybrid lat-park side-by-side; do echo --plot-hlog "$OUT/$v-1.hlog"; done)
python3 - "$OUT" "$ROUNDS" > "$OUT/summary.md" <<'PY'
import json, pathlib, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def us(ns): return f"{ns/1000:.2f} µs" if ns < 1e5 else (f"{ns/1000:.0f} µs" if ns < 1e6 else f"{ns/1e6:.2f} ms")
def runs(v): return [json.loads((out / f"{v}-{r}.json").read_text()) for r in range(1, rounds + 1)]
med = statistics.median
print(f"Medians of {rounds} interleaved rounds (min–max in brackets).\n")
print("| variant | reader | loss (of schedule) | lost to laps | written/s | receipt→reader p50 | p90 | p99 | p99.9 | scheduled→reader p50 | p99 | reader CPU | server CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for v in ["lat-spin", "lat-hybrid", "lat-park", "1m-spin", "5m-sim-spin", "5m-sim-park", "side-by-side"]:
    rs = runs(v)
    for i in range(len(rs[0]["shm_readers"])):
        ss = [r["shm_readers"][i] for r in rs]
        def m(f): vals = [f(s) for s in ss]; return med(vals), min(vals), max(vals)
        def lat(k, q): a, lo, hi = m(lambda s: s[k][q]); return f"{us(a)} [{us(lo)}–{us(hi)}]"
        loss = m(lambda s: s["loss_pct"]); lap = m(lambda s: s["lap_loss_pct"]); wps = m(lambda s: s["written_per_sec"])
        cpu = m(lambda s: s["cpu"]); scpu = med([r["server_cpu"] for r in rs])
        sched = "—" if ss[0]["expected"] == 0 else lat("sched_latency_ns", "p50")
        sched99 = "—" if ss[0]["expected"] == 0 else lat("sched_latency_ns", "p99")
        print(f"| {v} | {i} {ss[0]['wait']} | {loss[0]:.3f}% (max {loss[2]:.3f}%) | {lap[0]:.3f}% (max {lap[2]:.3f}%) | {wps[0]/1e6:.2f}M | "
              f"{lat('recv_latency_ns','p50')} | {lat('recv_latency_ns','p90')} | {lat('recv_latency_ns','p99')} | {lat('recv_latency_ns','p99.9')} | "
              f"{sched} | {sched99} | {cpu[0]:.2f} | {scpu:.2f} |")
print("\nThe WebSocket path, hft preset (10 clients × 500 of 1,000 tokens, 100k ticks/s, JSON):\n")
print("| variant | loss | WS p50 | WS p99 | WS p99.9 | server CPU | harness CPU | feeder lag p50 |")
print("|---|---|---|---|---|---|---|---|")
for v in ["hft-shm-off", "hft-shm-on", "side-by-side"]:
    rs = runs(v)
    def m(f): vals = [f(r) for r in rs]; return med(vals), min(vals), max(vals)
    def lat(q): a, lo, hi = m(lambda r: r["latency_ns"][q]); return f"{us(a)} [{us(lo)}–{us(hi)}]"
    sc = m(lambda r: r["server_cpu"]); hc = m(lambda r: r["client_cpu"])
    print(f"| {v} | {m(lambda r: r['loss_pct'])[0]:.3f}% | {lat('p50')} | {lat('p99')} | {lat('p99.9')} | "
          f"{sc[0]:.3f} [{sc[1]:.3f}–{sc[2]:.3f}] | {hc[0]:.2f} | {us(m(lambda r: r['feeder_lag_ns']['p50'])[0])} |")
py = [json.loads((out / f"python-{r}.json").read_text()) for r in range(1, rounds + 1)]
ns = [p["ns_per_tick"] for p in py]
print(f"\nPython reader (clients/python/tickcast_shm.py --bench 200000, spinning, 100k ticks/s): {med(ns)/1000:.2f} µs per tick "
      f"[{min(ns)/1000:.2f}–{max(ns)/1000:.2f}], lost {sum(p['lost'] for p in py)} records in all.")
sb = runs("side-by-side")
ratio = [r["latency_ns"]["p50"] / r["shm_readers"][0]["sched_latency_ns"]["p50"] for r in sb]
ratio99 = [r["latency_ns"]["p99"] / r["shm_readers"][0]["sched_latency_ns"]["p99"] for r in sb]
print(f"\nSide by side, same feed, same run (scheduled time → received): WebSocket p50 / shared-memory (parked) p50 = "
      f"{med(ratio):.2f}× [{min(ratio):.2f}–{max(ratio):.2f}], p99 ratio {med(ratio99):.2f}× [{min(ratio99):.2f}–{max(ratio99):.2f}].")
PY
cat "$OUT/summary.md"
