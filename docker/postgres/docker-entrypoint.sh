#!/bin/bash
# Entry point of the postgres:15 stand-in (see the Dockerfile beside it).
#
#   docker-entrypoint.sh postgres [OPTIONS...]   initialise PGDATA if empty, then run the server
#   docker-entrypoint.sh -c name=value ...       the same (options go to postgres)
#   docker-entrypoint.sh OTHER COMMAND           run that command as it is
#
# Started as root, it makes PGDATA the postgres user's and runs itself again
# as that user: PostgreSQL refuses to run as root.
#
# First start (PGDATA has no PG_VERSION): initdb with POSTGRES_USER as the
# superuser and POSTGRES_PASSWORD as its password, password authentication
# (POSTGRES_HOST_AUTH_METHOD, scram-sha-256 by default) for every network
# address, then a private server on the Unix socket only creates
# POSTGRES_DB and runs /docker-entrypoint-initdb.d: *.sh (executed if
# executable, sourced otherwise), *.sql and *.sql.gz (through psql into
# POSTGRES_DB), in name order. Only then does the real server listen on the
# network, so a health check over TCP never sees a half-initialised database.
set -Eeuo pipefail

log() { echo "postgres-entrypoint: $*" >&2; }

if [[ "${1:-}" == -* ]]; then
    set -- postgres "$@"
fi
if [[ "${1:-}" != postgres ]]; then
    exec "$@"
fi

if [[ "$(id -u)" -eq 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    # a fresh volume is root's; an existing cluster keeps its owner's files
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
export POSTGRES_USER POSTGRES_DB

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    if [[ -z "${POSTGRES_PASSWORD:-}" && "$auth" != trust ]]; then
        log "the database is uninitialized and POSTGRES_PASSWORD is not set;"
        log "set it (or POSTGRES_HOST_AUTH_METHOD=trust, which lets anyone in without a password)"
        exit 1
    fi

    pwargs=()
    if [[ -n "${POSTGRES_PASSWORD:-}" ]]; then
        pwfile="$(mktemp)"
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        pwargs=(--pwfile="$pwfile")
    fi
    # word splitting of POSTGRES_INITDB_ARGS is intended: it is a list of options
    # shellcheck disable=SC2086
    initdb -D "$PGDATA" --username="$POSTGRES_USER" "${pwargs[@]}" \
        --auth-local=trust --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8 \
        ${POSTGRES_INITDB_ARGS:-}
    [[ ${#pwargs[@]} -eq 0 ]] || rm -f "$pwfile"

    # initdb's host lines cover the loopback addresses; the network needs one more
    printf '\n# docker-entrypoint.sh\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    printf "\n# docker-entrypoint.sh\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

    pg_ctl -D "$PGDATA" -w -t 60 -o "-c listen_addresses=''" start

    psql=(psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password)
    if [[ "$POSTGRES_DB" != postgres ]]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        log "created database $POSTGRES_DB"
    fi
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
        *.sh)
            if [[ -x "$f" ]]; then
                log "running $f"
                "$f"
            else
                log "sourcing $f"
                # shellcheck disable=SC1090  # the user's script
                . "$f"
            fi
            ;;
        *.sql)
            log "running $f"
            "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f"
            ;;
        *.sql.gz)
            log "running $f"
            gzip -dc "$f" | "${psql[@]}" --dbname "$POSTGRES_DB"
            ;;
        *) log "ignoring $f" ;;
        esac
    done
    shopt -u nullglob

    pg_ctl -D "$PGDATA" -m fast -w stop
    log "initialisation done; starting the server"
fi

exec "$@"
