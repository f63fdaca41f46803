#!/usr/bin/env bash
# tests/openapi/run.sh PATH/TO/h2pg
#
# The OpenAPI test: checks openapi/openapi.json with validate.mjs, then
# serves a fresh database with the given binary and checks with
# conformance.mjs that what the server answers conforms to the document;
# a second server, whose database is unreachable, gets the 503 cases, and
# a third, with bearer authentication and a rate limit, the 401, 403 and
# 429 ones.
#
# Needs DATABASE_URL (run it under scripts/with-postgres.sh, as CTest's
# test_openapi does): a database named h2pg_openapi_* is created there and
# dropped afterwards. Installs Node.js and npm from Debian when they are
# missing, and the validators (package-lock.json) when node_modules is
# missing or older than the lock file.
#
# tests/openapi/run.sh --prepare does only that install (H2PG_BUILD_ONLY=1
# scripts/test.sh), without a server or a database.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# Node.js and the packages of package-lock.json; sets bin, cds to here
# shellcheck source=tests/support/node.sh
. "$here/../support/node.sh"
node_test_start openapi "$here" "$@"

node validate.mjs

# ---- a server on a fresh database ----

tmp="$(mktemp -d "${TMPDIR:-/tmp}/h2pg-openapi.XXXXXX")"
db="h2pg_openapi_$$_${RANDOM}"
db_created=0
pids=()

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    set +e
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
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

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# GET /healthz answers 200 (bash alone: no curl needed).
healthy() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
        IFS= read -r -t 2 line <&3
        [[ "$line" == "HTTP/1."?" 200"* ]]
    ) 2>/dev/null
}

# start_server NAME DATABASE_URL [ENV=VALUE...]: starts h2pg serve on a free
# port and waits until it answers /healthz; sets $port.
start_server() {
    local name="$1" url="$2"
    shift 2
    local attempt pid
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
    for attempt in $(seq 1 20); do
        while port_in_use "$port"; do
            port=$((port >= 60000 ? 20000 : port + 1))
        done
        env DATABASE_URL="$url" HOST=127.0.0.1 PORT="$port" THREADS=2 LOG_FORMAT=text LOG_LEVEL=info "$@" \
            "$bin" serve >"$tmp/$name.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        for _ in $(seq 1 300); do
            if healthy "$port"; then
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "openapi: $name did not answer /healthz on port $port within 30 s" >&2
            return 1
        fi
        # It exited: most likely another process took the port first. Or a
        # stray signal stopped it (on a busy machine pids are reused fast,
        # and someone may signal a pid that was once theirs): it logs that.
        local status=0
        wait "$pid" || status=$?
        unset 'pids[-1]' # reaped: its pid may soon be another process's
        if grep -q "received SIG" "$tmp/$name.log"; then
            echo "openapi: $name was stopped by a signal it did not expect at start; starting it again" >&2
        elif [[ $attempt -eq 20 ]] || ! grep -qi "address already in use\|bind" "$tmp/$name.log"; then
            if [[ $status -gt 128 ]]; then
                echo "openapi: $name died at start from signal $((status - 128)) ($(kill -l "$((status - 128))" 2>/dev/null))" >&2
            else
                echo "openapi: $name exited at start with status $status" >&2
            fi
            return 1
        fi
        port=$((port >= 60000 ? 20000 : port + 1))
    done
    return 1
}

start_server server "$db_url"
base="http://127.0.0.1:$port"

# Nothing listens on a port of ours that we close again: the database of the
# second server is unreachable, so it answers 503 where the database is needed.
dead_port=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
while port_in_use "$dead_port"; do
    dead_port=$((dead_port >= 60000 ? 20000 : dead_port + 1))
done
start_server down "host=127.0.0.1 port=$dead_port dbname=none connect_timeout=2" \
    MIGRATE_ON_START=false POOL_MIN=0 POOL_ACQUIRE_TIMEOUT_MS=500
down="http://127.0.0.1:$port"

# A third with authentication and a rate limit, for the 401, 403 and 429
# answers: an HS256 key (an oct JWK) that conformance.mjs signs its token
# with, and a bucket of 6 requests refilled once a second.
key="$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
printf '{"keys":[{"kty":"oct","kid":"conformance","alg":"HS256","k":"%s"}]}\n' "$key" >"$tmp/jwks.json"
start_server guarded "$db_url" MIGRATE_ON_START=false AUTH_JWKS_FILE="$tmp/jwks.json" AUTH_ALGORITHMS=HS256 \
    RATE_LIMIT_PER_S=1 RATE_LIMIT_BURST=6
guarded="http://127.0.0.1:$port"

H2PG_CONFORMANCE_HS256_KEY="$key" node conformance.mjs "$base" "$down" "$guarded"
