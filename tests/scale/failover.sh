#!/usr/bin/env bash
# tests/scale/failover.sh PATH/TO/h2pg PATH/TO/scale_transfers
#
# PostgreSQL failover under a transfer load, for real: a primary of our own
# with a synchronous streaming standby (pg_basebackup -R with an
# application_name in primary_conninfo, synchronous_standby_names naming it,
# synchronous_commit on), and the service given both hosts in one libpq
# URI with target_session_attrs=read-write, THREADS=2:
#   1. the standby replicates synchronously (pg_stat_replication says
#      sync), the service is ready and its sessions are on the primary;
#   2. scale_transfers -k sends concurrent POST /transfers and goes on
#      through errors; mid-load the primary's postmaster gets SIGKILL;
#      /readyz turns 503 (every probe answered in time: no hang) once its
#      orphaned backends have gone;
#   3. the standby is promoted (pg_ctl promote) FAILOVER_OUTAGE_S (1) s
#      later, as a failover manager would; /readyz must be 200 again
#      within FAILOVER_READY_BOUND_S (15) s of the promotion, and 20 times
#      in a row (so on both threads, each with its own pool) within that
#      bound too, as must the load's last 503 (the measured figures are
#      printed); the service's sessions are on the new primary and
#      transfers are answered 201 again;
#   4. the load stopped: every request got 201, 422 or 503, none took
#      longer than twice REQUEST_TIMEOUT_MS (scale_transfers' per-request
#      limit: a hang fails the test); every transfer answered 201 is in the
#      new primary's table (checked by scale_transfers and again here from
#      the ids it wrote), a row nobody got a 201 for belongs to a request
#      whose answer was a 503 or lost, the books balance (the sum of all
#      balances as before the kill, none negative);
#   5. the service stops on SIGTERM with status 0 (under the sanitizers: no
#      report, no leak).
# The figures go on one line ("failover: ..."), on stderr with the rest.
#
# Bounds are for a slow machine (a sanitizer build with both cores busy),
# and still fail when the service does not follow the promotion, hangs, or
# loses an acknowledged transfer. FAILOVER_REQUEST_TIMEOUT_MS (2000)
# sets REQUEST_TIMEOUT_MS, FAILOVER_AFTER_S (3) how long the load goes on
# once the service is ready again.
#
# Starts its own two PostgreSQL servers (as the postgres user when run as
# root), so DATABASE_URL is not needed; everything is stopped and deleted at
# the end. Installs curl and PostgreSQL 15 when missing.
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

need_tools curl:curl psql:postgresql-client-15 "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/pg_basebackup:postgresql-15"
scale_init scale-failover

request_ms="${FAILOVER_REQUEST_TIMEOUT_MS:-2000}"
acquire_ms=$((request_ms / 2))
hang_ms=$((2 * request_ms)) # no request may take longer than this
outage_s="${FAILOVER_OUTAGE_S:-1}"
ready_bound_s="${FAILOVER_READY_BOUND_S:-15}"
after_s="${FAILOVER_AFTER_S:-3}"
standby_name=h2pg_standby

now() { date +%s.%N; }
# since T0 [T1]: seconds from T0 to T1 (default now), one decimal
since() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN {printf "%.1f", b - a}'; }
# status PATH: the HTTP status of one GET on a fresh connection, "000"
# when there was no answer within the hang limit
status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time "$(awk -v m="$hang_ms" 'BEGIN {print m / 1000}')" \
        -H 'Connection: close' "$base$1" || true
}

# ---- 1. a primary and a synchronous standby ----

pg_cluster primary "wal_level = replica" "max_wal_senders = 5" "max_replication_slots = 5" "synchronous_commit = on"
primary_port=$pg_port
psql_q -d "$(pg_url primary)" -c "CREATE DATABASE app" >/dev/null
primary="$(pg_url primary app)"

