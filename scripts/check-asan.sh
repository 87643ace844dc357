#!/usr/bin/env bash
# Runs the CPU kernels' tests under AddressSanitizer: every SIMD path this processor has
# (AVX-512, AVX2, portable) against the reference interpreter, with out-of-bounds reads and
# writes of the unsafe kernel code reported at the faulting access.
#
# Needs a nightly toolchain (`-Zsanitizer` is unstable); builds into its own target
# directory. About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "check-asan: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/asan}" \
    cargo +nightly test --target "$host" --release -p superres-engine "$@"
