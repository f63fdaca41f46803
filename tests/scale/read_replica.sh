#!/usr/bin/env bash
# tests/scale/read_replica.sh PATH/TO/h2pg PATH/TO/scale_transfers
#
# DATABASE_READ_URL against a real streaming replica: a primary of our own
# (wal_level replica, a replication entry in pg_hba) and a hot standby made
# from it with pg_basebackup -R (a replication slot keeps the WAL it needs).
# Which server ran what is counted with pg_stat_statements, loaded on both
# (each server counts the statements it executed itself):
#   1. /db, /queries and /fortunes run on the replica, none on the primary;
#   2. writes (/updates, POST /users) and REST reads (GET /users/{id}) run on
#      the primary, and the writes show on the replica after replication;
#   3. the replica stopped under load: the benchmark reads keep answering 200
#      (from the primary; the non-200s of the moment of the stop are
#      counted and reported, at most a few allowed), /readyz stays 200;
#   4. the replica started again: the reads return to it;
#   5. two replicas in DATABASE_READ_URL (URIs), one of them unreachable:
#      every read is served by the live one.
#
# Starts its own two PostgreSQL servers (as the postgres user when run as
# root), so DATABASE_URL is not needed; everything is stopped and deleted at
# the end. Installs curl and PostgreSQL 15 when missing. The second argument
# (scale_transfers) is taken for symmetry with the other scale tests.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 PATH/TO/h2pg [PATH/TO/scale_transfers]" >&2
    exit 2
fi
h2pg="$(realpath "$1")"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"

need_tools curl:curl psql:postgresql-client-15 "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/pg_basebackup:postgresql-15"
scale_init scale-read-replica

# ---- a primary and a streaming replica ----

pg_cluster primary "wal_level = replica" "max_wal_senders = 5" "max_replication_slots = 5" \
    "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.max = 1000"
primary_port=$pg_port
psql_q -d "$(pg_url primary)" -c "CREATE DATABASE app" >/dev/null
primary="$(pg_url primary app)"
psql_q -d "$primary" -c "CREATE EXTENSION pg_stat_statements" >/dev/null

# The standby: a base backup with -R (standby.signal and primary_conninfo
# written for us), its own socket directory, hot_standby (the default) on.
mkdir -p "$tmp/replica"
[[ "$pguser" == "$(id -un)" ]] || chown "$pguser": "$tmp/replica"
on_exit "pg_stop replica immediate; rm -rf '$tmp/replica'"
as_pg "$pgbin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U "$pguser" -D "$tmp/replica/data" \
    -R -X stream -C -S h2pg_replica --checkpoint=fast >"$tmp/basebackup.log" 2>&1 ||
    die "pg_basebackup failed: $(tail -n 5 "$tmp/basebackup.log")"
printf "\n# the replica\nunix_socket_directories = '%s'\nhot_standby = on\n" "$tmp/replica" |
    as_pg tee -a "$tmp/replica/data/postgresql.conf" >/dev/null
pg_start replica "$(free_port)"
replica_port=$pg_port
replica="$(pg_url replica app)"
[[ "$(sql "$replica" "SELECT pg_is_in_recovery()")" == t ]] || die "the replica is not in recovery"
streaming() { [[ "$(sql "$primary" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" == 1 ]]; }
wait_until 30 streaming || die "the replica does not stream from the primary"
ok "primary on 127.0.0.1:$primary_port, hot standby (pg_basebackup -R, slot h2pg_replica) on 127.0.0.1:$replica_port, streaming"

# ---- the service ----

start_h2pg app DATABASE_URL="$primary" DATABASE_READ_URL="$replica" MIGRATE_ON_START=true THREADS=2 POOL_MAX=8
app_pid=$spawned
base="http://127.0.0.1:$port"
wait_until 10 answers "$port" /readyz || die "the service is not ready"
nmig="$(find "$repo/migrations" -maxdepth 1 -name '[0-9]*.sql' | wc -l)"
migrated() { [[ "$(sql "$replica" "SELECT count(*) FROM schema_migrations" 2>/dev/null)" == "$nmig" ]]; }
wait_until 30 migrated || die "the migrations did not reach the replica"