# The standby: a base backup with -R, whose primary_conninfo keeps the
# application_name the primary's synchronous_standby_names will name.
mkdir -p "$tmp/standby"
[[ "$pguser" == "$(id -un)" ]] || chown "$pguser": "$tmp/standby"
on_exit "pg_stop standby immediate; rm -rf '$tmp/standby'"
as_pg "$pgbin/pg_basebackup" -d "host=127.0.0.1 port=$primary_port user=$pguser application_name=$standby_name" \
    -D "$tmp/standby/data" -R -X stream -C -S h2pg_standby --checkpoint=fast >"$tmp/basebackup.log" 2>&1 ||
    die "pg_basebackup failed: $(tail -n 5 "$tmp/basebackup.log")"
grep -q "application_name=$standby_name" "$tmp/standby/data/postgresql.auto.conf" ||
    die "pg_basebackup -R did not keep application_name in primary_conninfo: $(grep primary_conninfo "$tmp/standby/data/postgresql.auto.conf")"
printf "\n# the standby\nunix_socket_directories = '%s'\nhot_standby = on\n" "$tmp/standby" |
    as_pg tee -a "$tmp/standby/data/postgresql.conf" >/dev/null
pg_start standby "$(free_port)"
standby_port=$pg_port
standby="$(pg_url standby app)"
[[ "$(sql "$standby" "SELECT pg_is_in_recovery()")" == t ]] || die "the standby is not in recovery"

