#!/usr/bin/env bash
# tests/sse/run.sh PATH/TO/h2pg
#
# GET /events read by the npm `eventsource` package (resume.mjs): a real
# EventSource client that reconnects by itself with Last-Event-ID across a
# server restart. Needs DATABASE_URL (scripts/with-postgres.sh, as CTest's
# test_sse_eventsource runs it): a database h2pg_sse_* is made and dropped.
# Installs Node.js and npm from Debian when they are missing, and the
# client (package-lock.json) when node_modules is older than the lock.
#
# tests/sse/run.sh --prepare does only that install.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# Node.js and the packages of package-lock.json; sets bin, cds to here
# shellcheck source=tests/support/node.sh
. "$here/../support/node.sh"
node_test_start sse "$here" "$@"

db="h2pg_sse_$$_${RANDOM}"
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
trap 'psql "$DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null' EXIT
db_url="$(node_test_db_url "$db")"
H2PG="$bin" DATABASE_URL="$db_url" node resume.mjs
