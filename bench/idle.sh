#!/usr/bin/env bash
# Idle keep-alive connections: what N idle connections (default 10,000) cost
# the service in memory and in the latency of the clients it still serves,
# and whether it closes them after KEEPALIVE_TIMEOUT_MS. Prints a table.
#
#   bench/idle.sh
#
# Two kinds of idle connection, each against a fresh server (so that the
# memory one kind left behind does not hide the other's):
#   request  sends one GET /json, reads the response, then stays idle
#   silent   connects and never sends a byte
#   partial  (only when IDLE_KINDS names it) sends a request header without
#            its final blank line: a request in progress, not an idle
#            keep-alive connection, so its cost is shown but not judged
# For each: a well-behaved client's latency (wrk -t2 -c16, /json and /db)
# before, the server's VmRSS and open fds before, N idle connections held
# by bench/idle_conns.c, VmRSS and fds again (the growth per connection is
# the figure: at most 4096 bytes on average), the well-behaved client's
# latency again while the N are idle, VmRSS once they are gone and again
# with a second round of N (freed memory is reused, not added to). Last, a
# server with a short KEEPALIVE_TIMEOUT_MS gets N of each kind, and the
# script counts how many it closed, and how long after they went idle.
#
# Starts everything itself: a private PostgreSQL unless DATABASE_URL is set
# (scripts/with-postgres.sh), a database, the servers. Needs wrk, curl,
# psql, cc. Environment: H2PG (the binary; default: scripts/build.sh, then
# build/h2pg), IDLE_CONNS (N, default 10000), THREADS (default 2), SECS
# (per latency measurement, default 5), KEEPALIVE_SHORT_MS (the timeout of
# the last part, default 2000), IDLE_KINDS (default "request silent").
# Raises `ulimit -n` for itself, the servers
# and the load tool (as root; otherwise up to the hard limit).
#
# Exits 1 when a kind costs more than 4096 bytes per idle connection, when
# a connection could not be set up, or when the short timeout left one open.
# Latency figures share the machine's cores with wrk, PostgreSQL, the load
# tool and whatever else runs: compare them within one run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [[ -z "${DATABASE_URL:-}" ]]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi

n="${IDLE_CONNS:-10000}"
secs="${SECS:-5}"
threads="${THREADS:-2}"
short_ms="${KEEPALIVE_SHORT_MS:-2000}"
read -r -a idle_kinds <<<"${IDLE_KINDS:-request silent}"
limit_bytes=4096
if [[ -n "${H2PG:-}" ]]; then
    h2pg="$(realpath "$H2PG")"
else
    scripts/build.sh >/dev/null
    h2pg="$repo/build/h2pg"
fi

# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"
need_tools wrk:wrk curl:curl psql:postgresql-client-15 cc:gcc
scale_init idle-bench

# Every process started from here on (servers, load tool) inherits this.
want_fds=$((n + 4096))
if [[ "$(ulimit -Hn)" != unlimited && "$(ulimit -Hn)" -lt $want_fds ]]; then
    ulimit -Hn "$want_fds" 2>/dev/null || log "cannot raise the hard fd limit to $want_fds (not root?)"
fi
ulimit -Sn "$(( $(ulimit -Hn) < want_fds ? $(ulimit -Hn) : want_fds ))"
[[ "$(ulimit -n)" -ge $((n + 256)) ]] || die "ulimit -n is $(ulimit -n): too low for $n connections"

cc -O2 -std=c11 -Wall -o "$tmp/idle_conns" "$repo/bench/idle_conns.c" || die "cannot build bench/idle_conns.c"

shared_db idle
"$h2pg" migrate --database-url "$db_url" --log-level warn

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# latency PATH -> "p50 p99 req/s" of the well-behaved client
latency() {
    local out
    out="$(wrk -t2 -c16 -d"${secs}s" --latency "http://127.0.0.1:$port$1" 2>&1)"
    if grep -q 'Socket errors\|Non-2xx' <<<"$out"; then
        log "wrk $1: $(grep 'Socket errors\|Non-2xx' <<<"$out" | tr -s ' ' | tr '\n' ' ')"
    fi
    awk '$1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2} /Requests\/sec/ {r = int($2)} END {print p50, p99, r}' <<<"$out"
}

