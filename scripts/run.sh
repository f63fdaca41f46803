#!/usr/bin/env bash
# Installs what is missing, builds, and serves on :8080. Without DATABASE_URL
# a private PostgreSQL is started for the session (its data is thrown away at
# exit); with it, that database is used. Extra arguments go to `h2pg serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run
# The service only: the tests need more than `deps.sh run` installs.
scripts/build.sh --target h2pg -DBUILD_TESTING=OFF
if [ -z "${DATABASE_URL:-}" ]; then
    exec scripts/with-postgres.sh build/h2pg serve "$@"
fi
exec build/h2pg serve "$@"
