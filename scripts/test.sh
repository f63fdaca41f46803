#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds, and
# runs every test against a private PostgreSQL (or $DATABASE_URL if set):
#   1. the normal build (build/);
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
#      (build-asan/, clang): any report, leaks at exit included, fails it;
#   3. the Docker Compose stack, run with podman (scripts/compose-test.sh);
#   4. a fresh Debian bookworm container (scripts/fresh-test.sh): the README's
#      two commands work there from nothing, scripts/run.sh serves and this
#      script installs and builds everything stages 1 and 2 run.
# SKIP_SANITIZERS=1, SKIP_COMPOSE=1 or SKIP_FRESH=1 leave a stage out (for
# quick local runs). H2PG_BUILD_ONLY=1 installs and builds what stages 1 and
# 2 need (and the OpenAPI test's npm packages) and runs no test; stages 3
# and 4 are left out (stage 4 runs this so inside its container).
set -euo pipefail
cd "$(dirname "$0")/.."
build_only="${H2PG_BUILD_ONLY:-}"
scripts/deps.sh test
# ON explicitly: scripts/run.sh configures build/ without the tests.
scripts/build.sh -DBUILD_TESTING=ON

if [ -n "$build_only" ]; then
    echo "== built build/ (H2PG_BUILD_ONLY: no test runs)"
    # what test_openapi installs when it runs, from the node and npm that
    # deps.sh installed (tests/openapi/run.sh would install them itself)
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "test: node or npm is missing after scripts/deps.sh test" >&2
        exit 1
    fi
    tests/openapi/run.sh --prepare
    tests/auth/run.sh --prepare
    tests/sse/run.sh --prepare
    # and test_webhooks' receiver (tests/webhooks/package-lock.json)
    (cd tests/webhooks && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "== tests (build/)"
    scripts/with-postgres.sh ctest --test-dir build --output-on-failure -j2
fi

if [ -z "${SKIP_SANITIZERS:-}" ]; then
    echo "== tests under ASan + UBSan (build-asan/)"
    out="$(mktemp "${TMPDIR:-/tmp}/h2pg-configure.XXXXXX")"
    if ! cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DH2PG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DBUILD_TESTING=ON >"$out"; then
        echo "---- cmake's configure output (last 25 lines)" >&2
        tail -n 25 "$out" >&2
        rm -f "$out"
        exit 1
    fi
    rm -f "$out"
    cmake --build build-asan -j"$(nproc)"
    if [ -n "$build_only" ]; then
        echo "== built build-asan/ (H2PG_BUILD_ONLY: no test runs)"
    else
        # a small quarantine keeps memory figures meaningful for the RSS tests
        ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:quarantine_size_mb=16:malloc_context_size=10 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            scripts/with-postgres.sh ctest --test-dir build-asan --output-on-failure -j2 -E test_aio_ctx_aarch64
    fi
fi
if [ -n "$build_only" ]; then
    echo "== built everything the tests need"
    exit 0
fi

if [ -z "${SKIP_COMPOSE:-}" ]; then
    echo "== docker compose stack (podman)"
    scripts/compose-test.sh
fi

# Last: it checks how the project is installed and built, not how it
# behaves, so the stages that test the behaviour report first (code that
# does not build fails stage 1 already, in a minute); it spends minutes
# installing every package again in a container; and after stage 3,
# podman, its configuration and the debian:bookworm-slim image it starts
# from (scripts/lib/podman.sh) are in place already.
if [ -z "${SKIP_FRESH:-}" ]; then
    echo "== the README's commands on a fresh Debian bookworm (podman)"
    scripts/fresh-test.sh
fi
echo "== all tests passed"
