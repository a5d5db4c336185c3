#!/usr/bin/env bash
# Where the writer's time goes at 5M ticks/s (the server's simulator with
# --shm, two spinning readers on the other core): perf record (cpu-clock)
# of the server pinned to CPU 0. Prints the top symbols by self time and
# the feed thread's share.
# Usage: perf/shm-profile.sh [RATE]      (default 5000000)
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
RATE=${1:-5000000}
cargo build --release --quiet
B=target/release/tickcast
OUT=$(mktemp -d)
REGION=/dev/shm/tickcast-profile-$$
write_master 1000 "$OUT/master.csv"
RUST_LOG=warn $B --listen 127.0.0.1:0 --openalgo-listen off --feed "sim:rate=$RATE" --workers 1 --cpus 0 \
    --master "$OUT/master.csv" --shm "$REGION" > "$OUT/server.out" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$REGION" "$REGION.wait"' EXIT
server_addrs "$OUT/server.out" || { echo "perf/shm-profile.sh: the server did not start" >&2; exit 1; }
# Two readers (the bench's reader process; it reads until its stdin closes, then prints what it saw).
READERS=()
for i in 1 2; do sleep 8 | taskset -c 1 $B shm-probe --shm "$REGION" --wait spin > "$OUT/reader-$i.json" & READERS+=($!); done
sleep 2
perf record -e cpu-clock -F 1999 -g -p $PID -o "$OUT/perf.data" -- sleep 4 2>/dev/null
curl -s "http://$ADDR/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("written:", s["shm"]["rings"][0]["written"], "in", s["uptime_s"], "s")'
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -20
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5
wait "${READERS[@]}"
for i in 1 2; do python3 -c "import json,sys; r=json.loads(open('$OUT/reader-$i.json').read().splitlines()[-1]); print('reader $i: lost', r['lost'], 'records of', r['written'], 'written while it read')"; done
