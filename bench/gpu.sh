#!/usr/bin/env bash
# The GPU acceptance run and benchmark: every check and number of BENCHMARKS.md's GPU
# section, in one command, within about 8 minutes on one H100/H200.
#
# Here (any machine, with the shared assets):
#   bash bench/gpu.sh pack            # release build, stripped binary, models, oracle -> gpu-pack/ (~25 MiB)
# On the GPU machine (no network needed; PyTorch's Python supplies CUDA's libraries):
#   bash bench/gpu.sh [PACK_DIR]      # default gpu-pack
#
# Libraries: libcuda comes with the driver; libnvrtc and libcudnn are found in the
# site-packages/nvidia/*/lib folders of the `python3` on PATH (PyTorch's wheels ship them),
# passed to superres as SUPERRES_CUDA_LIBS. Exit status 1 if any check fails: exact
# precision beyond one level of OpenCV on any reference case, the default precision under
# 50 dB against exact, a missed target, an error status from the server, or an
# out-of-memory on the 4000x3000 photo. The last lines are a table.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = pack ]; then
    shared=${SUPERRES_SHARED:-../shared}
    cargo build --release --bin superres
    python3 -m pip install -q --disable-pip-version-check numpy pillow
    exec python3 bench/gpu.py pack --shared "$shared" --bin target/release/superres --out gpu-pack
fi

pack=${1:-gpu-pack}
SUPERRES_CUDA_LIBS="$(python3 - <<'PY'
import glob, os, site, sysconfig
roots = set(site.getsitepackages()) | {sysconfig.get_paths()["purelib"]}
dirs = sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "nvidia", "*", "*", "lib"))})
print(":".join(dirs))
PY
)"
export SUPERRES_CUDA_LIBS
export SUPERRES_CACHE_DIR=${SUPERRES_CACHE_DIR:-/tmp/superres-cache}
echo "SUPERRES_CUDA_LIBS=$SUPERRES_CUDA_LIBS"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
exec timeout 900 python3 -u bench/gpu.py run --pack "$pack" "${@:2}"
