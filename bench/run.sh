#!/usr/bin/env bash
# The benchmark: in one run, for each workload, the database's own ceiling
# (pgbench -M prepared running the same SQL) and the service under wrk, then
# a table: workload, service req/s, ceiling, ratio, p50, p99, non-2xx, RSS.
#
#   bench/run.sh [seconds per measurement (default 10)]
#
# Starts everything itself: builds, a private PostgreSQL (synchronous_commit
# off, as the reference figures were taken) unless DATABASE_URL is set, a
# database with the benchmark data, the service, and nginx for the static
# /json ceiling. Needs wrk, pgbench (postgresql-client), nginx.
# Environment: THREADS, POOL_MAX (service), CONNS (wrk connections, 256),
# ONLY (a workload name to run alone).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi

secs="${1:-10}"
conns="${CONNS:-256}"
only="${ONLY:-}"
for tool in wrk pgbench nginx; do
    command -v "$tool" >/dev/null || {
        echo "bench: $tool is missing (apt-get install wrk postgresql-client nginx)" >&2
        exit 1
    }
done
scripts/build.sh >/dev/null

work="$(mktemp -d)"
server_pid=""
nginx_conf=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "$nginx_conf" ] && nginx -c "$nginx_conf" -s stop 2>/dev/null
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS h2pg_bench WITH (FORCE)" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# ---- database and data ----
psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS h2pg_bench WITH (FORCE)" -c "CREATE DATABASE h2pg_bench"
db="$DATABASE_URL dbname=h2pg_bench"
build/h2pg migrate --database-url "$db" --log-level warn
USERS=10000
psql -q "$db" <<SQL
ALTER SYSTEM SET synchronous_commit = off;
SELECT pg_reload_conf();
INSERT INTO users (name, email) SELECT 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, $USERS) i;
INSERT INTO orders (user_id, item, quantity, price_cents, total_cents)
  SELECT u, 'item ' || k, k, 100, 100 * k FROM generate_series(1, $USERS) u, generate_series(1, 5) k;
INSERT INTO accounts (user_id, balance_cents) SELECT u, 100000000000 FROM generate_series(1, $USERS) u;
INSERT INTO accounts (user_id, balance_cents) SELECT u, 100000000000 FROM generate_series(1, $USERS) u;
VACUUM ANALYZE;
SQL
ACCOUNTS=$((USERS * 2))

# ---- the service ----
port="$(free_port)"
# In a session of its own, as a service runs (systemd, a container) and as
# PostgreSQL and nginx run here: with the kernel's autogroup scheduling
# (sched_autogroup_enabled=1) each session shares the CPUs as one group, so
# a server left in this script's session would split one share with wrk
# while PostgreSQL has a whole one (measured: /db 51-61k req/s so, 85k in
# its own session, on the same code).
DATABASE_URL="$db" MIGRATE_ON_START=false LOG_LEVEL=warn PORT="$port" HOST=127.0.0.1 \
    setsid build/h2pg serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port"

# ---- nginx: the static ceiling for /json ----
nginx_conf="$work/nginx.conf"
for _ in 1 2 3 4 5; do # another process may take the free port first
nport="$(free_port)"
cat >"$nginx_conf" <<EOF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nport reuseport;
        location /json { default_type application/json; return 200 '{"message":"Hello, World!"}'; }
    }
}
EOF
nginx -c "$nginx_conf" 2>/dev/null && break
done

