#!/usr/bin/env bash
# Redis consume throughput: origin A (simulator at RATE ticks/s, --publish to
# Redis) → redis-server → edge B (--feed redis://). One WebSocket client on B
# subscribes to every token so B subscribes to every tcf1:<token> channel.
# Reports, over SECS seconds: ticks A published to Redis, ticks B consumed.
#
#   sim ─► A ─PUBLISH (pipelined)─► redis-server ─► B (redis feed) ─► ring ─► worker
#
# Usage: perf/redis-consume.sh [RATE] [SECS]     (2 cores: A, Redis and B share them)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-300000}
SECS=${2:-5}
cargo build --release --quiet
BIN=target/release/tickcast
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
REDIS=$!
trap 'kill $REDIS $A $B 2>/dev/null || true' EXIT
sleep 0.3
RUST_LOG=warn $BIN --listen 127.0.0.1:0 --feed "sim:rate=$RATE,seed=1" --publish "redis://127.0.0.1:$PORT" >/tmp/tc-a.out &
A=$!
RUST_LOG=warn $BIN --listen 127.0.0.1:0 --feed "redis://127.0.0.1:$PORT" >/tmp/tc-b.out &
B=$!
sleep 0.5
AADDR=$(grep -o '127[^/]*' /tmp/tc-a.out | head -1)
BADDR=$(grep -o '127[^/]*' /tmp/tc-b.out | head -1)
python3 - "$AADDR" "$BADDR" "$SECS" <<'PY'
import json, sys, time, urllib.request, websocket
a, b, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
tokens = [f["token"] for f in []]  # filled below
st = lambda h: json.load(urllib.request.urlopen(f"http://{h}/status"))
ws = websocket.create_connection(f"ws://{b}/stream")
ws.recv()
# Every token of the bundled master (ask A for a snapshot of everything is not needed: use known range).
import csv, io, pathlib
master = pathlib.Path("data/instruments.csv").read_text()
tokens = [int(r["token"]) for r in csv.DictReader(io.StringIO(master))]
ws.send(json.dumps({"action": "subscribe", "tokens": tokens, "mode": "ltp"}))
time.sleep(1.0)  # let B subscribe on Redis and warm up
a0, b0, t0 = st(a)["publish"]["published"], st(b)["feeds"][0]["ticks"], time.time()
time.sleep(secs)
a1, b1, t1 = st(a)["publish"]["published"], st(b)["feeds"][0]["ticks"], time.time()
sb = st(b)["feeds"][0]
dt = t1 - t0
print(f"A published {(a1-a0)/dt:,.0f} msgs/s to Redis; B consumed {(b1-b0)/dt:,.0f} ticks/s "
      f"(packet_gaps {sb['packet_gaps']}, state {sb['state']}) over {dt:.1f} s")
PY
