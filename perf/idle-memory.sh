#!/usr/bin/env bash
# Server memory per connection: RSS of a tickcast server before and with N
# WebSocket connections (one subscription each, 100 ticks/s in total, so
# they are nearly idle), opened by `tickcast bench`.
# Usage: perf/idle-memory.sh [N]      (default 10000; needs N+100 open files per process)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release --quiet
B=target/release/tickcast
RUST_LOG=warn $B --listen 127.0.0.1:0 --feed udp://127.0.0.1:0 --max-connections $((N + 100)) > /tmp/tc-mem.out &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 0.5
ADDR=$(grep -o '127[^/]*' /tmp/tc-mem.out | head -1)
UDP=$(curl -s "http://$ADDR/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["feeds"][0]["address"])')
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
BEFORE=$(rss)
$B bench --url "ws://$ADDR/stream" --feed-addr "$UDP" --clients "$N" --subs 1 --tokens 54 --rate 100 --secs 6 --warmup 1 > /tmp/tc-mem-bench.txt 2>&1 &
BENCH=$!
PEAK=0; CONNS=0
for _ in $(seq 1 14); do
    sleep 0.5
    C=$(curl -s "http://$ADDR/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])' 2>/dev/null || echo 0)
    R=$(rss)
    if [ "$C" -ge "$CONNS" ]; then CONNS=$C; fi
    if [ "$R" -gt "$PEAK" ]; then PEAK=$R; fi
done
wait $BENCH || true
echo "connections seen: $CONNS; RSS before: ${BEFORE} KiB; RSS with connections: ${PEAK} KiB"
echo "per connection: $(( (PEAK - BEFORE) * 1024 / (CONNS > 0 ? CONNS : 1) )) bytes"
grep -E "delivered|warning" /tmp/tc-mem-bench.txt || true
