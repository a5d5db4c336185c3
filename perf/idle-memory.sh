#!/usr/bin/env bash
# Server memory per connection, and connection scale: RSS of a tickcast
# server before and with N WebSocket connections (one subscription each),
# opened by `tickcast bench` in a process of its own, spread over SOURCES
# loopback addresses (127.0.0.1..=127.0.0.SOURCES); then the bench's
# delivered/expected, loss and harness CPU.
# Usage: perf/idle-memory.sh [N] [RATE] [TOKENS] [SOURCES]
#   default: 10000 connections, 100 ticks/s over the 54 bundled tokens (nearly
#   idle), bench's default sources. Needs N+100 open files in each process.
#   Connection scale: perf/idle-memory.sh 19000 1000 1000 4
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
N=${1:-10000}
RATE=${2:-100}
TOKENS=${3:-54}
SOURCES=${4:-}
ulimit -n "$(ulimit -Hn)"
if [ $((N + 100)) -gt "$(ulimit -n)" ]; then
    echo "$N connections need $((N + 100)) open files per process; the limit here is $(ulimit -n)" >&2
    exit 1
fi
cargo build --release --quiet
B=${CARGO_TARGET_DIR:-target}/release/tickcast
OUT=$(mktemp -d)
MASTER=()
if [ "$TOKENS" -gt 54 ]; then # more than the bundled master: write one
    write_master "$TOKENS" "$OUT/master.csv"
    MASTER=(--master "$OUT/master.csv")
fi
RUST_LOG=warn $B --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 "${MASTER[@]}" --max-connections $((N + 100)) \
    > "$OUT/server.out" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$OUT"' EXIT
server_addrs "$OUT/server.out" || { echo "perf/idle-memory.sh: the server did not start" >&2; exit 1; }
status() { curl -s "http://$ADDR/status" | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
BEFORE=$(rss)
$B bench --url "ws://$ADDR/stream" --feed-addr "$UDP" "${MASTER[@]}" --clients "$N" --subs 1 --tokens "$TOKENS" \
    --rate "$RATE" --secs 6 --warmup 1 ${SOURCES:+--source-addrs "$SOURCES"} --json > "$OUT/bench.json" 2> "$OUT/bench.err" &
BENCH=$!
PEAK=0; CONNS=0
while kill -0 $BENCH 2>/dev/null; do
    sleep 0.5
    C=$(status '["connections"]' 2>/dev/null || echo 0)
    R=$(rss)
    if [ "$C" -ge "$CONNS" ]; then CONNS=$C; fi
    if [ "$R" -gt "$PEAK" ]; then PEAK=$R; fi
done
wait $BENCH || { cat "$OUT/bench.err"; exit 1; }
echo "connections seen: $CONNS; RSS before: ${BEFORE} KiB; RSS with connections: ${PEAK} KiB"
echo "per connection: $(( (PEAK - BEFORE) * 1024 / (CONNS > 0 ? CONNS : 1) )) bytes"
python3 - "$OUT/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ns"]
print(f"delivered {r['delivered']:,} of {r['expected']:,} expected, loss {r['loss_pct']:.3f}%, "
      f"p50 {l['p50']/1e3:.0f} µs, p99 {l['p99']/1e3:.0f} µs, harness CPU {r['client_cpu']:.2f}")
PY
grep -i warn "$OUT/bench.err" || true
