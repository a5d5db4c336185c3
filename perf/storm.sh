#!/usr/bin/env bash
# Memory after an anonymous reconnect storm (issue 13, finding 7): CLIENTS
# connections at a time for SECS seconds, each connecting, subscribing to
# SUBS tokens and leaving after 1–30 ms (half by a close frame, half by a
# reset), driven by `tickcast bench --churn`. Prints the server's RSS before,
# at the end of the storm, and 3 s and 10 s after it (session TTL 1 s), with
# the connections it accepted. SERVER_ARGS (env) go to the server, e.g.
# SERVER_ARGS="--ring-capacity 4096"; RATE (env, default 2000) is the feed's
# ticks/s. `perf/storm.sh 1` is the control: the same ticks, one client.
#
#   bench --churn (CLIENTS slots, lifetimes 1–30 ms) ──ws──► tickcast (--session-ttl-secs 1) ◄── RSS from /proc
#
# Usage: perf/storm.sh [CLIENTS] [SECS] [SUBS]     (default 200 20 10)
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
CLIENTS=${1:-200}
SECS=${2:-20}
SUBS=${3:-10}
cargo build --release --quiet
OUT=$(mktemp -d)
BIN=$OUT/tickcast
cp "${CARGO_TARGET_DIR:-target}/release/tickcast" "$BIN"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of flags
RUST_LOG=warn $BIN --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 --session-ttl-secs 1 \
    --max-connections $((CLIENTS * 4)) ${SERVER_ARGS:-} >"$OUT/server.out" 2>"$OUT/server.err" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$OUT"' EXIT
server_addrs "$OUT/server.out" || { echo "perf/storm.sh: the server did not start" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
sleep 1
BEFORE=$(rss)
$BIN bench --url "ws://$ADDR/stream" --feed-addr "$UDP" --tokens 54 --rate "${RATE:-2000}" --clients "$CLIENTS" --subs "$SUBS" \
    --secs "$SECS" --churn 1ms..30ms --slow-pct 0 --lossless-pct 0 --anchors 1 --json >"$OUT/bench.json" 2>"$OUT/bench.err" ||
    { cat "$OUT/bench.err" >&2; exit 1; }
AT_END=$(rss)
sleep 3
AFTER3=$(rss)
sleep 7
AFTER10=$(rss)
read -r ACCEPTED WORKERS < <(curl -s "http://$ADDR/status" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["counters"]["connections_accepted"], len(d["workers"]))')
echo "storm: $CLIENTS clients × ${SECS}s, $SUBS subscriptions each, ${RATE:-2000} ticks/s, $ACCEPTED connections accepted, $WORKERS workers ${SERVER_ARGS:-}"
echo "RSS kB: before $BEFORE, end of storm $AT_END, +3 s $AFTER3, +10 s $AFTER10"