# calls of one statement on a server, by its text as pg_stat_statements
# normalizes it (the same for named and unnamed statements)
# shellcheck disable=SC2016  # $1: the statement's parameter, as PostgreSQL writes it
world_sql='SELECT id, randomnumber FROM world WHERE id = $1'
fortune_sql='SELECT id, message FROM fortune'
calls() { sql "$1" "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query = \$q\$$2\$q\$"; }
calls_like() { sql "$1" "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE \$q\$$2\$q\$"; }
reset_counts() { # on the replica only while it runs
    sql "$primary" "SELECT pg_stat_statements_reset()" >/dev/null
    [[ ! -f "$tmp/replica/data/postmaster.pid" ]] || sql "$replica" "SELECT pg_stat_statements_reset()" >/dev/null
}
# expect_calls SERVER-NAME CONNINFO SQL N: the count reaches N (it is
# updated as each statement ends, a moment after the client has its rows)
# and stays there
expect_calls() {
    local got
    for _ in $(seq 1 50); do
        got="$(calls "$2" "$3")"
        [[ "$got" -lt "$4" ]] || break
        sleep 0.1
    done
    sleep 0.2
    got="$(calls "$2" "$3")"
    [[ "$got" -eq "$4" ]] || die "$1 executed '$3' $got times, expected $4"
}