# Only now, with the standby there, commits on the primary wait for it (set
# before, CREATE DATABASE would have waited forever). The standby's own copy
# of the configuration has no synchronous_standby_names: once promoted, with
# no standby of its own, its commits must not wait for one.
sql "$primary" "ALTER SYSTEM SET synchronous_standby_names = '$standby_name'" >/dev/null
sql "$primary" "SELECT pg_reload_conf()" >/dev/null
sync_standby() {
    [[ "$(sql "$primary" "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$standby_name' AND state = 'streaming' AND sync_state = 'sync'")" == 1 ]]
}
wait_until 30 sync_standby ||
    die "the standby is not a streaming synchronous standby: $(sql "$primary" "SELECT application_name, state, sync_state FROM pg_stat_replication")"
[[ "$(sql "$primary" "SHOW synchronous_commit")" == on ]] || die "synchronous_commit is not on"
ok "primary on 127.0.0.1:$primary_port, standby on 127.0.0.1:$standby_port (pg_basebackup -R, application_name $standby_name), synchronous (sync_state sync, synchronous_commit on)"

# ---- the service, given both hosts ----

url="postgresql://$pguser@127.0.0.1:$primary_port,127.0.0.1:$standby_port/app?target_session_attrs=read-write&connect_timeout=2"
start_h2pg app DATABASE_URL="$url" MIGRATE_ON_START=true THREADS=2 POOL_MAX=8 \
    REQUEST_TIMEOUT_MS="$request_ms" POOL_ACQUIRE_TIMEOUT_MS="$acquire_ms"
app_pid=$spawned
base="http://127.0.0.1:$port"
wait_until 10 answers "$port" /readyz || die "the service is not ready"
sessions() { sql "$1" "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'h2pg'"; }
on_primary="$(sessions "$primary")"
((on_primary > 0)) || die "no h2pg session on the primary"
[[ "$(sessions "$standby")" == 0 ]] || die "h2pg sessions on the standby before the failover"
ok "h2pg (THREADS=2) with DATABASE_URL=$url: ready, $on_primary sessions on the primary, none on the standby"

# ---- 2. the load, and the primary killed under it ----

# The monitor and the audit of scale_transfers follow the primary too.
both="host=127.0.0.1,127.0.0.1 port=$primary_port,$standby_port user=$pguser dbname=app target_session_attrs=read-write connect_timeout=2"
"$transfers" -k -c 8 -a 8 -d 300 -t "$hang_ms" -w "$tmp/acked" -s "$tmp/stats" "$base" "$both" \
    >"$tmp/transfers.out" 2>"$tmp/transfers.log" &
load_pid=$!
track "$load_pid"
load_running() { grep -q "load running" "$tmp/transfers.log"; }
wait_until 60 load_running || die "scale_transfers did not start its load"
committing() { [[ "$(sql "$primary" "SELECT count(*) FROM transfers")" -ge 50 ]]; }
wait_until 60 committing || die "fewer than 50 transfers committed within 60 s of the load's start"
sleep 1
books_before="$(sql "$primary" "SELECT sum(balance_cents) FROM accounts")"
committed_before="$(sql "$primary" "SELECT count(*) FROM transfers")"

postmaster="$(head -n1 "$tmp/primary/data/postmaster.pid")"
shm_id="$(sed -n 7p "$tmp/primary/data/postmaster.pid" | awk '{print $2}')"
kill -KILL "$postmaster"
killed_at="$(now)"
# Nobody stops it now (its pid may be another process's by the end), and its
# SysV shared memory segment, which outlives it, is removed once its
# orphaned backends have gone (they exit when they notice its death).
rm -f "$tmp/primary/data/postmaster.pid"
[[ -z "$shm_id" ]] ||
    on_exit "[[ \"\$(ipcs -m | awk -v id=$shm_id '\$2 == id {print \$6}')\" == 0 ]] && ipcrm -m $shm_id"
log "SIGKILL to the primary's postmaster (pid $postmaster) with $committed_before transfers committed"

# No primary: /readyz says so, in time. Not necessarily at once: the
# postmaster's backends outlive it until they notice (an idle one at once,
# on a loaded machine a moment later), and until then they still answer.
down=0
for _ in $(seq 1 100); do
    code="$(status /readyz)"
    [[ "$code" == 200 || "$code" == 503 ]] ||
        die "/readyz with the primary killed: expected 503, got ${code/000/no answer within $hang_ms ms}"
    if [[ "$code" == 503 ]]; then
        down=1
        break
    fi
    sleep 0.05
done
[[ $down -eq 1 ]] || die "/readyz still answered 200 $(since "$killed_at") s after the primary was killed"
unready_s="$(since "$killed_at")"
sleep "$outage_s"

# ---- 3. promotion ----

as_pg "$pgbin/pg_ctl" -D "$tmp/standby/data" -w -t 60 promote >"$tmp/promote.log" 2>&1 ||
    die "pg_ctl promote failed: $(cat "$tmp/promote.log")"
promoted_at="$(now)"
promote_s="$(since "$killed_at" "$promoted_at")"
[[ "$(sql "$standby" "SELECT pg_is_in_recovery()")" == f ]] || die "the standby is still in recovery after pg_ctl promote"
log "standby promoted ${promote_s} s after the kill"

ready=0
while awk -v a="$promoted_at" -v b="$(now)" -v lim="$ready_bound_s" 'BEGIN {exit !(b - a < lim)}'; do
    code="$(status /readyz)"
    if [[ "$code" == 200 ]]; then
        ready=1
        break
    fi
    [[ "$code" == 503 ]] || die "/readyz during the failover: expected 503 or 200, got ${code/000/no answer within $hang_ms ms}"
    sleep 0.05
done
ready_at="$(now)"
ready_s="$(since "$promoted_at" "$ready_at")"
[[ $ready -eq 1 ]] || die "/readyz was not 200 within $ready_bound_s s of the promotion: the service did not follow it"
# Each thread has a pool of its own (and its own reconnect back-off): 20
# probes in a row, on fresh connections spread over the threads, must
# answer 200. (How long this takes says more about curl on a loaded machine
# than about the service: the last 503 the load saw is the figure for
# "every thread is back".)
streak=0
while ((streak < 20)); do
    awk -v a="$promoted_at" -v b="$(now)" -v lim="$ready_bound_s" 'BEGIN {exit !(b - a < lim)}' ||
        die "/readyz did not answer 200 20 times in a row within $ready_bound_s s of the promotion"
    code="$(status /readyz)"
    [[ "$code" == 200 || "$code" == 503 ]] || die "/readyz during the failover: got ${code/000/no answer within $hang_ms ms}"
    if [[ "$code" == 200 ]]; then streak=$((streak + 1)); else streak=0; fi
done
ok "/readyz 503 ${unready_s} s after the kill; 200 again ${ready_s} s after the promotion (then 20 in a row)"

# transfers commit again, on the new primary
committed_at_ready="$(sql "$standby" "SELECT count(*) FROM transfers")"
sleep "$after_s"
committed_after="$(sql "$standby" "SELECT count(*) FROM transfers")"
((committed_after > committed_at_ready)) ||
    die "no transfer committed on the new primary in the $after_s s after /readyz was 200 again"
on_new="$(sessions "$standby")"
((on_new > 0)) || die "no h2pg session on the new primary"

# ---- 4. the load stopped: statuses, hangs, the books ----

kill -USR1 "$load_pid"
load_status=0
wait "$load_pid" || load_status=$?
forget "$load_pid"
[[ -s "$tmp/stats" ]] || die "scale_transfers wrote no figures (exit status $load_status): $(tail -n 5 "$tmp/transfers.log")"
# stat KEY: a figure scale_transfers wrote
stat() { sed -n "s/^$1=//p" "$tmp/stats"; }
[[ $load_status -eq 0 ]] ||
    die "scale_transfers (exit status $load_status): $(grep -v 'load running' "$tmp/transfers.log" | head -n 12)"
log "scale_transfers: $(cat "$tmp/transfers.out")"
(($(stat status_503) > 0)) || die "no request was answered 503: the load did not run through the outage"
(($(stat hung) == 0 && $(stat lost) == 0 && $(stat status_other) == 0)) ||
    die "$(stat hung) hung, $(stat lost) lost, $(stat status_other) other statuses"
awk -v s="$(stat slowest_ms)" -v m="$hang_ms" 'BEGIN {exit !(s < m)}' ||
    die "the slowest request took $(stat slowest_ms) ms, the limit is $hang_ms ms"
# every thread back: the load's last 503 within the bound too
awk -v a="$promoted_at" -v b="$(stat last_503)" -v lim="$ready_bound_s" 'BEGIN {exit !(b - a < lim)}' ||
    die "a transfer was answered 503 $(since "$promoted_at" "$(stat last_503)") s after the promotion (bound $ready_bound_s s)"

# every acknowledged transfer, by the ids scale_transfers wrote, on the new primary
acked="$(wc -l <"$tmp/acked")"
[[ "$acked" == "$(stat acknowledged)" ]] || die "$tmp/acked holds $acked ids, scale_transfers counted $(stat acknowledged)"
found="$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$standby" -c "CREATE TEMP TABLE acked (id bigint PRIMARY KEY)" \
    -c "\\copy acked FROM '$tmp/acked'" -c "SELECT count(*) FROM acked JOIN transfers USING (id)")"
[[ "$found" == "$acked" ]] || die "$acked transfers were answered 201, $found of them are on the new primary"
books_after="$(sql "$standby" "SELECT sum(balance_cents) FROM accounts")"
negative="$(sql "$standby" "SELECT count(*) FROM accounts WHERE balance_cents < 0")"
[[ "$books_after" == "$books_before" && "$negative" == 0 ]] ||
    die "the books: the balances summed to $books_before before the kill, $books_after on the new primary; $negative negative"
ok "every request answered 201, 422 or 503 (none hung; slowest $(stat slowest_ms) ms, limit $hang_ms ms); $acked transfers answered 201, $found on the new primary; books balanced (sum $books_after, none negative)"

stop_h2pg_clean app "$app_pid"
ok "the service stopped on SIGTERM with status 0"

window="$(since "$(stat first_503)" "$(stat last_503)")"
last_after="$(since "$promoted_at" "$(stat last_503)")"
log "failover: THREADS=2, REQUEST_TIMEOUT_MS=$request_ms; promoted ${promote_s} s after SIGKILL to the primary;" \
    "/readyz 200 ${ready_s} s after the promotion;" \
    "$(stat status_503) transfers answered 503 over ${window} s, the last ${last_after} s after the promotion;" \
    "0 other non-2xx, 0 hung (slowest $(stat slowest_ms) ms, limit $hang_ms ms);" \
    "$(stat requests) requests, $acked acknowledged (201), $found found on the new primary" \
    "(+$(stat extra) committed whose answer was a 503); books balanced"