# ---- pgbench scripts: the same SQL the service runs ----
cat >"$work/db.sql" <<'EOF'
\set id random(1, 10000)
SELECT id, randomnumber FROM world WHERE id = :id;
EOF
{
    for _ in $(seq 20); do echo '\set id random(1, 10000)'; echo 'SELECT id, randomnumber FROM world WHERE id = :id;'; done
} >"$work/queries.sql"
{
    printf '%s\n' '\startpipeline'
    for _ in $(seq 20); do echo '\set id random(1, 10000)'; echo 'SELECT id, randomnumber FROM world WHERE id = :id;'; done
    printf '%s\n' '\endpipeline'
} >"$work/queries-pipelined.sql"
{
    for i in $(seq 20); do
        echo "\\set id$i random(1, 10000)"
        echo "SELECT id, randomnumber FROM world WHERE id = :id$i;"
    done
    # ids sorted and distinct, as the service writes them, so that
    # concurrent updates lock rows in the same order
    printf 'UPDATE world SET randomnumber = v.r FROM (SELECT DISTINCT ON (id) id, (random() * 9999 + 1)::int AS r FROM unnest(ARRAY['
    for i in $(seq 20); do printf ':id%s::int%s' "$i" "$([ "$i" -lt 20 ] && echo ,)"; done
    printf ']) AS id ORDER BY id) v WHERE world.id = v.id;\n'
} >"$work/updates.sql"
cat >"$work/fortunes.sql" <<'EOF'
SELECT id, message FROM fortune;
EOF
cat >"$work/user.sql" <<EOF
\\set id random(1, $USERS)
SELECT id, name, email, created_at FROM users WHERE id = :id;
SELECT id, user_id, item, quantity, price_cents, total_cents, created_at FROM orders WHERE user_id = :id ORDER BY id LIMIT 100;
SELECT id, user_id, balance_cents, created_at FROM accounts WHERE user_id = :id ORDER BY id;
EOF
cat >"$work/transfer.sql" <<EOF
\\set a random(1, $ACCOUNTS)
\\set b 1 + (:a - 1 + random(1, $ACCOUNTS - 1)) % $ACCOUNTS
\\set amt random(1, 100)
BEGIN;
SELECT id, balance_cents FROM accounts WHERE id IN (:a, :b) ORDER BY id FOR UPDATE;
UPDATE accounts SET balance_cents = balance_cents + CASE WHEN id = :a THEN -:amt::bigint ELSE :amt::bigint END WHERE id IN (:a, :b);
INSERT INTO transfers (from_account_id, to_account_id, amount_cents) VALUES (:a, :b, :amt);
COMMIT;
EOF
cat >"$work/transfer-key.sql" <<EOF
\\set a random(1, $ACCOUNTS)
\\set b 1 + (:a - 1 + random(1, $ACCOUNTS - 1)) % $ACCOUNTS
\\set amt random(1, 100)
\\set k random(1, 1000000000000)
BEGIN;
INSERT INTO idempotency_keys (key, request_hash, status, response_body) VALUES ('pgb-' || :k || '-' || :client_id, 'h', 0, '') ON CONFLICT (key) DO NOTHING RETURNING 1;
SELECT id, balance_cents FROM accounts WHERE id IN (:a, :b) ORDER BY id FOR UPDATE;
UPDATE accounts SET balance_cents = balance_cents + CASE WHEN id = :a THEN -:amt::bigint ELSE :amt::bigint END WHERE id IN (:a, :b);
INSERT INTO transfers (from_account_id, to_account_id, amount_cents) VALUES (:a, :b, :amt);
UPDATE idempotency_keys SET status = 201, response_body = '{}' WHERE key = 'pgb-' || :k || '-' || :client_id;
COMMIT;
EOF

# ---- wrk scripts for the POST and random-id workloads ----
cat >"$work/user.lua" <<EOF
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, $USERS))
end
EOF
cat >"$work/transfer.lua" <<EOF
local counter = 0
local thread_id = 0
setup = function(thread) thread_id = thread_id + 1; thread:set("tid", thread_id) end
init = function() math.randomseed(os.time() + tid) end
request = function()
  local a, b = math.random(1, $ACCOUNTS), math.random(1, $ACCOUNTS)
  while b == a do b = math.random(1, $ACCOUNTS) end
  local body = string.format('{"from_account_id":%d,"to_account_id":%d,"amount_cents":%d}', a, b, math.random(1, 100))
  local headers = {["Content-Type"] = "application/json"}
  if os.getenv("IDEMPOTENT") then
    counter = counter + 1
    headers["Idempotency-Key"] = string.format("wrk-%d-%d-%d", os.time(), tid, counter)
  end
  return wrk.format("POST", "/transfers", headers, body)
