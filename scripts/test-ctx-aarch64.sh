#!/usr/bin/env bash
# Cross-compiles the context-switch self-test for aarch64 and runs it under
# qemu-user, so the hand-written aarch64 switch is exercised on any machine.
# Usage: scripts/test-ctx-aarch64.sh   (needs gcc-aarch64-linux-gnu, qemu-user)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for opt in -O0 -O2; do
    aarch64-linux-gnu-gcc "$opt" -static -D_GNU_SOURCE -I. tests/aio/ctx_selftest.c aio/ctx.c \
        -o "$out/ctx_selftest"
    qemu-aarch64 "$out/ctx_selftest"
done
