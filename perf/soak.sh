#!/usr/bin/env bash
# Soak: a scale-out pair under churn for a while, the Redis between them
# restarted a few times; prints a verdict and writes a record.
#
#   bench feeder ─TCF1/UDP─► origin (--publish) ─► redis-server ─► edge (--feed redis://) ─ws─► bench --churn
#                                                  (restarted)     (RSS, fds sampled)          anchors + churners
#
# `tickcast bench --churn` (src/bench/churn.rs) keeps CLIENTS connections
# joining and leaving (lifetimes LIFE, half leave by reset), SLOW_PCT% of them
# slow (stall 4 s, read 1 s, every token), LOSSLESS_PCT% lossless, and checks
# every tick by its seq. Verdict (all must hold):
#   - lossless clients (anchors and churners) lost no tick the edge had;
#   - every other miss was reported (gap notice + conflated frame) or upstream;
#   - what the anchors missed equals the edge's packet_gaps (the ticks lost
#     to the Redis restarts) plus the ticks that never reached the origin
#     (UDP from the feeder: sent − the origin feed's ticks), and no anchor
#     was closed;
#   - the edge's RSS, sampled every 10 s, is flat after warm-up (the first
#     fifth, at least 60 s): median of the last third ≤ 1.1 × median of the
#     first post-warm-up third + 2 MB;
#   - the edge's open fds are back to their baseline after the clients leave.
#
# Usage: perf/soak.sh [--hour | --secs N] [--restarts N] [--record FILE]
#   default 300 s and 3 Redis restarts; --hour is 3600 s and 6 restarts.
#   Load (env): RATE=8500 ticks/s over TOKENS=1000, CLIENTS=300 × SUBS=25,
#   SLOW_PCT=3, LOSSLESS_PCT=30, LIFE=5s..30s, ANCHORS=10 (100 tokens each,
#   so a harness stall of a second or two stays under the edge's 512 KiB
#   out-buffer): about 100k deliveries/s.
#   Record: perf/soak/soak-<UTC time>.json unless --record.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
SECS=300
RESTARTS=
RECORD=
while [ $# -gt 0 ]; do
    case "$1" in
        --hour) SECS=3600; RESTARTS=${RESTARTS:-6} ;;
        --secs) SECS=$2; shift ;;
        --restarts) RESTARTS=$2; shift ;;
        --record) RECORD=$2; shift ;;
        *) echo "perf/soak.sh: unknown argument $1 (see the usage at the top)" >&2; exit 2 ;;
    esac
    shift
done
RESTARTS=${RESTARTS:-3}
RATE=${RATE:-8500} TOKENS=${TOKENS:-1000} CLIENTS=${CLIENTS:-300} SUBS=${SUBS:-25}
SLOW_PCT=${SLOW_PCT:-3} LOSSLESS_PCT=${LOSSLESS_PCT:-30} LIFE=${LIFE:-5s..30s} ANCHORS=${ANCHORS:-10}
RECORD=${RECORD:-perf/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).json}
command -v redis-server >/dev/null || { echo "perf/soak.sh: needs redis-server (apt-get install redis-server)" >&2; exit 1; }

cargo build --release --quiet
OUT=$(mktemp -d)
# A copy of the binary: a rebuild during an hour's run must not replace it.
BIN=$OUT/tickcast
cp "${CARGO_TARGET_DIR:-target}/release/tickcast" "$BIN"
write_master "$TOKENS" "$OUT/master.csv"
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >>"$OUT/redis.log" 2>&1 &
    echo $! >"$OUT/redis.pid"
}
PIDS=()
cleanup() {
    for p in "${PIDS[@]}" "$(cat "$OUT/redis.pid" 2>/dev/null)"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$OUT"
}
trap cleanup EXIT
start_redis
sleep 0.3
RUST_LOG=warn $BIN --listen 127.0.0.1:0 --openalgo-listen off --feed udp://127.0.0.1:0 --master "$OUT/master.csv" \
    --publish "redis://127.0.0.1:$REDIS_PORT" >"$OUT/origin.out" 2>"$OUT/origin.err" &
PIDS+=($!)
server_addrs "$OUT/origin.out" || { echo "perf/soak.sh: the origin did not start" >&2; exit 1; }
ORIGIN=$ADDR FEED=$UDP
RUST_LOG=warn $BIN --listen 127.0.0.1:0 --openalgo-listen off --feed "redis://127.0.0.1:$REDIS_PORT" \
    --master "$OUT/master.csv" --out-buffer-bytes 524288 --max-connections $((CLIENTS + 200)) \
    >"$OUT/edge.out" 2>"$OUT/edge.err" &
