#!/usr/bin/env bash
# tests/scale/replicas.sh PATH/TO/h2pg PATH/TO/scale_transfers
#
# Three copies of the service behind nginx, as a load balancer would run them:
#   1. three `h2pg serve` processes released at the same instant (a start
#      barrier) against a fresh database with MIGRATE_ON_START=true: all
#      three become ready, each migration is recorded and applied exactly
#      once (one "applied" log line over the three, its data once), no
#      process logs an error or exits;
#   2. nginx in front, with docker/nginx.conf (the upstream holding the
#      three): requests are spread over all three, over kept-alive upstream
#      connections;
#   3. the transfer invariant (scale_transfers) under concurrent load
#      through nginx, so across the three processes; every process took part.
# At the end each process stops on SIGTERM with status 0.
#
# Needs DATABASE_URL (scripts/with-postgres.sh): a database h2pg_replicas_*
# is created there and dropped afterwards. Installs nginx, curl, iproute2 and
# the PostgreSQL client when missing.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PATH/TO/h2pg PATH/TO/scale_transfers" >&2
    exit 2
fi
h2pg="$(realpath "$1")"
transfers="$(realpath "$2")"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"

need_tools nginx:nginx curl:curl ss:iproute2 psql:postgresql-client-15
scale_init scale-replicas
[[ -n "${DATABASE_URL:-}" ]] || die "DATABASE_URL is not set (run under scripts/with-postgres.sh)"

