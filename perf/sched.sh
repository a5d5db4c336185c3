#!/usr/bin/env bash
# Who runs on which CPU during a bench scenario, and who waits for it:
# `perf sched` on both CPUs for 3 s of the measured window (server pinned to
# CPU 0, harness to CPU 1). Prints each CPU's tasks (run time, switches,
# longest run) and every wait for a CPU longer than 0.3 ms (the task was
# runnable but something else had the CPU). perf sched itself costs CPU:
# latencies in these runs are higher than without it.
# Usage: perf/sched.sh [SCENARIO] [FORMAT] [SERVER FLAG...]   (default: hft rkyv)
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:-hft}
FORMAT=${2:-rkyv}
shift $(( $# > 2 ? 2 : $# ))
cargo build --release --quiet
B=target/release/tickcast
OUT=$(mktemp -d)
SERVER_ARGS=()
for f in "$@"; do SERVER_ARGS+=("--server-arg=$f"); done
$B bench --spawn --server-cpus 0 --load-cpus 1 --scenario "$SCENARIO" --format "$FORMAT" --secs 5 --warmup 2 \
    ${SERVER_ARGS[@]+"${SERVER_ARGS[@]}"} --json > "$OUT/bench.json" &
BENCH=$!
sleep 4
perf sched record -o "$OUT/sched.data" -- sleep 3 > /dev/null 2>&1
wait $BENCH
python3 -c "
import json, sys; r = json.load(open(sys.argv[1])); l = r['latency_ns']; f = r['feeder_lag_ns']
print(f\"{r['label']}: delivered {r['delivered']:,}/{r['expected']:,}, p50 {l['p50']/1e3:.0f} µs, p99 {l['p99']/1e3:.0f} µs, \"
      f\"p99.9 {l['p99.9']/1e3:.0f} µs; feeder lag p50 {f['p50']/1e3:.0f} µs, max {f['max']/1e3:.0f} µs; \"
      f\"harness CPU {r['client_cpu']:.2f}, server CPU {r['server_cpu']:.2f}\")" "$OUT/bench.json"
perf sched timehist -i "$OUT/sched.data" > "$OUT/timehist.txt" 2>/dev/null
python3 - "$OUT/timehist.txt" <<'PY'
import collections, re, sys
run = collections.defaultdict(float); switches = collections.Counter(); longest = collections.defaultdict(float)
waits = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"\s*[\d.]+\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
    if not m:
        continue
    cpu, task, _wait, delay, ran = int(m[1]), re.sub(r"\[(\d+)(/\d+)?\]", r"[\1]", m[2]).strip(), *map(float, m.group(3, 4, 5))
    key = (cpu, task)
    run[key] += ran; switches[key] += 1; longest[key] = max(longest[key], ran)
    if delay > 0.3:
        waits[key].append(delay)
print("cpu  task[tid]                   run ms  switches  longest run ms  waits > 0.3 ms (longest)")
for key in sorted(run, key=lambda k: (k[0], -run[k])):
    if run[key] < 1:
        continue
    w = waits.get(key, [])
    print(f"{key[0]:>3}  {key[1][:26]:<26} {run[key]:>8.0f} {switches[key]:>9} {longest[key]:>15.2f}  {len(w)} ({max(w, default=0):.2f} ms)")
PY