# start_tool NAME KIND [idle_conns options...]: the load tool in the
# background, output in $tmp/NAME.out; sets $tool_pid
start_tool() {
    local name="$1" kind="$2"
    shift 2
    "$tmp/idle_conns" 127.0.0.1 "$port" "$n" "$kind" "$@" >"$tmp/$name.out" 2>&1 &
    tool_pid=$!
    track "$tool_pid"
}
# shellcheck disable=SC2317  # called through wait_until
tool_ready() { grep -q '^ready' "$tmp/$1.out"; }
# field NAME KEY: KEY=value from the tool's output
field() { grep -o "\b$2=[0-9]*" "$tmp/$1.out" | tail -n1 | cut -d= -f2; }

status=0
declare -A row=()

for kind in "${idle_kinds[@]}"; do
    log "$kind: $n idle connections"
    start_h2pg "server-$kind" MIGRATE_ON_START=false THREADS="$threads" POOL_MAX=16 LOG_LEVEL=warn \
        KEEPALIVE_TIMEOUT_MS=3600000
    server_pid=$spawned
    # warm-up: pools filled, stacks and buffers allocated as under load
    wrk -t2 -c16 -d2s "http://127.0.0.1:$port/json" >/dev/null 2>&1 || true
    wrk -t2 -c16 -d2s "http://127.0.0.1:$port/db" >/dev/null 2>&1 || true
    read -r b_json_50 b_json_99 b_json_r < <(latency /json)
    read -r b_db_50 b_db_99 b_db_r < <(latency /db)
    sleep 1
    rss0=$(rss_kib "$server_pid")
    fds0=$(fd_count "$server_pid")

    start_tool "idle-$kind" "$kind"
    wait_until 180 tool_ready "idle-$kind" || die "$kind: the load tool did not get ready: $(cat "$tmp/idle-$kind.out")"
    sleep 2 # let both workers settle
    rss1=$(rss_kib "$server_pid")
    fds1=$(fd_count "$server_pid")
    idle=$(field "idle-$kind" idle)
    failed=$(field "idle-$kind" failed)
    setup_ms=$(field "idle-$kind" setup_ms)
    [[ "$failed" -eq 0 ]] || {
        log "$kind: $failed connection(s) failed: $(grep first_error "$tmp/idle-$kind.out" || true)"
        status=1
    }

    read -r i_json_50 i_json_99 i_json_r < <(latency /json)
    read -r i_db_50 i_db_99 i_db_r < <(latency /db)
    rss2=$(rss_kib "$server_pid")

    stop_proc "$tool_pid"
    closed_early=$(field "idle-$kind" closed_by_server)
    [[ "${closed_early:-0}" -eq 0 ]] || log "$kind: the server closed $closed_early connection(s) during the hold"
    sleep 2
    rss3=$(rss_kib "$server_pid")
    fds3=$(fd_count "$server_pid")
    # a second round: the memory the first left behind is reused, not added to
    start_tool "again-$kind" "$kind"
    wait_until 180 tool_ready "again-$kind" || die "$kind: the load tool did not get ready: $(cat "$tmp/again-$kind.out")"
    sleep 2
    rss4=$(rss_kib "$server_pid")
    stop_proc "$tool_pid"
    stop_proc "$server_pid"

    per_conn=$(((rss1 - rss0) * 1024 / (idle > 0 ? idle : 1)))
    verdict=yes
    if [[ $kind == partial ]]; then
        verdict="-"
    elif [[ $per_conn -gt $limit_bytes ]]; then
        verdict=NO
        status=1
    fi
    row[$kind]="$(printf '%-8s %6s %8s %10s %9s %7s %7s %9s %10s %10s %12s' "$kind" "$idle" "$setup_ms" \
        "$rss0" "$rss1" "$per_conn" "$verdict" "$rss2" "$rss3" "$rss4" "$fds0/$fds1/$fds3")"
    row[$kind-lat]="$(printf '%-10s %-6s %9s %9s %9s   %9s %9s %9s' "$kind" /json "$b_json_50" "$b_json_99" "$b_json_r" \
        "$i_json_50" "$i_json_99" "$i_json_r")
