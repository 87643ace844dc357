#!/usr/bin/env bash
# Coverage-guided fuzzing of the readers of untrusted bytes (see RELIABILITY.md).
#
#   scripts/fuzz.sh TARGET MINUTES   build, seed the corpus, fuzz TARGET for MINUTES minutes
#   scripts/fuzz.sh all SECONDS      build, then fuzz every target for SECONDS seconds each
#   scripts/fuzz.sh build            build the targets only
#   scripts/fuzz.sh list             print the targets
#   scripts/fuzz.sh repro TARGET FILE...  run TARGET once on each FILE (no fuzzing)
#
# Targets: tf_import, onnx_import (superres_import::load_bytes), image_probe (probe and
# probe_header, the upload's header check), image_decode (decode), multipart_upload (the
# server's multipart extractor, then the header check).
#
# The targets link libFuzzer through the libfuzzer-sys crate and are built by the stable
# toolchain with LLVM's SanitizerCoverage instrumentation, which stable rustc accepts as
# plain codegen options; no nightly features are used. Builds go to fuzz/target.
#
# Corpora live in fuzz/corpus/TARGET (not committed); each run first adds the committed seeds
# (fuzz/seeds) and the shared assets ($SUPERRES_SHARED, default ../shared: models cut to their
# first 64 KiB, images likewise). Crashes are written to fuzz/artifacts/TARGET and make the
# script exit non-zero; reproduce one with `scripts/fuzz.sh repro TARGET FILE`.
#
# Environment: FUZZ_JOBS (parallel fuzzing processes per target, default 1),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_TIMEOUT_S (one input, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
fuzz="$root/fuzz"
shared="${SUPERRES_SHARED:-$root/../shared}"
targets=(tf_import onnx_import image_probe image_decode multipart_upload)
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$fuzz/target/$host/release"

usage() {
  sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

build() {
  # --target keeps the instrumentation off build scripts and proc macros.
  RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares ${FUZZ_RUSTFLAGS:-}" \
    cargo build --manifest-path "$fuzz/Cargo.toml" --release --locked --target "$host" \
    --bins
}

# Copies the first 64 KiB of FILE into DIR, named by its content hash.
seed() {
  local dir="$1" file="$2" name
  name="$(head -c 65536 "$file" | sha1sum | cut -c1-40)"
  [ -e "$dir/$name" ] || head -c 65536 "$file" >"$dir/$name"
}

# An upload of image FILE as multipart_upload reads it: QUERY \n CONTENT-TYPE \n BODY.
multipart_seed() {
  local out="$1" file="$2" b="superres-fuzz-b0undary"
  {
    printf 'model=default&format=png\nmultipart/form-data; boundary=%s\n' "$b"
    printf -- '--%s\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n' "$b"
    printf 'Content-Type: application/octet-stream\r\n\r\n'
    cat "$file"
    printf '\r\n--%s\r\nContent-Disposition: form-data; name="format"\r\n\r\njpeg\r\n' "$b"
    printf -- '--%s\r\nContent-Disposition: form-data; name="other"\r\n\r\nignored\r\n--%s--\r\n' "$b" "$b"
  } >"$out"
}

seed_corpus() {
  local target="$1" dir="$fuzz/corpus/$1" f
  mkdir -p "$dir"
  if [ "$target" = multipart_upload ]; then
    local tmp
    tmp="$(mktemp)"
    for f in "$fuzz/seeds/images"/*; do
      multipart_seed "$tmp" "$f"
      seed "$dir" "$tmp"
    done
    rm -f "$tmp"
    echo "fuzz: $target: corpus of $(find "$dir" -type f | wc -l) inputs" >&2
    return
  fi
  if [ -d "$fuzz/seeds/$target" ]; then
    for f in "$fuzz/seeds/$target"/*; do [ -f "$f" ] && seed "$dir" "$f"; done
  fi
  local patterns=()
  case "$target" in
    tf_import) patterns=("$shared/models/opencv" "$shared/models/synthetic") ;;
    onnx_import) patterns=("$root/crates/import/tests/fixtures" "$root/models") ;;
    image_probe | image_decode) patterns=("$shared/images" "$fuzz/seeds/images") ;;
  esac
  local found=0
  for d in "${patterns[@]}"; do
    [ -d "$d" ] || continue
    while IFS= read -r -d '' f; do
      seed "$dir" "$f"
      found=$((found + 1))
    done < <(find "$d" -type f \( -name '*.pb' -o -name '*.onnx' -o -name '*.png' \
      -o -name '*.jpg' -o -name '*.jpeg' -o -name '*.webp' -o -name '*.bmp' -o -name '*.tif' \
      -o -name '*.tiff' -o -name '*.gif' \) -print0)
  done
  if [ "$found" -eq 0 ]; then
    echo "fuzz: no seed files for $target (is $shared there?)" >&2
    exit 1
  fi
  echo "fuzz: $target: corpus of $(find "$dir" -type f | wc -l) inputs ($found seed files)" >&2
}

# Fuzzes TARGET for SECONDS seconds; non-zero exit status on a crash.
run() {
  local target="$1" seconds="$2"
  seed_corpus "$target"
  mkdir -p "$fuzz/artifacts/$target"
  local jobs="${FUZZ_JOBS:-1}" extra=()
  [ "$jobs" -gt 1 ] && extra=(-fork="$jobs")
  # Inputs up to 64 KiB (the seeds' size), a per-input timeout (a hang is a crash), and an
  # RSS ceiling (single allocations are bounded by the targets' own allocator).
  "$bin_dir/$target" "$fuzz/corpus/$target" \
    -artifact_prefix="$fuzz/artifacts/$target/" \
    -max_total_time="$seconds" -max_len=65536 \
    -timeout="${FUZZ_TIMEOUT_S:-10}" -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
    -print_final_stats=1 "${extra[@]}" ${FUZZ_ARGS:-}
}

[ $# -ge 1 ] || usage
# Where the shared assets must be there (CI), their absence is an error, not thinner seeds.
if [ -n "${SUPERRES_REQUIRE_SHARED:-}" ] && { [ ! -d "$shared/models" ] || [ ! -d "$shared/images" ]; }; then
  echo "fuzz: SUPERRES_REQUIRE_SHARED is set but $shared/models or $shared/images is missing" >&2
  exit 1
fi
case "$1" in
  list) printf '%s\n' "${targets[@]}" ;;
  build) build ;;
  repro)
    [ $# -ge 3 ] || usage
    build
    target="$2"
    shift 2
    "$bin_dir/$target" "$@"
    ;;
  all)
    [ $# -eq 2 ] || usage
    build
    status=0
    for t in "${targets[@]}"; do
      echo "fuzz: $t for $2 s" >&2
      run "$t" "$2" || { status=1; echo "fuzz: $t FAILED (see fuzz/artifacts/$t)" >&2; }
    done
    exit "$status"
    ;;
  *)
    [ $# -eq 2 ] || usage
    printf '%s\n' "${targets[@]}" | grep -qx "$1" || { echo "fuzz: unknown target '$1'" >&2; usage; }
    build
    run "$1" "$(($2 * 60))"
    ;;
esac
