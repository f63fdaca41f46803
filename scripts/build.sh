#!/usr/bin/env bash
# Configures and builds into build/.
#   scripts/build.sh [--target NAME]... [CMAKE_ARGS...]
# --target NAME builds only NAME (and what it needs), and may be repeated;
# without it every target is built. The other arguments go to CMake's
# configure step, e.g. -DBUILD_TESTING=OFF (scripts/run.sh) or ON
# (scripts/test.sh): a cache variable stays as the last configure set it.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
while [[ $# -ge 2 && "$1" == --target ]]; do
    targets+=(--target "$2")
    shift 2
done
# The configure step's report only when it fails: it names what is missing
# ("Package 'jansson', required by 'virtual:world', not found").
out="$(mktemp "${TMPDIR:-/tmp}/h2pg-configure.XXXXXX")"
if ! cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$out"; then
    echo "---- cmake's configure output (last 25 lines)" >&2
    tail -n 25 "$out" >&2
    rm -f "$out"
    exit 1
fi
rm -f "$out"
cmake --build build -j"$(nproc)" "${targets[@]}"
