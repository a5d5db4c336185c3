#!/usr/bin/env bash
# Instructions per delivered message, counted by callgrind (`perf stat` has
# no hardware counters on this VM). The counts are NOT repeatable: they move
# with how many ticks each loop turn and each datagram carry, which depends
# on timing (perf/RESULTS.md, "Instructions per delivered message", saw
# 643-744 for the same command); compare only runs made back to back and
# treat a single figure as +-10%. The server runs under callgrind with one
# file per thread; load comes from `tickcast bench --url`. All server
# instructions / frames queued = instructions per delivered message. With
# `thread` the feed has its own thread, so the worker's and the feed's
# shares are also shown apart (worker / frames, feed / ticks); with
# `worker` the worker reads the feed itself and its count includes it.
# Usage: perf/instructions.sh [FORMAT] [FEED_POLL]  (json | rkyv; thread | worker; default json worker)
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
FORMAT=${1:-json}
FEED_POLL=${2:-worker}
cargo build --release --quiet
B=target/release/tickcast
OUT=$(mktemp -d)
RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.out" \
    $B --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 --workers 1 --feed-poll "$FEED_POLL" > "$OUT/server.out" 2>"$OUT/valgrind.err" &
PID=$!
server_addrs "$OUT/server.out" || { grep -v '^==' "$OUT/valgrind.err" >&2; echo "perf/instructions.sh: the server did not start" >&2; exit 1; }
$B bench --url "ws://$ADDR/stream" --feed-addr "$UDP" --format "$FORMAT" --clients 10 --subs 50 --tokens 54 \
    --rate 2000 --secs 5 --warmup 1 --json > "$OUT/bench.json"
sleep 1
STATUS=$(curl -s "http://$ADDR/status")
kill -TERM $PID; wait $PID || true
python3 - "$OUT" "$STATUS" "$FEED_POLL" <<'PY'
import json, pathlib, re, sys
out, status, feed_poll = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
bench = json.loads((out / "bench.json").read_text())
threads = {}
for f in sorted(out.glob("cg.out*")):
    text = f.read_text(errors="replace")
    m = re.search(r"^summary:\s*(\d+)", text, re.M) or re.search(r"^totals:\s*(\d+)", text, re.M)
    name = re.search(r"^cmd:.*$", text, re.M)
    threads[f.name] = int(m.group(1)) if m else 0
frames, ticks = status["counters"]["frames_sent"], status["feeds"][0]["ticks"]
print(f"per-thread instructions: {threads}")
print(f"server queued {frames:,} frames for {ticks:,} ticks; bench delivered {bench['delivered']:,}/{bench['expected']:,} in the window")
ordered = sorted(threads.values(), reverse=True)
print(f"server, all threads: {sum(ordered)/frames:,.0f} instructions per delivered message (--feed-poll {feed_poll})")
if feed_poll == "thread":
    print("(threads: main, feed, worker — the worker is the one with the most instructions under load)")
    worker, feed = ordered[0], ordered[1]
    print(f"worker: {worker/frames:,.0f} instructions per delivered message; feed: {feed/ticks:,.0f} per ingested tick")
else:
    print(f"worker (feed read included): {ordered[0]/frames:,.0f} instructions per delivered message")
PY
