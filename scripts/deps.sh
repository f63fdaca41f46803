#!/usr/bin/env bash
# Installs the Debian packages a task needs, only those missing.
#   scripts/deps.sh build   compiler, CMake and the -dev libraries
#   scripts/deps.sh run     build + PostgreSQL 15 (for the private database)
#   scripts/deps.sh test    run + everything the test suite drives
#   scripts/deps.sh fuzz    build + clang and its libFuzzer runtime (scripts/fuzz.sh)
# scripts/fresh-test.sh proves on a fresh bookworm container that `run` is
# enough for scripts/run.sh and `test` for building what scripts/test.sh runs.
set -euo pipefail

# pkg-config modules of CMakeLists.txt and cmake/parts/*.cmake: libh2o-evloop,
# libpq, jansson, openssl, libcurl, cjose (bearer tokens), check (the tests' framework);
# mimalloc (the binary's allocator: CMake's find_package)
build=(build-essential cmake pkg-config libh2o-evloop-dev libpq-dev libjansson-dev libssl-dev libcurl4-openssl-dev
       libcjose-dev libmimalloc-dev check)
# initdb, pg_ctl, pg_isready (scripts/with-postgres.sh; runuser is in
# util-linux, which every Debian has); curl for the README's examples
run=("${build[@]}" postgresql-15 postgresql-client-15 curl ca-certificates)
test=("${run[@]}" clang libclang-rt-14-dev shellcheck gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
      nginx iproute2 prometheus pgbouncer openssl)
fuzz=("${build[@]}" clang libclang-rt-14-dev)
# the compose test (scripts/compose-test.sh) installs podman and friends itself

case "${1:-test}" in
build) want=("${build[@]}") ;;
run) want=("${run[@]}") ;;
test) want=("${test[@]}") ;;
fuzz) want=("${fuzz[@]}") ;;
*) echo "usage: $0 build|run|test|fuzz" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done
# Node.js runs the OpenAPI validator. A machine may already have another
# build of it (e.g. nodesource's, which bundles npm and conflicts with
# Debian's npm package): use whatever node and npm are on PATH.
if [ "${1:-test}" = test ] && ! { command -v node >/dev/null && command -v npm >/dev/null; }; then
    missing+=(nodejs npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