end
EOF

# ---- measuring ----
pg_tps() { # script -> tps
    { pgbench -n -M prepared -c64 -j2 -T "$secs" -f "$1" "$db" 2>"$work/pgbench.err" || true; } |
        awk '/^tps/ {printf "%d", $3}'
    if grep -q aborted "$work/pgbench.err"; then
        echo "bench: pgbench $(basename "$1") had aborted clients:" >&2
        grep -m3 error "$work/pgbench.err" >&2
    fi
}
sample_rss() {
    local peak=0 v
    while kill -0 "$server_pid" 2>/dev/null; do
        v=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0)
        [ "${v:-0}" -gt "$peak" ] && peak=$v && echo "$peak" >"$work/rss"
        sleep 0.2
    done
}
run_wrk() { # path [lua] -> sets req p50 p99 non2xx rss_mib
    local out args=(-t2 -c"$conns" -d"${secs}s" --latency)
    [ -n "${2:-}" ] && args+=(-s "$2")
    wrk "${args[@]}" -d2s "$base$1" >/dev/null 2>&1 || true # warm up
    echo 0 >"$work/rss"
    sample_rss &
    local sampler=$!
    out="$(wrk "${args[@]}" "$base$1" 2>&1)"
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    req=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    non2xx=${non2xx:-0}
    errs=$(awk '/Socket errors/ {print}' <<<"$out")
    [ -n "$errs" ] && echo "  ($1: $errs)" >&2
    rss_mib=$(awk '{printf "%.1f", $1 / 1024}' "$work/rss")
}

printf '%-34s %10s %10s %7s %9s %9s %8s %8s\n' workload "req/s" ceiling ratio p50 p99 non-2xx "RSS MiB" | tee "$work/table"
row() { # name ceiling-label
    local ratio="-"
    [ "${2:-0}" -gt 0 ] 2>/dev/null && ratio=$(awk -v a="$req" -v b="$2" 'BEGIN {printf "%.2f", a / b}')
    printf '%-34s %10s %10s %7s %9s %9s %8s %8s\n' "$1" "$req" "${3:-$2}" "$ratio" "$p50" "$p99" "$non2xx" "$rss_mib" | tee -a "$work/table"
}
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

if want json; then
    ceiling=$(wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$nport/json" | awk '/Requests\/sec/ {printf "%d", $2}')
    run_wrk /json; row "/json (ceiling: static nginx)" "$ceiling"
fi
if want plaintext; then run_wrk /plaintext; row "/plaintext" 0 "-"; fi
if want db; then c=$(pg_tps "$work/db.sql"); run_wrk /db; row "/db" "$c"; fi
if want queries; then
    plain=$(pg_tps "$work/queries.sql")
    c=$(pg_tps "$work/queries-pipelined.sql")
    run_wrk "/queries?queries=20"; row "/queries?queries=20 (pipelined)" "$c" "$c ($plain)"
fi
if want updates; then c=$(pg_tps "$work/updates.sql"); run_wrk "/updates?queries=20"; row "/updates?queries=20" "$c"; fi
if want fortunes; then c=$(pg_tps "$work/fortunes.sql"); run_wrk /fortunes; row "/fortunes" "$c"; fi
if want user; then c=$(pg_tps "$work/user.sql"); run_wrk /users/1 "$work/user.lua"; row "GET /users/{id}" "$c"; fi
if want transfer; then c=$(pg_tps "$work/transfer.sql"); run_wrk /transfers "$work/transfer.lua"; row "POST /transfers" "$c"; fi
if want transfer-key; then
    c=$(pg_tps "$work/transfer-key.sql")
    IDEMPOTENT=1 run_wrk /transfers "$work/transfer.lua"; row "POST /transfers + Idempotency-Key" "$c"
fi
echo
echo "$(date -u +%Y-%m-%d) $(nproc) cores, $(uname -m); wrk -t2 -c$conns ${secs}s; pgbench -M prepared -c64 -j2; THREADS=${THREADS:-$(nproc)} POOL_MAX=${POOL_MAX:-32}"
