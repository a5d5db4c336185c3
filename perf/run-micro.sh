#!/usr/bin/env bash
# Re-run the criterion micro benches with the flags used for perf/RESULTS.md,
# then write every benchmark's median (criterion's `median.point_estimate`)
# with the commit and machine to perf/micro-summary.md, which is committed,
# so the figures of RESULTS.md §1-5 can be checked against a re-run.
# Extra arguments are passed to criterion (e.g. a benchmark name filter).
# SUMMARY_ONLY=1 skips the runs and summarises what target/criterion holds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${SUMMARY_ONLY:-0}" != 1 ]; then
    for bench in subscribe encode fanout ring tcf1 shm; do
        cargo bench --bench "$bench" -- --warm-up-time 1 --measurement-time 3 "$@"
    done
    # Not criterion: a plain-main throughput harness (about 15 s) that takes
    # no criterion flags; see its doc for `--secs` and `--rates` (§6 quotes
    # what it prints; it is not in the summary).
    cargo bench --bench udp_feed
fi

OUT=perf/micro-summary.md
TMP=$(mktemp)
python3 - "$TMP" <<'PY'
import json, pathlib, platform, subprocess, sys, datetime
root = pathlib.Path("target/criterion")
def git(*a):
    return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
commit = git("rev-parse", "--short", "HEAD")
dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    ns = json.loads(est.read_text())["median"]["point_estimate"]
    when = datetime.datetime.fromtimestamp(est.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    rows.append((bench["full_id"], ns, when))
def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"
with open(sys.argv[1], "w") as f:
    f.write("# Criterion micro benches: medians of the last run\n\n")
    f.write("Written by `perf/run-micro.sh` from `target/criterion/*/new/estimates.json`\n")
    f.write("(`median.point_estimate`, one run, the flags of perf/RESULTS.md §1-5).\n")
    f.write("Compare with RESULTS.md's figures as a re-run on a shared machine, not as\n")
    f.write("the same run: those runs' own estimates were not kept.\n\n")
    f.write(f"Commit `{commit}`{dirty}; {rustc}; {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs;\n")
    f.write(f"load average when summarised: {open('/proc/loadavg').read().split()[0]}.\n\n")
    f.write("| benchmark | median | measured (UTC) |\n|---|---|---|\n")
    for name, ns, when in rows:
        f.write(f"| `{name}` | {fmt(ns)} | {when} |\n")
    if not rows:
        f.write("| (no criterion results under target/criterion) | | |\n")
PY
mv "$TMP" "$OUT"
echo "perf/run-micro.sh: wrote $OUT"