names=(app1 app2 app3)
migration_files=("$repo"/migrations/[0-9]*.sql)
nmig=${#migration_files[@]}

# ---- 1. three processes at once on a fresh database ----

# Each process waits at a barrier (a FIFO) with everything but the exec
# done; one write of three bytes releases all three (each reads one byte).
# A port taken by someone else in between is the only reason to try the
# whole round again, on another fresh database.
for round in $(seq 1 5); do
    shared_db replicas
    ports=()
    started=()
    rm -f "$tmp/barrier"
    mkfifo "$tmp/barrier"
    exec 7<>"$tmp/barrier"
    for name in "${names[@]}"; do
        p="$(free_port)"
        ports+=("$p")
        (
            exec 7>&-
            read -r -n1 _ <"$tmp/barrier"
            exec env DATABASE_URL="$db_url" HOST=127.0.0.1 PORT="$p" THREADS=2 POOL_MAX=8 LOG_FORMAT=json \
                LOG_LEVEL=info MIGRATE_ON_START=true TRUSTED_PROXIES=127.0.0.1/32 "$h2pg" serve
        ) >"$tmp/$name.log" 2>&1 &
        started+=("$!")
        track "$!"
        h2pg_pids[$name]=$!
    done
    sleep 0.3 # all three blocked in read, most likely; a late one finds its byte waiting
    printf 'xxx' >&7
    retry=0
    for i in 0 1 2; do
        if ! await_h2pg "${names[i]}" "${ports[i]}" "${started[i]}"; then
            if [[ $round -eq 5 ]] || ! grep -qi "address already in use" "$tmp/${names[i]}.log"; then
                die "${names[i]} exited at start with status $exited: $(grep -v '"type":"access"' "$tmp/${names[i]}.log" | tail -n 5)"
            fi
            retry=1
        fi
    done
    exec 7>&- # every process is past the barrier (or gone)
    [[ $retry -eq 1 ]] || break
    log "a port was taken meanwhile: starting the three again on another fresh database"
    for pid in "${started[@]}"; do
        kill -0 "$pid" 2>/dev/null && stop_h2pg "$pid"
    done
done
log "three processes on ports ${ports[*]}, database $db"

for i in 0 1 2; do
    wait_until 20 answers "${ports[i]}" /readyz || die "${names[i]} is not ready (/readyz) within 20 s"
done
ok "all three processes started together answer /healthz and /readyz"

# every migration recorded once, with the files' versions
want_versions="$(for f in "${migration_files[@]}"; do b="$(basename "$f")"; echo "$((10#${b%%_*}))"; done | sort -n | paste -sd,)"
got="$(sql "$db_url" "SELECT count(*) || ' ' || count(DISTINCT version) || ' ' || string_agg(version::text, ',' ORDER BY version) FROM schema_migrations")"
[[ "$got" == "$nmig $nmig $want_versions" ]] ||
    die "schema_migrations holds '$got' (rows, distinct versions, versions); expected '$nmig $nmig $want_versions'"
# applied by exactly one process each
for f in "${migration_files[@]}"; do
    b="$(basename "$f")"
    n=0
    for name in "${names[@]}"; do
        n=$((n + $(grep -c "\"migrate: applied ${b%.sql}" "$tmp/$name.log" || true)))
    done
    [[ "$n" -eq 1 ]] || die "migration $b was applied $n times over the three logs"
done
applied_by=""
waited=0
for name in "${names[@]}"; do
    summary="$(grep -o '"migrations: [0-9]* applied, [0-9]* already applied"' "$tmp/$name.log" || true)"
    [[ -n "$summary" ]] || die "$name logged no migration summary"
    [[ "$summary" =~ ([0-9]+)\ applied,\ ([0-9]+)\ already ]] || die "$name: $summary"
    [[ $((BASH_REMATCH[1] + BASH_REMATCH[2])) -eq $nmig ]] || die "$name: $summary (of $nmig migrations)"
    applied_by+=" $name:${BASH_REMATCH[1]}"
    grep -q "another runner holds the migration lock" "$tmp/$name.log" && waited=$((waited + 1))
done
# the data of a migration inserted once, not three times
[[ "$(sql "$db_url" "SELECT (SELECT count(*) FROM world) || ' ' || (SELECT count(*) FROM fortune)")" == "10000 12" ]] ||
    die "world and fortune should hold 10000 and 12 rows: $(sql "$db_url" "SELECT (SELECT count(*) FROM world), (SELECT count(*) FROM fortune)")"
ok "each of the $nmig migrations recorded and applied exactly once (applied by$applied_by; $waited process(es) waited for the migration lock)"

for name in "${names[@]}"; do
    if grep -q '"level":"error"' "$tmp/$name.log"; then
        die "$name logged an error at start: $(grep '"level":"error"' "$tmp/$name.log" | head -n 3)"
    fi
done
ok "no process logged an error or exited"

# ---- 2. nginx in front of the three ----

start_nginx "${ports[@]}"
base="http://127.0.0.1:$nginx_port"
log "nginx on 127.0.0.1:$nginx_port -> ${ports[*]} (docker/nginx.conf)"

# The connections reaching the services, counted by their client ports: ss
# lists both ends of loopback connections in every state, TIME-WAIT too, so
# one opened and closed during the run counts as well.
conn_ports() {
    local p
    for p in "${ports[@]}"; do
        ss -Htan "( dport = :$p )" | awk '{ l = $4; sub(/.*:/, "", l); print l }'
    done | sort -u
}

n=300
conn_ports >"$tmp/ports.before"
for name in "${names[@]}"; do access_count "$name" '"path":"/db"' >"$tmp/$name.db.before"; done
: >"$tmp/urls"
for i in $(seq 1 "$n"); do printf 'url = "%s/db?i=%d"\noutput = "/dev/null"\n' "$base" "$i" >>"$tmp/urls"; done
codes="$(curl -s --max-time 120 -w '%{http_code}\n' -K "$tmp/urls" | grep -c '^200$' || true)"
[[ "$codes" -eq "$n" ]] || die "$n GET /db through nginx: $codes answered 200"
new_conns="$(comm -13 "$tmp/ports.before" <(conn_ports) | wc -l)"
sleep 0.5 # the access logs are written in batches
spread=""
for name in "${names[@]}"; do
    got=$(($(access_count "$name" '"path":"/db"') - $(cat "$tmp/$name.db.before")))
    ((got >= n / 10)) || die "$name served $got of the $n requests through nginx (expected a share of each)"
    spread+=" $name=$got"
done
((new_conns <= 24)) || die "$n requests through nginx opened $new_conns connections to the services: upstream keep-alive is not used"
ok "$n GET /db through nginx spread over the three:$spread, over $new_conns upstream connection(s)"

# ---- 3. the transfer invariant across the three ----

for name in "${names[@]}"; do access_count "$name" '"method":"POST","path":"/transfers"' >"$tmp/$name.tr.before"; done
result="$("$transfers" -c 16 -n 150 -a 5 "$base" "$db_url" 2>"$tmp/transfers-err.log")" ||
    die "the transfer invariant through nginx: $(cat "$tmp/transfers-err.log")"
sleep 0.5
spread=""
for name in "${names[@]}"; do
    got=$(($(access_count "$name" '"method":"POST","path":"/transfers"') - $(cat "$tmp/$name.tr.before")))
    ((got > 0)) || die "$name served none of the transfers"
    spread+=" $name=$got"
done
ok "transfer invariant through nginx across the three: $result; POST /transfers served by$spread"

# ---- the end: each stops cleanly ----

for i in 0 1 2; do
    stop_h2pg_clean "${names[i]}" "${started[i]}"
    if grep -q '"level":"error"' "$tmp/${names[i]}.log"; then
        die "${names[i]} logged errors: $(grep '"level":"error"' "$tmp/${names[i]}.log" | head -n 3)"
    fi
done
ok "the three stop on SIGTERM with status 0, no error logged"
