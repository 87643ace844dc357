#!/usr/bin/env bash
# Bounded soak test of `superres serve`: a real server under mixed traffic (valid and hostile
# uploads, jobs followed by server-sent events, cancels, model reloads, bursts past the queue)
# for MINUTES minutes, checking every answer, that no accepted job is lost, that RSS, open
# descriptors and threads do not grow by more than 10% after the warm-up, and that SIGTERM
# stops the server with status 0. bench/soak.py has the details and RELIABILITY.md the rule.
#
#   bench/soak.sh MINUTES [soak.py options]     e.g. bench/soak.sh 30 --json soak.json
#
# MINUTES may be fractional (0.5 for a quick check). The binary is $SUPERRES_BIN, default
# target/release/superres; the tiny model comes from ${SUPERRES_SHARED:-../shared}. Exits 0
# when every check passed, 1 when one failed (named in the summary), 2 on a usage error.
set -euo pipefail

usage() {
    echo "usage: bench/soak.sh MINUTES [--json FILE] [--log FILE] [other bench/soak.py options]" >&2
    echo "       (python3 bench/soak.py --help lists the options)" >&2
    exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
minutes=$1
shift
if ! [[ $minutes =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)$ ]] || ! awk -v m="$minutes" 'BEGIN { exit !(m > 0) }'; then
    echo "soak: MINUTES must be a positive number, not '$minutes'" >&2
    usage
fi

# Paths given by the caller are taken from the caller's folder; the defaults from the repository.
bin=${SUPERRES_BIN:-$repo/target/release/superres}
if [ ! -x "$bin" ]; then
    echo "soak: no superres binary at $bin" >&2
    echo "      build it with: cargo build --release --bin superres   (or set SUPERRES_BIN)" >&2
    exit 2
fi
shared=${SUPERRES_SHARED:-$repo/../shared}

command -v python3 >/dev/null || { echo "soak: python3 is needed" >&2; exit 2; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    { echo "soak: python3 is older than 3.9" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/superres-soak.XXXXXX")
driver=""
cleanup() {
    trap - EXIT INT TERM
    # The driver stops the server itself; this is for a driver that could not.
    if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
        kill -TERM "$driver" 2>/dev/null || true
        wait "$driver" 2>/dev/null || true
    fi
    if [ -s "$work/server.pid" ]; then
        server=$(cat "$work/server.pid")
        if kill -0 "$server" 2>/dev/null; then
            kill -TERM "$server" 2>/dev/null || true
            sleep 2
            if kill -0 "$server" 2>/dev/null; then kill -KILL "$server" 2>/dev/null || true; fi
        fi
    fi
    rm -rf "$work"
}
trap 'status=$?; cleanup; exit $status' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# In the background with `wait`, so that a signal to this script is handled at once.
python3 "$here/soak.py" --minutes "$minutes" --bin "$bin" --repo "$repo" --shared "$shared" \
    --workdir "$work" "$@" &
driver=$!
set +e
wait "$driver"
status=$?
set -e
driver=""
exit "$status"
