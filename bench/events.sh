#!/usr/bin/env bash
# The event stream under fan-out: SUBSCRIBERS streams of GET /events held
# open (default 1,000), then EVENTS events (default 300) committed at RATE
# per second (default 50) with events_emit, as every writer does; for each
# event each stream gets, the time from its commit to its arrival
# (bench/sse_latency.c), as p50 / p90 / p99 / max, plus what the server's
# CPU spent per event delivered to one stream.
#
#   bench/events.sh
#
# Starts everything itself: a private PostgreSQL unless DATABASE_URL is set
# (scripts/with-postgres.sh), a database, the server (THREADS, default 2).
# Needs psql, cc and libpq-dev. H2PG names the binary (default:
# scripts/build.sh, then build/h2pg). Exits 1 if a stream missed an event.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [[ -z "${DATABASE_URL:-}" ]]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi

subs="${SUBSCRIBERS:-1000}"
events="${EVENTS:-300}"
rate="${RATE:-50}"
threads="${THREADS:-2}"
if [[ -n "${H2PG:-}" ]]; then
    h2pg="$(realpath "$H2PG")"
else
    scripts/build.sh >/dev/null
    h2pg="$repo/build/h2pg"
fi

# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"
need_tools psql:postgresql-client-15 cc:gcc
scale_init events-bench

want_fds=$((subs + 1024))
if [[ "$(ulimit -Hn)" != unlimited && "$(ulimit -Hn)" -lt $want_fds ]]; then
    ulimit -Hn "$want_fds" 2>/dev/null || log "cannot raise the hard fd limit to $want_fds (not root?)"
fi
ulimit -Sn "$(( $(ulimit -Hn) < want_fds ? $(ulimit -Hn) : want_fds ))"

cc -O2 -std=c11 -Wall -o "$tmp/sse_latency" "$repo/bench/sse_latency.c" \
    -I"$(pg_config --includedir)" -lpq -lpthread || die "cannot build bench/sse_latency.c"

shared_db events
"$h2pg" migrate --database-url "$db_url" --log-level warn
start_h2pg server MIGRATE_ON_START=false THREADS="$threads" POOL_MAX=16 LOG_LEVEL=warn
server_pid=$spawned

hz=$(getconf CLK_TCK)
log "$subs streams, $events events at $rate/s"
c0=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
"$tmp/sse_latency" 127.0.0.1 "$port" "$subs" "$events" "$rate" "$db_url" | tee "$tmp/out" || status=$?
c1=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
line="$(grep '^subscribers=' "$tmp/out" || true)"
[[ -n "$line" ]] || die "bench/sse_latency printed no result"
get() { grep -o "\b$1=[0-9.]*" <<<"$line" | cut -d= -f2; }
cpu_ms=$(( (c1 - c0) * 1000 / hz ))
received=$(get received)
per_us=$(awk -v ms="$cpu_ms" -v n="$received" 'BEGIN { if (n > 0) printf "%.2f", ms * 1000 / n; else print "-" }')
echo
echo "| streams | events | rate/s | received / expected | p50 ms | p90 ms | p99 ms | max ms | server CPU ms | µs per event per stream |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| $subs | $events | $rate | $received / $(get expected) | $(get p50_ms) | $(get p90_ms) | $(get p99_ms) | $(get max_ms) | $cpu_ms | $per_us |"
exit "${status:-0}"
