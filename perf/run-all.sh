#!/usr/bin/env bash
# Re-run every measurement in perf/RESULTS.md, in the order of the file:
# criterion micro benches, the bench-harness scenarios, memory and
# connection scale, instructions per message, and the two profiles; the
# shared-memory path (perf/shm.sh, ~13 minutes of its own).
# Takes ~25 minutes; nothing else should run on the machine meanwhile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
perf/run-micro.sh
perf/redis-consume.sh 250000 5
perf/run-macro.sh 5
perf/shm.sh 5 5
perf/idle-memory.sh 10000
perf/idle-memory.sh 19000 1000 1000 4
for format in json rkyv; do
    for mode in thread worker; do perf/instructions.sh "$format" "$mode"; done
done
perf/profile.sh hft json
perf/sched.sh hft rkyv
