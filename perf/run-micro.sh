#!/usr/bin/env bash
# Re-run the criterion micro benches with the flags used for perf/RESULTS.md.
# Extra arguments are passed to criterion (e.g. a benchmark name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for bench in subscribe encode fanout ring tcf1 shm; do
    cargo bench --bench "$bench" -- --warm-up-time 1 --measurement-time 3 "$@"
done

# Not criterion: a plain-main throughput harness (about 15 s) that takes no
# criterion flags; see its doc for `--secs` and `--rates`.
cargo bench --bench udp_feed
