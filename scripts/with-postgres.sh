#!/usr/bin/env bash
# with-postgres.sh COMMAND [ARGS...]
#
# Runs COMMAND with DATABASE_URL pointing at a PostgreSQL server. If
# DATABASE_URL is already set, that server is used and this script only execs
# COMMAND. Otherwise a private, throwaway PostgreSQL 15 runs for the duration
# of COMMAND: a fresh data directory under mktemp -d, trust authentication,
# listening only on 127.0.0.1 on a free port, tuned for tests rather than
# durability. It is stopped and deleted when COMMAND ends (or this script is
# interrupted); the exit status is COMMAND's.
#
# As root the server runs as the `postgres` system user (PostgreSQL refuses to
# run as root), which Debian's postgresql package creates; otherwise it runs
# as the current user. PG_BINDIR overrides where initdb/pg_ctl are found.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if [[ -n "${DATABASE_URL:-}" ]]; then
    exec "$@"
fi

die() {
    echo "with-postgres: $*" >&2
    exit 1
}

bindir="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
if [[ ! -x "$bindir/initdb" ]]; then
    # not Debian's layout: fall back to whatever initdb is on PATH
    initdb_path="$(command -v initdb || true)"
    [[ -n "$initdb_path" ]] || die "initdb not found in $bindir or on PATH (apt-get install postgresql-15)"
    bindir="$(dirname "$initdb_path")"
fi

if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres system user (apt-get install postgresql-15)"
    pguser=postgres
else
    pguser="$(id -un)"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/h2pg-pg.XXXXXX")"
server_started=0

# shellcheck disable=SC2317  # reached through the EXIT trap, which shellcheck does not follow
cleanup() {
    local status=$?
    # no set -e here: cleanup must run to the end whatever fails
    set +e
    if [[ $server_started -eq 1 ]]; then
        as_pg "$bindir/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
# exit runs the EXIT trap, so the server is stopped on a signal too
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a PostgreSQL tool as the server's user, from the temp directory: the
# caller's working directory may be closed to the postgres user.
as_pg() {
    if [[ "$pguser" == "$(id -un)" ]]; then
        (cd "$tmp" && "$@")
    else
        (cd "$tmp" && runuser -u "$pguser" -- "$@")
    fi
}

if [[ "$pguser" != "$(id -un)" ]]; then
    chown "$pguser": "$tmp"
    as_pg test -w "$tmp" || die "$tmp is not reachable for the $pguser user (set TMPDIR to a directory it can enter)"
fi

as_pg "$bindir/initdb" -D "$tmp/data" -U "$pguser" --auth=trust --encoding=UTF8 --locale=C --no-sync \
    >"$tmp/initdb.log" 2>&1 || {
    cat "$tmp/initdb.log" >&2
    die "initdb failed"
}

# Only local sockets and 127.0.0.1, no password: the server is private to
# this run and its directory is readable by its user only.
cat >"$tmp/data/pg_hba.conf" <<'EOF'
local all all trust
host  all all 127.0.0.1/32 trust
EOF

# For tests, not durability: a crash loses nothing that matters here.
cat >>"$tmp/data/postgresql.conf" <<EOF

# with-postgres.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 128MB
logging_collector = off
EOF

port_in_use() {
    # a connect that succeeds means something listens there
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Another process may take a port between the check and the bind, so a
# failed start moves on to the next port.
port=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
for attempt in $(seq 1 50); do
    while port_in_use "$port"; do
        port=$((port >= 60000 ? 20000 : port + 1))
    done
    # a fresh log per attempt, so the bind check below reads only this one
    rm -f "$tmp/postgres.log"
    if as_pg "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/postgres.log" -o "-p $port" -w -t 60 start >/dev/null 2>&1; then
        server_started=1
        break
    fi
    if ! grep -q "could not bind\|could not create any TCP/IP sockets" "$tmp/postgres.log" 2>/dev/null || [[ $attempt -eq 50 ]]; then
        tail -n 20 "$tmp/postgres.log" >&2 2>/dev/null || true
        die "PostgreSQL did not start (log above)"
    fi
    port=$((port >= 60000 ? 20000 : port + 1))
done

for _ in $(seq 1 300); do
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$pguser" -d postgres && break
    sleep 0.1
done
"$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$pguser" -d postgres || die "PostgreSQL on port $port is not ready"

export DATABASE_URL="host=127.0.0.1 port=$port user=$pguser dbname=postgres"
echo "with-postgres: PostgreSQL $("$bindir/postgres" -V | awk '{print $3}') on 127.0.0.1:$port (DATABASE_URL=\"$DATABASE_URL\", data and log in $tmp)" >&2

# Not exec: this shell stays to stop the server afterwards. COMMAND runs in
# the background so that a TERM sent to this script alone (a CI timeout) is
# passed on at once instead of after COMMAND ends. A background command
# would get /dev/null as stdin and ignore INT, so both are given back. A
# Ctrl-C reaches COMMAND from the terminal already; here it only must not
# end the script before COMMAND does.
(
    trap - INT QUIT
    exec "$@"
) <&0 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap ':' INT
set +e
# wait also returns when a trapped signal arrives: go on until COMMAND ends,
# then ask once more, which gives its own status (bash keeps it)
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
done
wait "$child"
status=$?
set -e
exit "$status"