EDGE_PID=$!
PIDS+=($EDGE_PID)
server_addrs "$OUT/edge.out" || { echo "perf/soak.sh: the edge did not start" >&2; exit 1; }
EDGE=$ADDR
fds() { ls "/proc/$EDGE_PID/fd" | wc -l; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$EDGE_PID/status"; }
sleep 1
FD_BASE=$(fds)
RSS_BASE=$(rss_kb)
echo "soak: ${SECS}s, $RESTARTS Redis restarts, edge ws://$EDGE (pid $EDGE_PID), fds $FD_BASE, RSS ${RSS_BASE} kB; record $RECORD"

# RSS and fds of the edge every 10 s.
(
    t=0
    while kill -0 "$EDGE_PID" 2>/dev/null; do
        echo "$t $(rss_kb) $(fds)" >>"$OUT/samples"
        sleep 10
        t=$((t + 10))
    done
) &
PIDS+=($!)
# Redis restarts, evenly spaced inside the run (2 s down each).
(
    gap=$((SECS / (RESTARTS + 1)))
    for i in $(seq 1 "$RESTARTS"); do
        sleep "$gap"
        kill "$(cat "$OUT/redis.pid")"
        echo "$(date -u +%T) restart $i" >>"$OUT/restarts"
        sleep 2
        start_redis
    done
) &
PIDS+=($!)

$BIN bench --url "ws://$EDGE/stream" --feed-addr "$FEED" --master "$OUT/master.csv" --tokens "$TOKENS" \
    --rate "$RATE" --clients "$CLIENTS" --subs "$SUBS" --secs "$SECS" --churn "$LIFE" \
    --slow-pct "$SLOW_PCT" --lossless-pct "$LOSSLESS_PCT" --anchors "$ANCHORS" --json >"$OUT/bench.json" 2>"$OUT/bench.err" ||
    { cat "$OUT/bench.err" >&2; exit 1; }
sleep 3 # the edge closes what the clients left
FD_END=$(fds)
curl -s "http://$EDGE/status" >"$OUT/edge-status.json"
curl -s "http://$ORIGIN/status" >"$OUT/origin-status.json"
mkdir -p "$(dirname "$RECORD")"
python3 - "$OUT" "$SECS" "$RESTARTS" "$FD_BASE" "$FD_END" "$RSS_BASE" "$RECORD" \
    "RATE=$RATE TOKENS=$TOKENS CLIENTS=$CLIENTS SUBS=$SUBS SLOW_PCT=$SLOW_PCT LOSSLESS_PCT=$LOSSLESS_PCT LIFE=$LIFE ANCHORS=$ANCHORS" <<'PY'
import json, statistics, sys
out, secs, restarts, fd_base, fd_end, rss_base, record, load = sys.argv[1:]
secs, fd_base, fd_end, rss_base = int(float(secs)), int(fd_base), int(fd_end), int(rss_base)
bench = json.load(open(f"{out}/bench.json"))
edge = json.load(open(f"{out}/edge-status.json"))
origin = json.load(open(f"{out}/origin-status.json"))
samples = [tuple(map(int, l.split())) for l in open(f"{out}/samples") if len(l.split()) == 3]
redis_feed = next(f for f in edge["feeds"] if f["kind"] == "redis") if any(f.get("kind") == "redis" for f in edge["feeds"]) else edge["feeds"][0]
packet_gaps, reconnects = redis_feed["packet_gaps"], redis_feed["reconnects"]
anchor = bench["classes"]["anchor"]
origin_ticks = origin["feeds"][0]["ticks"]
never_reached = bench["ticks_sent"] - origin_ticks
warm = max(60, secs // 5)
after = [rss for t, rss, _ in samples if t >= warm]
third = max(1, len(after) // 3)
first, last = statistics.median(after[:third] or [0]), statistics.median(after[-third:] or [0])
checks = {
    "lossless clients lost nothing": bench["lossless_lost_ticks"] == 0,
    "every other miss reported or upstream": bench["unreported_misses"] == 0,
    "anchors missed exactly the edge's packet_gaps and what never reached the origin":
        anchor["upstream_ticks"] == packet_gaps + never_reached,
    "no anchor closed": anchor["server_closed"] == 0,
    "no tick out of order": all(c["out_of_order"] == 0 for c in bench["classes"].values()),
    "RSS flat after warm-up": len(after) >= 3 and last <= 1.1 * first + 2048,
    "fds back to baseline": fd_end <= fd_base,
}
rec = {
    "load": load, "secs": secs, "redis_restarts": restarts, "bench": bench,
    "edge": {"packet_gaps": packet_gaps, "reconnects": reconnects, "ring_overruns": edge["ring_overruns"],
             "counters": edge["counters"]},
    "origin_publish": origin.get("publish"),
    "origin_feed": {"ticks": origin_ticks, "packet_gaps": origin["feeds"][0]["packet_gaps"], "never_reached": never_reached},
    "rss_kb": {"start": rss_base, "warmup_s": warm, "first_third_median": first, "last_third_median": last,
               "max": max(r for _, r, _ in samples), "samples": [[t, r] for t, r, _ in samples]},
    "fds": {"baseline": fd_base, "max": max(f for _, _, f in samples), "end": fd_end},
    "origin_status_counters": origin["counters"], "checks": checks, "verdict": "PASS" if all(checks.values()) else "FAIL",
}
json.dump(rec, open(record, "w"), indent=1)
c = bench["classes"]
print(f"deliveries/s {bench['deliveries_per_sec']:.0f}; joined {sum(v['joined'] for v in c.values())} "
      f"(left by close {bench['left_close']}, reset {bench['left_reset']}); server closes {bench['server_closes']}")
for name, v in c.items():
    print(f"  {name:<9} ticks {v['ticks']:>11}  reported gaps {v['reported_gaps']} ({v['reported_ticks']} ticks)  "
          f"upstream {v['upstream_ticks']}  lost {v['lost_ticks']}  unnoticed {v['unnoticed']}")
print(f"edge: redis reconnects {reconnects}, packet_gaps {packet_gaps}, ring_overruns {edge['ring_overruns']}")
print(f"RSS kB: start {rss_base}, after warm-up {first:.0f} → end {last:.0f} (max {rec['rss_kb']['max']}); "
      f"fds: baseline {fd_base}, max {rec['fds']['max']}, end {fd_end}")
for k, v in checks.items():
    print(f"  {'ok  ' if v else 'FAIL'} {k}")
print(f"verdict: {rec['verdict']} (record: {record})")
sys.exit(0 if rec["verdict"] == "PASS" else 1)
PY
