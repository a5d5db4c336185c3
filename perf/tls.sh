#!/usr/bin/env bash
# Issue 15: TLS against plain, the hft and retail presets, interleaved in
# one sitting (each round runs plain then TLS for each preset, so a noisy
# minute hits both). Server on CPU 0, harness on CPU 1. The certificate is
# a throwaway self-signed P-256 pair made with openssl (the harness's
# clients take it with --insecure: signatures are still checked).
#
# Results: perf/tls/<preset>-<plain|tls>-<round>.json and
# perf/tls/summary.md (medians: msgs/s, server CPU, server µs of CPU per
# delivered message, p50/p99/p99.9, worst loss; and TLS ÷ plain).
#
# Usage: perf/tls.sh [ROUNDS] [SECS]   (defaults 5 rounds, 8 s measured after 2 s warm-up;
#        ROUNDS 0 only summarises the runs already in perf/tls)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-8}
cargo build --release --quiet
BIN=target/release/tickcast
OUT=perf/tls
mkdir -p "$OUT"
[ "$ROUNDS" -gt 0 ] && rm -f "$OUT"/*.json
KEYS=$(mktemp -d)
trap 'rm -rf "$KEYS"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$KEYS/key.pem" -out "$KEYS/cert.pem" 2>/dev/null
for r in $(seq 1 "$ROUNDS"); do
    for p in hft retail; do
        for mode in plain tls; do
            tls=()
            [ "$mode" = tls ] && tls=(--tls-cert "$KEYS/cert.pem" --tls-key "$KEYS/key.pem" --insecure)
            "$BIN" bench --spawn --scenario "$p" --server-cpus 0 --load-cpus 1 --secs "$SECS" --warmup 2 \
                --json --label "$p-$mode" "${tls[@]}" > "$OUT/$p-$mode-$r.json"
        done
    done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys, glob
out = sys.argv[1]
med = statistics.median
rows, ratio = [], {}
for p in ("hft", "retail"):
    for mode in ("plain", "tls"):
        runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{p}-{mode}-*.json"))]
        us_per_msg = med([r["server_cpu"] / r["msgs_per_sec"] * 1e6 for r in runs])
        row = (p, mode, len(runs), med([r["msgs_per_sec"] for r in runs]), med([r["server_cpu"] for r in runs]), us_per_msg,
               med([r["latency_ns"]["p50"] for r in runs]) / 1e3, med([r["latency_ns"]["p99"] for r in runs]) / 1e3,
               med([r["latency_ns"]["p99.9"] for r in runs]) / 1e3, max(r["loss_pct"] for r in runs),
               med([r["server_writes_per_msg"] for r in runs]), med([r["client_reads_per_msg"] for r in runs]))
        rows.append(row)
        ratio[(p, mode)] = row
with open(f"{out}/summary.md", "w") as s:
    s.write("| preset | transport | runs | msgs/s | server CPU (cores) | server CPU µs/msg | p50 µs | p99 µs | p99.9 µs | worst loss % | server writes/msg | client reads/msg |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for p, mode, n, mps, cpu, upm, p50, p99, p999, loss, wpm, rpm in rows:
        s.write(f"| {p} | {mode} | {n} | {mps:,.0f} | {cpu:.3f} | {upm:.3f} | {p50:.1f} | {p99:.1f} | {p999:.1f} | {loss:.4f} | {wpm:.3f} | {rpm:.3f} |\n")
    s.write("\n| preset | TLS ÷ plain: CPU per msg | p50 | p99 |\n|---|---|---|---|\n")
    for p in ("hft", "retail"):
        a, b = ratio[(p, "plain")], ratio[(p, "tls")]
        s.write(f"| {p} | {b[5] / a[5]:.2f} | {b[6] / a[6]:.2f} | {b[7] / a[7]:.2f} |\n")
print(open(f"{out}/summary.md").read())
PY