$(printf '%-10s %-6s %9s %9s %9s   %9s %9s %9s' "" /db "$b_db_50" "$b_db_99" "$b_db_r" "$i_db_50" "$i_db_99" "$i_db_r")"
done

# ---- the keep-alive timeout closes them ----
log "KEEPALIVE_TIMEOUT_MS=$short_ms: are they closed?"
start_h2pg server-timeout MIGRATE_ON_START=false THREADS="$threads" POOL_MAX=16 LOG_LEVEL=warn \
    KEEPALIVE_TIMEOUT_MS="$short_ms"
server_pid=$spawned
fds_before=$(fd_count "$server_pid")
for kind in "${idle_kinds[@]}"; do
    # -w: watch until the server closed every one, or the timeout plus 30 s
    "$tmp/idle_conns" 127.0.0.1 "$port" "$n" "$kind" -w $((short_ms / 1000 + 30)) >"$tmp/timeout-$kind.out" 2>&1 ||
        log "$kind: $(grep first_error "$tmp/timeout-$kind.out" || echo 'the load tool failed')"
    idle=$(field "timeout-$kind" idle)
    closed=$(field "timeout-$kind" closed_by_server)
    open=$(field "timeout-$kind" still_open)
    [[ "${open:-1}" -eq 0 && "${idle:-0}" -eq "$n" ]] || status=1
    delays="$(grep -o 'min=.*' "$tmp/timeout-$kind.out" || echo -)"
    row[$kind-timeout]="$(printf '%-10s %6s %8s %6s   %s' "$kind" "$idle" "$closed" "$open" "$delays")"
done
sleep 1
fds_after=$(fd_count "$server_pid")
stop_proc "$server_pid"

echo
echo "Idle keep-alive connections: N=$n per kind, THREADS=$threads. VmRSS in KiB: before; with the N idle; after"
echo "wrk ran beside them; once they were closed; with N idle again (a second round). B/conn = (idle - before) / N."
echo "fds: before / with the N idle / once closed"
printf '%-8s %6s %8s %10s %9s %7s %7s %9s %10s %10s %12s\n' kind idle setup_ms "RSS before" "RSS idle" "B/conn" "<=$limit_bytes" \
    "RSS +wrk" "RSS closed" "RSS again" "fds b/i/c"
for kind in "${idle_kinds[@]}"; do echo "${row[$kind]}"; done
echo
echo "Well-behaved client (wrk -t2 -c16 ${secs}s): before | while the N are idle"
printf '%-10s %-6s %9s %9s %9s   %9s %9s %9s\n' server path p50 p99 "req/s" p50 p99 "req/s"
for kind in "${idle_kinds[@]}"; do echo "${row[$kind-lat]}"; done
echo
echo "KEEPALIVE_TIMEOUT_MS=$short_ms: closed by the server, and when (ms after each went idle)"
printf '%-10s %6s %8s %6s   %s\n' kind idle closed open "close after idle (ms)"
for kind in "${idle_kinds[@]}"; do echo "${row[$kind-timeout]}"; done
echo "server fds: $fds_before before, $fds_after after"
echo
echo "$(date -u +%Y-%m-%d) $(nproc) cores ($(uname -m)); load average $(cut -d' ' -f1-3 /proc/loadavg); ulimit -n $(ulimit -n)"
[[ $status -eq 0 ]] || log "FAILED (see above)"
exit "$status"