# send N PATH...: N requests to each PATH, each on a connection of its own
# (so they spread over the service's threads, each with its own replica
# pool); all must be 200
send() {
    local n="$1" p i
    shift
    : >"$tmp/urls"
    for p in "$@"; do
        for i in $(seq 1 "$n"); do printf 'url = "%s%s"\noutput = "/dev/null"\n' "$base" "$p" >>"$tmp/urls"; done
    done
    curl -s --max-time 120 -H 'Connection: close' -w '%{http_code}\n' -K "$tmp/urls" >"$tmp/codes" || true
    [[ "$(grep -c '^200$' "$tmp/codes" || true)" -eq $((n * $#)) ]] ||
        die "$((n * $#)) requests to $*: $(sort "$tmp/codes" | uniq -c | tr '\n' ' ')"
}

# ---- 1. the benchmark reads run on the replica ----

reset_counts
send 100 /db
send 20 "/queries?queries=5"
send 30 /fortunes
expect_calls replica "$replica" "$world_sql" 200
expect_calls replica "$replica" "$fortune_sql" 30
expect_calls primary "$primary" "$world_sql" 0
expect_calls primary "$primary" "$fortune_sql" 0
on_replica="$(sql "$replica" "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'h2pg'")"
((on_replica > 0)) || die "no h2pg session on the replica"
ok "100 /db, 20 /queries?queries=5, 30 /fortunes: 200 world and 30 fortune reads on the replica ($on_replica h2pg sessions there), none on the primary"

# ---- 2. writes and REST reads on the primary, replicated ----

reset_counts
req POST "$base/users" -H 'Content-Type: application/json' --data-binary '{"name":"Replicated","email":"replica@example.com"}'
expect 201 "POST /users"
user="$(json_int id)"
req GET "$base/users/$user"
expect 200 "GET /users/$user right after creating it (read your writes)"
req GET "$base/updates?queries=5"
expect 200 "GET /updates?queries=5"
updated="$(grep -o '"id":[0-9]*,"randomNumber":[0-9]*' <<<"$body" | tr -c '0-9\n' ' ' | awk '{print $1, $2}')"
[[ "$(calls_like "$primary" '%INSERT INTO users%')" -ge 1 && "$(calls_like "$primary" 'UPDATE world%')" -eq 1 &&
    "$(calls_like "$primary" 'SELECT % FROM users WHERE id = %')" -ge 1 ]] ||
    die "the writes or the REST read did not run on the primary: $(sql "$primary" "SELECT calls, query FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")"
[[ "$(calls_like "$replica" '%INSERT INTO users%')" -eq 0 && "$(calls_like "$replica" 'UPDATE world%')" -eq 0 &&
    "$(calls_like "$replica" '% FROM users %')" -eq 0 ]] ||
    die "writes or REST reads ran on the replica: $(sql "$replica" "SELECT calls, query FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")"
replicated() {
    [[ "$(sql "$replica" "SELECT name FROM users WHERE id = $user")" == Replicated ]] || return 1
    local id number
    while read -r id number; do
        [[ "$(sql "$replica" "SELECT randomnumber FROM world WHERE id = $id")" == "$number" ]] || return 1
    done <<<"$updated"
}
wait_until 10 replicated || die "user $user and the rows /updates wrote did not show on the replica within 10 s"
ok "POST /users, GET /users/{id}, /updates ran on the primary (none of it on the replica); the writes showed on the replica"

# ---- 3. the replica goes away under load ----

# Two clients, 200 requests a second each for about 5 s, while the replica
# is stopped about 1 s in.
: >"$tmp/load.urls"
for i in $(seq 1 330); do
    for p in "/db?i=$i" "/queries?queries=3&i=$i" "/fortunes?i=$i"; do
        printf 'url = "%s%s"\noutput = "/dev/null"\n' "$base" "$p" >>"$tmp/load.urls"
    done
done
loaders=()
for k in 1 2; do
    curl -s --rate 200/s --max-time 120 -w '%{http_code}\n' -K "$tmp/load.urls" >"$tmp/load$k.codes" 2>/dev/null &
    loaders+=("$!")
    track "$!"
done
sleep 1
pg_stop replica fast
stopped_at="$(date +%s.%N)"
req GET "$base/readyz"
expect 200 "/readyz with the replica down"
for pid in "${loaders[@]}"; do
    wait "$pid" || true
    forget "$pid"
done
cat "$tmp/load1.codes" "$tmp/load2.codes" >"$tmp/load.codes"
total="$(wc -l <"$tmp/load.codes")"
good="$(grep -c '^200$' "$tmp/load.codes" || true)"
blip="$({ grep -v '^200$' "$tmp/load.codes" || true; } | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep = ", "}')"
[[ "$total" -eq 1980 ]] || die "the load got $total answers of 1980"
((total - good <= 10)) || die "with the replica stopped under load: $((total - good)) of $total requests failed ($blip)"
ok "replica stopped (fast) under load: $good of $total benchmark reads answered 200${blip:+ (others: $blip)}; /readyz 200"

reset_counts
send 100 /db
send 20 /fortunes
req GET "$base/readyz"
expect 200 "/readyz with the replica down"
expect_calls primary "$primary" "$world_sql" 100
expect_calls primary "$primary" "$fortune_sql" 20
down_for="$(awk -v a="$stopped_at" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')"
ok "with the replica down (${down_for} s): 100 /db and 20 /fortunes answered 200 from the primary; /readyz 200"

# ---- 4. the replica comes back ----

pg_start replica "$replica_port" same # DATABASE_READ_URL names the port
[[ "$pg_port" == "$replica_port" ]] || die "the replica came back on port $pg_port, not $replica_port"
wait_until 30 streaming || die "the restarted replica does not stream"
# each thread's replica pool tries again when its back-off (at most 5 s)
# has passed and a read comes
restarted_at="$(date +%s.%N)"
back=0
for _ in $(seq 1 30); do
    before="$(calls "$replica" "$world_sql")"
    send 20 /db
    sleep 0.3
    if [[ $(($(calls "$replica" "$world_sql") - before)) -eq 20 ]]; then
        back=1
        break
    fi
    sleep 0.5
done
[[ $back -eq 1 ]] || die "the reads did not return to the replica within about 25 s"
back_after="$(awk -v a="$restarted_at" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')"
reset_counts
send 100 /db
expect_calls replica "$replica" "$world_sql" 100
expect_calls primary "$primary" "$world_sql" 0
ok "replica started again: the reads returned to it within ${back_after} s (then 100 /db on the replica, none on the primary)"
stop_h2pg_clean app "$app_pid"

# ---- 5. two replicas, one of them unreachable ----

dead="$(free_port)"
read_urls="postgresql://$pguser@127.0.0.1:$dead/app?connect_timeout=2 postgresql://$pguser@127.0.0.1:$replica_port/app"
start_h2pg two DATABASE_URL="$primary" DATABASE_READ_URL="$read_urls" MIGRATE_ON_START=false THREADS=2 POOL_MAX=8
two_pid=$spawned
base="http://127.0.0.1:$port"
reset_counts
send 100 /db
send 10 /fortunes
expect_calls replica "$replica" "$world_sql" 100
expect_calls replica "$replica" "$fortune_sql" 10
expect_calls primary "$primary" "$world_sql" 0
ok "DATABASE_READ_URL with two URIs, the first unreachable: 100 /db and 10 /fortunes all 200, all on the live replica"
stop_h2pg_clean two "$two_pid"
