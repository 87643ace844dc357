#!/usr/bin/env bash
# Two superres binaries on one model and size in alternating rounds: each round runs
# `superres bench --json` with each binary in turn, and the script prints each binary's
# best time, the median of its per-round medians, and the median of the per-round ratios
# (B / A), which is what this noisy machine lets one compare (BENCHMARKS.md).
#
#   bash bench/ab.sh MODEL WxH ROUNDS BIN_A BIN_B        # RUNS=7 THREADS=2 by default
set -euo pipefail
model=${1:?model file or name} size=${2:?WxH} rounds=${3:?rounds} a=${4:?binary A} b=${5:?binary B}
runs=${RUNS:-7}
export RAYON_NUM_THREADS=${THREADS:-2}
for _ in $(seq "$rounds"); do
    for bin in "$a" "$b"; do
        printf '%s ' "$bin"
        "$bin" bench --model "$model" --device cpu --size "$size" --runs "$runs" --json 2>/dev/null |
            python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["min_ms"], d["median_ms"])'
    done
done | python3 -c '
import statistics, sys
rounds = {}
for line in sys.stdin:
    bin, best, median = line.split()
    rounds.setdefault(bin, []).append((float(best), float(median)))
(a, ra), (b, rb) = rounds.items()
for name, r in ((a, ra), (b, rb)):
    print(f"{name}: best {min(x[0] for x in r):.1f} ms, median of medians {statistics.median(x[1] for x in r):.1f} ms")
print(f"B / A, median of {len(ra)} rounds: {statistics.median(y[1] / x[1] for x, y in zip(ra, rb)):.3f}")
'
