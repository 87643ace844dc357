#!/usr/bin/env bash
# Tiling of a deep network in bounded memory: an RRDBNet x4 of RealESRGAN_x4plus's shape
# (seeded random weights, bench/rrdb_x4plus.py) on the CPU.
#
#   bash bench/tiling.sh [SUPERRES_BINARY] [SHARED_DIR]
#
# 1. The network alone, whole image, 256x192 (one run after a warm-up): the compute rate.
# 2. The tiled pipeline at 640x480 with default settings (auto: blend at the default 768 MiB budget):
#    the tiling chosen, wall time and the process's peak RSS (VmHWM).
# 3. Blend against the whole image (--tile 0) on shared photos: PSNR over RGB.
# About 10 minutes on 2 cores. BENCHMARKS.md has the numbers.
set -euo pipefail
BIN=${1:-target/release/superres}
SHARED=${2:-${SUPERRES_SHARED:-../shared}}
OUT=${TILING_OUT:-/tmp/superres-tiling}
mkdir -p "$OUT"
M=$OUT/rrdb_x4plus.safetensors
[ -f "$M" ] || python3 "$(dirname "$0")/rrdb_x4plus.py" "$M"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== network alone, whole image 256x192"
"$BIN" bench --model "$M" --device cpu --size 256x192 --runs 1 --json

echo "== pipeline, 640x480, default settings"
"$BIN" bench --model "$M" --device cpu --size 640x480 --runs 1 --pipeline --json

echo "== blend vs whole image (PSNR, RGB)"
for img in ${TILING_IMAGES:-opencv/comic.jpg opencv/home.png}; do
    name=$(basename "${img%.*}")
    src=$SHARED/images/$img
    /usr/bin/time -f "$name whole: %e s, max RSS %M KiB" \
        "$BIN" upscale "$src" --model "$M" --device cpu --tile 0 -q -o "$OUT/${name}_whole.png"
    /usr/bin/time -f "$name default (auto): %e s, max RSS %M KiB" \
        "$BIN" upscale "$src" --model "$M" --device cpu -q -o "$OUT/${name}_auto.png"
    python3 - "$OUT/${name}_whole.png" "$OUT/${name}_auto.png" <<'EOF'
import sys
import numpy as np
from PIL import Image
a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in sys.argv[1:3])
mse = ((a - b) ** 2).mean()
print(f"{sys.argv[2]}: {a.shape[1]}x{a.shape[0]}, PSNR vs whole "
      f"{10 * np.log10(255 ** 2 / mse) if mse else float('inf'):.2f} dB, "
      f"max |diff| {np.abs(a - b).max():.0f}, differing {100 * (a != b).mean():.2f} %")
EOF
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
