#!/usr/bin/env bash
# Issue 11 (the house): performance before and after, interleaved in one
# sitting. BEFORE is a release build of the commit before the work
# (08a1c6d); AFTER is this tree's. Each round runs every variant with both
# binaries in turn, so a noisy minute hits both.
#
# Variants (server on CPU 0, harness on CPU 1, JSON):
#   hft         the hft preset (10 clients × 500 of 1,000 tokens, 100k ticks/s), --spawn
#   broadcast   the broadcast preset (100 clients × all 100 tokens, 10k ticks/s = 1M msgs/s), --spawn
#   hft-quiet   hft against a server this script starts (worker pinned to CPU 0 with --cpus 0)
#   hft-scraped the same with /metrics and /status scraped ~100 times a second each
#               from CPU 1 during the run: before, the worker rendered them on its
#               loop; after, the `http` thread does (on a 2-CPU machine that thread,
#               the scraper and the harness share CPU 1, so this end-to-end figure
#               mixes the server's cost with the harness's: see scrape-cost)
#   scrape-cost CPU time the worker thread (and the http thread) spend per scrape
#
# Results: perf/house/<variant>-<bin>-<round>.json and perf/house/summary.md.
#
# Usage: perf/house.sh BEFORE_BINARY [ROUNDS] [SECS]   (defaults 5 rounds, 8 s measured after 2 s warm-up)
#   BEFORE_BINARY: git worktree add /tmp/before 08a1c6d && (cd /tmp/before && cargo build --release)
#                  then /tmp/before/target/release/tickcast
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
BEFORE=${1:?usage: perf/house.sh BEFORE_BINARY [ROUNDS] [SECS]}
ROUNDS=${2:-5}
SECS=${3:-8}
cargo build --release --quiet
AFTER=target/release/tickcast
OUT=perf/house
mkdir -p "$OUT"
rm -f "$OUT"/*.json
MASTER=$(mktemp --suffix=.csv)
SRV_OUT=$(mktemp)
SCRAPER=""
SRV=""
cleanup() {
    [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
    rm -f "$MASTER" "$SRV_OUT"
}
trap cleanup EXIT
write_master 1000 "$MASTER"

spawned() { # variant bin-name binary round args...
    local v=$1 name=$2 bin=$3 r=$4; shift 4
    "$bin" bench --spawn --server-cpus 0 --load-cpus 1 --secs "$SECS" --warmup 2 --json --label "$v-$name" "$@" \
        > "$OUT/$v-$name-$r.json"
}

# A server of our own (so its address is known to the scraper), then hft
# against it, quiet or scraped.
own() { # bin-name binary round
    local name=$1 bin=$2 r=$3
    "$bin" --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 --workers 1 --cpus 0 \
        --master "$MASTER" --max-subscriptions 3000 > "$SRV_OUT" 2>&1 &
    SRV=$!
    server_addrs "$SRV_OUT"
    for v in hft-quiet hft-scraped; do
        if [ "$v" = hft-scraped ]; then
            taskset -c 1 python3 - "$ADDR" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
while True:
    for path in ("/metrics", "/status"):
        s = socket.create_connection((host, int(port)))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while s.recv(65536):
            pass
        s.close()
    time.sleep(0.01)
PY
            SCRAPER=$!
        fi
        taskset -c 1 "$bin" bench --url "ws://$ADDR/stream" --feed-addr "$UDP" --master "$MASTER" --scenario hft \
            --load-cpus 1 --secs "$SECS" --warmup 2 --json --label "$v-$name" > "$OUT/$v-$name-$r.json"
        if [ -n "$SCRAPER" ]; then kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; fi
    done
    kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=""
}

# What one scrape costs the worker thread itself: CPU time of `worker-0`
# (and of `http`, where there is one) over 1,000 × (GET /metrics + GET
# /status) from CPU 1, the server otherwise idle, its worker pinned to CPU 0.
scrape_cost() { # bin-name binary round
    local name=$1 bin=$2 r=$3
    "$bin" --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 --workers 1 --cpus 0 \
        --master "$MASTER" > "$SRV_OUT" 2>&1 &
    SRV=$!
    server_addrs "$SRV_OUT"
    taskset -c 1 python3 - "$SRV" "$ADDR" 1000 > "$OUT/scrape-cost-$name-$r.json" <<'PY'
import json, os, socket, sys
pid, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = addr.rsplit(":", 1)
def threads():
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        # schedstat: ns on the CPU (finer than stat's 10 ms ticks)
        out[name] = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0]) / 1e9
    return out
def get(path):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
before = threads()
for _ in range(n):
    get("/metrics")
    get("/status")
after = threads()
us = lambda t: (after.get(t, 0) - before.get(t, 0)) / n * 1e6
print(json.dumps({"scrapes": n, "worker_us_per_scrape": us("worker-0"), "http_us_per_scrape": us("http")}))
PY
    kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=""
}

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r of $ROUNDS" >&2
    for pair in "before:$BEFORE" "after:$AFTER"; do
        name=${pair%%:*} bin=${pair#*:}
        spawned hft "$name" "$bin" "$r" --scenario hft
        spawned broadcast "$name" "$bin" "$r" --scenario broadcast
        own "$name" "$bin" "$r"
        scrape_cost "$name" "$bin" "$r"
    done
done

python3 - "$OUT" "$ROUNDS" > "$OUT/summary.md" <<'PY'
import json, pathlib, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def us(ns): return f"{ns/1000:.0f} µs" if ns < 1e6 else f"{ns/1e6:.2f} ms"
med = statistics.median
print(f"Medians of {rounds} interleaved rounds, [min–max].\n")
print("| variant | binary | loss | p50 | p99 | p99.9 | server CPU | msgs/s |")
print("|---|---|---|---|---|---|---|---|")
for v in ["hft", "broadcast", "hft-quiet", "hft-scraped"]:
    for b in ["before", "after"]:
        rs = [json.loads((out / f"{v}-{b}-{r}.json").read_text()) for r in range(1, rounds + 1)]
        def m(f): vals = [f(x) for x in rs]; return med(vals), min(vals), max(vals)
        def lat(q): a, lo, hi = m(lambda x: x["latency_ns"][q]); return f"{us(a)} [{us(lo)}–{us(hi)}]"
        loss = m(lambda x: x["loss_pct"])
        cpu = m(lambda x: x.get("server_cpu") or 0.0)
        cpu_s = f"{cpu[0]:.3f} [{cpu[1]:.3f}–{cpu[2]:.3f}]" if cpu[2] > 0 else "—"
        rate = m(lambda x: x["msgs_per_sec"])
        print(f"| {v} | {b} | {loss[0]:.3f}% (max {loss[2]:.3f}%) | {lat('p50')} | {lat('p99')} | {lat('p99.9')} | {cpu_s} | {rate[0]/1e6:.2f}M |")
print("\nCPU time per scrape (GET /metrics + GET /status), idle server, 1,000 scrapes per run:\n")
print("| binary | worker thread | http thread |")
print("|---|---|---|")
for b in ["before", "after"]:
    rs = [json.loads((out / f"scrape-cost-{b}-{r}.json").read_text()) for r in range(1, rounds + 1)]
    w = [x["worker_us_per_scrape"] for x in rs]; h = [x["http_us_per_scrape"] for x in rs]
    print(f"| {b} | {med(w):.0f} µs [{min(w):.0f}–{max(w):.0f}] | {med(h):.0f} µs [{min(h):.0f}–{max(h):.0f}] |")
PY
cat "$OUT/summary.md"
