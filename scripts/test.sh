#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds, and
# runs every test against a private PostgreSQL (or $DATABASE_URL if set).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
scripts/build.sh
scripts/with-postgres.sh ctest --test-dir build --output-on-failure -j2
