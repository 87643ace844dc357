#!/usr/bin/env bash
# Cross-compiles the engine crates for 64-bit ARM Linux (aarch64-unknown-linux-gnu) and runs
# their tests under qemu user-mode emulation. On aarch64 the x86-only SIMD kernels are compiled
# out and the portable kernels (`Isa::Scalar`) run, so this checks those too.
#
#   scripts/check-aarch64.sh                  # build all five crates, test graph engine imaging import
#   scripts/check-aarch64.sh graph engine     # test only these (short names, without `superres-`)
#   scripts/check-aarch64.sh all              # also upscale (its OpenCV parity tests are slow under qemu)
#
# Cargo's own settings apply as usual (CARGO_TARGET_DIR, CARGO_BUILD_JOBS), and so does
# SUPERRES_SHARED for the tests that read OpenCV's models and reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu   # the ARM64 C library of Debian's cross packages
ALL=(graph engine import imaging upscale)
if [ $# -eq 0 ]; then TEST=(graph engine imaging import)
elif [ "$1" = all ]; then TEST=("${ALL[@]}")
else TEST=("$@"); fi

# 1. Cross linker, ARM64 C library and qemu-aarch64, installed only when missing.
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
   || [ ! -e "$SYSROOT/lib/crt1.o" ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# 2. Link with the cross gcc; run test binaries (and doctests) through qemu.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT"

pkgs() { for c in "$@"; do printf -- '-p superres-%s ' "$c"; done; }
# shellcheck disable=SC2046  # word splitting of the -p list is intended
{
  cargo build --target "$TARGET" $(pkgs "${ALL[@]}")
  cargo test --target "$TARGET" --no-run $(pkgs "${ALL[@]}")
  cargo test --target "$TARGET" $(pkgs "${TEST[@]}")
}
echo "aarch64: built ${ALL[*]}; tests passed under qemu: ${TEST[*]}"
