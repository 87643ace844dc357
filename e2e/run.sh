#!/usr/bin/env bash
# Runs the web page's end-to-end tests in headless Chromium.
#
# Installs what they need (Debian's chromium and ffmpeg when missing, playwright-core from
# package-lock.json), builds the server binary unless SUPERRES_BIN names one, and runs
# every e2e/*.test.js with Node's test runner. The tests against the real server are
# skipped, loudly, when no model is available (SUPERRES_E2E_MODEL, the shared OpenCV
# ESPCN ×3 file, or models/default_x3.onnx); the page tests against the stand-in API
# always run.
#
# Environment: SUPERRES_BIN (server binary; default target/debug/superres, built here),
# SUPERRES_E2E_MODEL (model file), SUPERRES_SHARED (shared assets folder),
# CHROMIUM_PATH (default /usr/bin/chromium), E2E_SKIP_BUILD=1 (use the binary as it is).
set -euo pipefail
cd "$(dirname "$0")"
E2E="$PWD"
ROOT="$(cd .. && pwd)"

if ! command -v node >/dev/null; then
  echo "e2e: node is required (Node.js 18 or newer)" >&2
  exit 1
fi

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)   # the video tests make their clips with it
if [ "${#missing[@]}" -gt 0 ]; then
  echo "e2e: installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

want="$(node -p "require('./package.json').dependencies['playwright-core']")"
have="$(node -p "try { require('./node_modules/playwright-core/package.json').version } catch { '' }")"
if [ "$want" != "$have" ]; then
  echo "e2e: npm ci"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

if [ -z "${SUPERRES_BIN:-}" ] && [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
  echo "e2e: cargo build -p superres-cli"
  (cd "$ROOT" && cargo build -q -p superres-cli)
fi

if [ -z "${SUPERRES_E2E_MODEL:-}" ]; then
  shared="${SUPERRES_SHARED:-$ROOT/../shared}"
  if [ ! -f "$shared/models/opencv/ESPCN_x3.pb" ] && [ ! -f "$ROOT/models/default_x3.onnx" ]; then
    echo "************************************************************************"
    echo "e2e: SKIPPING the real-server tests: no model (set SUPERRES_E2E_MODEL)"
    echo "************************************************************************"
  fi
fi

cd "$E2E"
exec node --test --test-concurrency=1 ./*.test.js
