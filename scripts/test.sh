#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds, and
# runs every test against a private PostgreSQL (or $DATABASE_URL if set):
#   1. the normal build (build/);
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
#      (build-asan/, clang): any report, leaks at exit included, fails it;
#   3. the Docker Compose stack, run with podman (scripts/compose-test.sh).
# SKIP_SANITIZERS=1 or SKIP_COMPOSE=1 leave a stage out (for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
scripts/build.sh

echo "== tests (build/)"
scripts/with-postgres.sh ctest --test-dir build --output-on-failure -j2

if [ -z "${SKIP_SANITIZERS:-}" ]; then
    echo "== tests under ASan + UBSan (build-asan/)"
    cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DH2PG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build build-asan -j"$(nproc)"
    # a small quarantine keeps memory figures meaningful for the RSS tests
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:quarantine_size_mb=16:malloc_context_size=10 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        scripts/with-postgres.sh ctest --test-dir build-asan --output-on-failure -j2 -E test_aio_ctx_aarch64
fi

if [ -z "${SKIP_COMPOSE:-}" ]; then
    echo "== docker compose stack (podman)"
    scripts/compose-test.sh
fi
echo "== all tests passed"
