#!/usr/bin/env bash
# Where the server's time goes under a bench scenario: perf record with the
# cpu-clock software event (no hardware counters on this VM), server pinned
# to CPU 0, harness to CPU 1. Prints the top symbols by self time.
# Usage: perf/profile.sh [SCENARIO] [FORMAT]     (default: hft json)
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
SCENARIO=${1:-hft}
FORMAT=${2:-json}
cargo build --release --quiet
B=target/release/tickcast
OUT=$(mktemp -d)
case $SCENARIO in hft) T=1000;; retail) T=2000;; broadcast) T=100;; *) T=100;; esac
write_master "$T" "$OUT/master.csv"
RUST_LOG=warn $B --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 --workers 1 --cpus 0 --master "$OUT/master.csv" \
    --max-connections 5000 > "$OUT/server.out" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
server_addrs "$OUT/server.out" || { echo "perf/profile.sh: the server did not start" >&2; exit 1; }
$B bench --url "ws://$ADDR/stream" --feed-addr "$UDP" --scenario "$SCENARIO" --format "$FORMAT" \
    --master "$OUT/master.csv" --load-cpus 1 --secs 6 --warmup 2 > "$OUT/bench.txt" &
BENCH=$!
sleep 3
perf record -e cpu-clock -F 1999 -g -p $PID -o "$OUT/perf.data" -- sleep 4 2>/dev/null
wait $BENCH
grep -E "delivered|p50|µs|ms" "$OUT/bench.txt" | head -4
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
