#!/usr/bin/env bash
# Scaling out on one machine: the throughput of ONE vs THREE copies of the
# service behind nginx (docker/nginx.conf, the upstream holding one or three
# servers), with the same per-process settings and the same wrk load, plus
# one copy without nginx for reference. Prints a table.
#
#   bench/scale.sh [seconds per measurement (default 10)]
#
# Starts everything itself: a private PostgreSQL unless DATABASE_URL is set
# (scripts/with-postgres.sh), a database with the benchmark data, the
# copies, nginx. Needs wrk, nginx, curl, psql. Environment: H2PG (the binary;
# default: scripts/build.sh, then build/h2pg), THREADS and POOL_MAX (per
# copy, default 2 and 16), CONNS (wrk connections, default 128), ROUNDS
# (default 2: the setups are measured in turn, round after round, so that
# what else runs on the machine weighs on each alike).
#
# On a machine with few cores every copy, nginx, wrk and PostgreSQL share
# them: the figures show the cost of the proxy hop and of more processes per
# core, not the gain of more machines.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [[ -z "${DATABASE_URL:-}" ]]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi

secs="${1:-10}"
conns="${CONNS:-128}"
threads="${THREADS:-2}"
pool_max="${POOL_MAX:-16}"
if [[ -n "${H2PG:-}" ]]; then
    h2pg="$(realpath "$H2PG")"
else
    scripts/build.sh >/dev/null
    h2pg="$repo/build/h2pg"
fi

# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"
need_tools wrk:wrk nginx:nginx curl:curl psql:postgresql-client-15
scale_init scale-bench

# ---- the database ----

shared_db bench
"$h2pg" migrate --database-url "$db_url" --log-level warn
USERS=10000
psql_q -d "$db_url" >/dev/null <<SQL
INSERT INTO users (name, email) SELECT 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, $USERS) i;
INSERT INTO accounts (user_id, balance_cents) SELECT u, 100000000000 FROM generate_series(1, $USERS) u;
INSERT INTO accounts (user_id, balance_cents) SELECT u, 100000000000 FROM generate_series(1, $USERS) u;
VACUUM ANALYZE;
SQL
accounts=$((USERS * 2))

cat >"$tmp/transfer.lua" <<EOF
-- random transfers between distinct accounts, small amounts: rarely contended
local n = 0
setup = function(thread) n = n + 1; thread:set("id", n) end
init = function() math.randomseed(os.time() * 100 + id) end
request = function()
  local a = math.random(1, $accounts)
  local b = math.random(1, $accounts - 1)
  if b >= a then b = b + 1 end
  local body = string.format('{"from_account_id":%d,"to_account_id":%d,"amount_cents":%d}', a, b, math.random(1, 100))
  return wrk.format("POST", "/transfers", {["Content-Type"] = "application/json"}, body)
end
EOF

# ---- measuring ----

# measure URL PATH [LUA]: wrk against URL+PATH; sets req p50 p99 bad
measure() {
    local args=(-t2 -c"$conns" --latency) out
    [[ -z "${3:-}" ]] || args+=(-s "$3")
    wrk "${args[@]}" -d2s "$1$2" >/dev/null 2>&1 || true # warm-up: pools, keep-alive
    out="$(wrk "${args[@]}" -d"${secs}s" "$1$2" 2>&1)"
    req="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    bad="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
    local errs
    errs="$(grep 'Socket errors' <<<"$out" || true)"
    bad="${bad:-0}${errs:+ ($errs)}"
}

# copies N: N copies of the service; sets ports=(...) and copy_pids=(...)
copies() {
    local i
    ports=()
    copy_pids=()
    for i in $(seq 1 "$1"); do
        start_h2pg "copy$i" MIGRATE_ON_START=false THREADS="$threads" POOL_MIN=2 POOL_MAX="$pool_max" \
            LOG_LEVEL=warn TRUSTED_PROXIES=127.0.0.1/32
        ports+=("$port")
        copy_pids+=("$spawned")
        wait_until 10 answers "$port" /readyz || die "copy$i is not ready"
    done
}
stop_copies() {
    local pid
    for pid in "${copy_pids[@]}"; do stop_proc "$pid"; done
    rm -f "$tmp"/copy*.log # the access logs grow by the measurement
}

printf '%-16s %-22s %5s %10s %9s %9s %s\n' workload setup round "req/s" p50 p99 non-2xx
row() { printf '%-16s %-22s %5s %10s %9s %9s %s\n' "$1" "$2" "$round" "$req" "$p50" "$p99" "$bad"; }

workloads=("/json|" "/db|" "POST /transfers|$tmp/transfer.lua")
run_all() { # setup-label base-url
    local w path lua
    for w in "${workloads[@]}"; do
        path="${w%%|*}"
        lua="${w#*|}"
        measure "$2" "${path#POST }" "$lua"
        row "$path" "$1"
    done
}

export NGINX_ACCESS_LOG=off NGINX_WORKERS=2
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

for round in $(seq 1 "${ROUNDS:-2}"); do
    copies 1
    run_all "1 copy, no nginx" "http://127.0.0.1:${ports[0]}"
    start_nginx "${ports[@]}"
    run_all "1 copy behind nginx" "http://127.0.0.1:$nginx_port"
    stop_proc "$nginx_pid"
    stop_copies

    copies 3
    start_nginx "${ports[@]}"
    run_all "3 copies behind nginx" "http://127.0.0.1:$nginx_port"
    stop_proc "$nginx_pid"
    stop_copies
done

echo
echo "$(date -u +%Y-%m-%d) $(nproc) cores ($(uname -m)); load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after;" \
    "wrk -t2 -c$conns ${secs}s after a 2 s warm-up; per copy THREADS=$threads POOL_MAX=$pool_max;" \
    "nginx: docker/nginx.conf, 2 workers, access log off"
