#!/usr/bin/env bash
# Every number of BENCHMARKS.md's current round, in one run: OpenCV side by side on each
# model, superres's thread scaling and size scaling, and peak memory.
#
#   bash bench/report.sh [SHARED_DIR] [SUPERRES_BINARY]
#
# Needs: pip install opencv-contrib-python-headless==4.14.0.94 numpy; GNU time (/usr/bin/time).
# Takes about 10 minutes on 2 cores. Run it on an otherwise idle machine: it prints the load
# average next to every block.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-${SUPERRES_SHARED:-../shared}}
sr=${2:-target/release/superres}
[ -x "$sr" ] || cargo build --release --bin superres
edsr=$shared/models/synthetic/EDSR_B32F256_x3.pb
cv=$shared/models/opencv
side() { python3 bench/opencv_side_by_side.py --superres "$sr" "$@"; echo; }

echo "## $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD), $(nproc) CPUs"
echo
echo "### OpenCV side by side, 2 threads"
side "$edsr" 64x48 --runs 4 --rounds 6
side "$edsr" 160x120 --runs 3 --rounds 3
side "$cv/ESPCN_x3.pb" 256x256 --runs 20 --rounds 5
side "$cv/FSRCNN_x3.pb" 256x256 --runs 20 --rounds 5
side "$cv/LapSRN_x4.pb" 256x256 --runs 3 --rounds 3

echo "### superres thread scaling (EDSR x3, 160x120) and size scaling (1 thread)"
for t in 1 2; do
    RAYON_NUM_THREADS=$t "$sr" bench --model "$edsr" --size 160x120 --runs 3
done
for s in 32x24 64x48 128x96 160x120 320x240; do
    RAYON_NUM_THREADS=1 "$sr" bench --model "$edsr" --size "$s" --runs 3
done
echo
echo "### Peak memory (GNU time, maximum resident set)"
for m in "$edsr" "$cv/FSRCNN_x3.pb" "$cv/LapSRN_x8.pb"; do
    /usr/bin/time -f "  $(basename "$m") bench 160x120: %M KiB" \
        "$sr" bench --model "$m" --size 160x120 --runs 1 >/dev/null
done
big=$(mktemp -d)/photo_4000x3000.png
python3 -c "import cv2, numpy as np, sys; cv2.imwrite(sys.argv[1], cv2.resize(cv2.imread(sys.argv[2]), (4000, 3000), interpolation=cv2.INTER_CUBIC))" \
    "$big" "$shared/images/opencv/div2k.jpg"
/usr/bin/time -f "  FSRCNN_x3 upscale of a 4000x3000 photo (tiled, default budget): %M KiB, %e s" \
    "$sr" upscale "$big" -o "${big%.png}_x3.png" --model "$cv/FSRCNN_x3.pb" >/dev/null
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
