#!/usr/bin/env bash
# tests/auth/run.sh PATH/TO/h2pg
#
# The bearer-token, rate-limit and CORS test: auth.mjs mints tokens with the
# npm `jose` package (a JOSE implementation the service does not contain),
# starts the given binary several times with AUTH_JWKS_FILE, AUTH_JWKS_URL
# (served by a small local HTTP server), RATE_LIMIT_* and CORS_ALLOW_ORIGINS,
# and checks what it answers.
#
# Needs DATABASE_URL (run it under scripts/with-postgres.sh, as CTest's
# test_auth does): a database named h2pg_auth_* is created there and dropped
# afterwards. Installs Node.js and npm from Debian when they are missing,
# and jose (package-lock.json) when node_modules is missing or stale.
#
# tests/auth/run.sh --prepare does only that install (H2PG_BUILD_ONLY=1
# scripts/test.sh), without a server or a database.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# Node.js and the packages of package-lock.json; sets bin, cds to here
# shellcheck source=tests/support/node.sh
. "$here/../support/node.sh"
node_test_start auth "$here" "$@"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/h2pg-auth.XXXXXX")"
db="h2pg_auth_$$_${RANDOM}"
db_created=0

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    set +e
    if [[ $db_created -eq 1 ]]; then
        psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
    fi
    [[ $status -eq 0 ]] || node_test_show_logs "$tmp"
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
db_created=1
db_url="$(node_test_db_url "$db")"

node auth.mjs "$bin" "$db_url" "$tmp"
