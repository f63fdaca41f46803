#!/usr/bin/env bash
# The benchmark: in one sitting, for each workload, the database's own
# ceiling (pgbench -M prepared running the same SQL; static nginx for /json),
# then h2pg and, if asked, its opponents one after the other under the same
# wrk load, each measured the same way: req/s, p50, p99, non-2xx, and where
# the CPU goes per request completed -- the server's (all its processes and
# threads), PostgreSQL's (the whole cluster) and the load generator's -- plus
# the share of the machine that something else took meanwhile.
#
#   bench/run.sh [--peers node,tfb,floor,alt] [seconds per measurement (default 10)]
#   PEERS=node,tfb bench/run.sh 10          (the same)
#
# Peers (opponents), on h2pg's benchmark database, each started once in a
# session of its own and loaded only in its turn:
#   node  fastify + postgres.js (/work/shared/peers/node), run from a writable
#         copy: NODE_PEER_DIR (default /opt/node-peer); workers: PEER_THREADS
#   tfb   TechEmpower's h2o C entry (/work/shared/peers/tfb-h2o): TFB_H2O_DIR
#         (default /opt/tfb-h2o), TFB_RUN (default
#         /work/shared/peers/tfb-h2o/run.sh); threads: PEER_THREADS
#   floor Debian's h2o 2.2.5 with nothing on top (bench/h2o_floor.c, built
#         here): a constant /json, set up as h2pg sets up h2o; what h2pg
#         spends above it is h2pg's own, what TFB's entry spends above or
#         below it is its newer h2o's; threads: PEER_THREADS
#   alt   another h2pg binary, H2PG_ALT (say, a build of another commit),
#         started as h2pg is: an A/B of two versions in one sitting
# A workload runs for every server that serves it (h2pg, alt: all; node: json,
# plaintext, db, queries, updates, fortunes, user; tfb: the same but user;
# floor: json),
# back to back, each after a 2 s warm-up, so that a noisy machine hurts all
# alike. With peers, a last table gives the ratios h2pg / peer.
#
# Starts everything itself: builds, a private PostgreSQL (synchronous_commit
# off, as the reference figures were taken) unless DATABASE_URL is set (then
# in key=value form, and PostgreSQL's CPU is measured only if it runs on this
# machine and its processes are visible), a database with the benchmark data,
# the servers, and nginx for the static /json ceiling. Needs wrk, pgbench
# (postgresql-client), nginx; node for the node peer.
# Environment: THREADS, POOL_MAX (h2pg), CONNS (wrk connections, 256),
# ROUNDS (measurements per server and workload, taking turns, in reverse
# order every other round; the ratio table compares medians; default 1), ONLY
# (workloads to run alone, comma-separated: json plaintext db queries updates
# fortunes user transfer transfer-key user-auth transfer-auth), SYSCALLS (set:
# each server's system calls per request, counted by perf's tracepoints
# while wrk runs -- needs perf and the right to trace; the tracing costs
# CPU, so the CPU columns of such a run read high), PERF_DIR (a directory:
# perf record -g of each server while wrk runs, one file per server and
# workload, for perf report), PEER_THREADS (peers' workers/threads,
# default THREADS or the number of cores), PEER_DB_PASS (the database
# password the peers give, if DATABASE_URL's server asks for one).
#
# user-auth and transfer-auth measure what bearer authentication costs:
# GET /users/{id} and POST /transfers as in user and transfer, first on the
# h2pg without authentication, then on a second h2pg (started beside it,
# loaded only in its turn) with AUTH_JWKS_FILE, every request carrying one
# valid RS256 token. The key, the JWK Set and the token (an administrator's,
# so the requests are the same ones as without authentication) are made
# here with openssl. Each runs twice on each server (without, with, with,
# without) and a line gives the ratios with / without of the sums.
#
# CPU is read from /proc/<pid>/stat (utime + stime of every live process of a
# server's or the cluster's process tree, plus cutime + cstime, which hold
# the children that ended and were reaped meanwhile: PostgreSQL's postmaster
# reaps every backend), before and after each measurement, so it counts what
# each of them spent whatever else the machine was doing. The resolution is
# one clock tick (10 ms) per process.
set -euo pipefail
cd "$(dirname "$0")/.."

args=("$@")
peers="${PEERS:-}"
secs=10
while [ $# -gt 0 ]; do
    case "$1" in
    --peers) peers="${2:-}"; shift 2 ;;
    --peers=*) peers="${1#--peers=}"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) secs="$1"; shift ;;
    *) echo "bench: unknown argument $1 (bench/run.sh [--peers node,tfb,floor] [seconds])" >&2; exit 2 ;;
    esac
done
conns="${CONNS:-256}"
rounds="${ROUNDS:-1}"
only=",${ONLY:-},"
peer_threads="${PEER_THREADS:-${THREADS:-$(nproc)}}"
node_dir="${NODE_PEER_DIR:-/opt/node-peer}"
tfb_dir="${TFB_H2O_DIR:-/opt/tfb-h2o}"
tfb_run="${TFB_RUN:-/work/shared/peers/tfb-h2o/run.sh}"
servers=(h2pg)
for p in ${peers//,/ }; do
    case "$p" in
    node)
        if ! command -v node >/dev/null || [ ! -x "$node_dir/run.sh" ]; then
            echo "bench: the node peer needs node and $node_dir/run.sh (set NODE_PEER_DIR to a writable copy of /work/shared/peers/node)" >&2
            exit 1
        fi ;;
    tfb)
        if [ ! -x "$tfb_run" ] || [ ! -x "$tfb_dir/opt/bin/h2o-app" ]; then
            echo "bench: the tfb peer needs $tfb_run and a build in $tfb_dir (TFB_RUN, TFB_H2O_DIR)" >&2
            exit 1
        fi ;;
    floor) ;;
    alt)
        if [ ! -x "${H2PG_ALT:-}" ]; then
            echo "bench: the alt peer needs H2PG_ALT, the path of another h2pg binary" >&2
            exit 1
        fi ;;
    *) echo "bench: unknown peer $p (node, tfb, floor, alt)" >&2; exit 2 ;;
    esac
    servers+=("$p")
done
workloads=(json plaintext db queries updates fortunes user transfer transfer-key user-auth transfer-auth)
want() { [ "$only" = ",," ] || [[ "$only" == *",$1,"* ]]; }
serves() { # server workload
    case "$1:$2" in
    h2pg:* | alt:*) return 0 ;;
    node:json | node:plaintext | node:db | node:queries | node:updates | node:fortunes | node:user) return 0 ;;
    tfb:json | tfb:plaintext | tfb:db | tfb:queries | tfb:updates | tfb:fortunes) return 0 ;;
    floor:json) return 0 ;;
    esac
    return 1
}
only_list="${ONLY:-}"
for w in ${only_list//,/ }; do
    [[ " ${workloads[*]} " == *" $w "* ]] || { echo "bench: unknown workload $w in ONLY (${workloads[*]})" >&2; exit 2; }
done
for tool in wrk pgbench nginx; do
    command -v "$tool" >/dev/null || {
        echo "bench: $tool is missing (apt-get install wrk postgresql-client nginx)" >&2
        exit 1
    }
done
if want user-auth || want transfer-auth; then
    for tool in openssl xxd curl; do
        command -v "$tool" >/dev/null || {
            echo "bench: $tool is missing (user-auth and transfer-auth make their key and token with openssl and xxd)" >&2
            exit 1
        }
    done
fi
if [ -z "${DATABASE_URL:-}" ]; then
    exec scripts/with-postgres.sh "$0" "${args[@]}"
fi
scripts/build.sh >/dev/null

work="$(mktemp -d)"
declare -A pid_of=() base_of=() label_of=([h2pg]=h2pg [node]=node [tfb]=tfb-h2o [floor]=h2o-floor [h2pg-auth]="h2pg, RS256 token" [alt]="h2pg (alt)")
nginx_conf=""
stop_servers() {
    local s pid
    for s in "${!pid_of[@]}"; do kill -TERM "${pid_of[$s]}" 2>/dev/null || true; done
    for s in "${!pid_of[@]}"; do
        pid="${pid_of[$s]}"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    stop_servers
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
psql -q "$db" >/dev/null <<SQL
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

# ---- PostgreSQL's processes: the postmaster is the checkpointer's parent ----
pg_root=""
ckpt=$(psql -Atq "$db" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'" 2>/dev/null || true)
if [ -n "$ckpt" ] && [ -r "/proc/$ckpt/status" ]; then
    pg_root=$(awk '/^PPid:/ {print $2}' "/proc/$ckpt/status")
    [ "$(cat "/proc/$pg_root/comm" 2>/dev/null)" = postgres ] || pg_root=""
fi
[ -n "$pg_root" ] || echo "bench: PostgreSQL's processes are not visible here; its CPU is not measured" >&2

# ---- the servers ----
# Each in a session of its own, as a service runs (systemd, a container) and
# as PostgreSQL and nginx run here: with the kernel's autogroup scheduling
# (sched_autogroup_enabled=1) each session shares the CPUs as one group, so
# a server left in this script's session would split one share with wrk
# while PostgreSQL has a whole one (measured: /db 51-61k req/s so, 85k in
# its own session, on the same code). (Without job control a background
# child is no process-group leader, so setsid execs in place: $! is the
# server.)
wait_ready() { # server url
    local pid="${pid_of[$1]}"
    for _ in $(seq 300); do
        curl -fs -o /dev/null "$2" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: ${label_of[$1]} did not answer $2; its log:" >&2
    tail -n 20 "$work/$1.log" >&2
    exit 1
}
# the peers log in as h2pg's user, to the same database
pg_user=$(psql -Atq "$db" -c "SELECT current_user")
pg_host=$(psql -Atq "$db" -c "SELECT coalesce(host(inet_server_addr()), '127.0.0.1')")
pg_port=$(psql -Atq "$db" -c "SELECT current_setting('port')")
pg_pass="${PEER_DB_PASS:-${PGPASSWORD:-}}"
if [ -z "$pg_pass" ] && [[ " $DATABASE_URL " =~ [[:space:]]password=([^[:space:]]+) ]]; then
    pg_pass="${BASH_REMATCH[1]}"
fi
urlenc() {
    local s="$1" out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "$c" in [A-Za-z0-9._~-]) out+="$c" ;; *) out+=$(printf '%%%02X' "'$c") ;; esac
    done
    printf '%s' "$out"
}
start_server() { # name
    local port
    port="$(free_port)"
    case "$1" in
    h2pg)
        DATABASE_URL="$db" MIGRATE_ON_START=false LOG_LEVEL=warn PORT="$port" HOST=127.0.0.1 \
            setsid build/h2pg serve >"$work/h2pg.log" 2>&1 &
        pid_of[h2pg]=$!
        wait_ready h2pg "http://127.0.0.1:$port/readyz" ;;
    alt)
        DATABASE_URL="$db" MIGRATE_ON_START=false LOG_LEVEL=warn PORT="$port" HOST=127.0.0.1 \
            setsid "$H2PG_ALT" serve >"$work/alt.log" 2>&1 &
        pid_of[alt]=$!
        wait_ready alt "http://127.0.0.1:$port/readyz" ;;
    h2pg-auth)
        AUTH_JWKS_FILE="$work/jwks.json" DATABASE_URL="$db" MIGRATE_ON_START=false LOG_LEVEL=warn PORT="$port" \
            HOST=127.0.0.1 setsid build/h2pg serve >"$work/h2pg-auth.log" 2>&1 &
        pid_of[h2pg-auth]=$!
        wait_ready h2pg-auth "http://127.0.0.1:$port/readyz" ;;
    node)
        DATABASE_URL="postgresql://$(urlenc "$pg_user")${pg_pass:+:$(urlenc "$pg_pass")}@$pg_host:$pg_port/h2pg_bench" \
            PORT="$port" WORKERS="$peer_threads" setsid "$node_dir/run.sh" >"$work/node.log" 2>&1 &
        pid_of[node]=$!
        wait_ready node "http://127.0.0.1:$port/readyz" ;;
    tfb)
        TFB_H2O_DIR="$tfb_dir" DB_HOST="$pg_host" DB_PORT="$pg_port" DB_NAME=h2pg_bench DB_USER="$pg_user" \
            DB_PASS="$pg_pass" THREADS="$peer_threads" setsid "$tfb_run" "$port" >"$work/tfb.log" 2>&1 &
        pid_of[tfb]=$!
        wait_ready tfb "http://127.0.0.1:$port/json" ;;
    floor)
        setsid build/bench/h2o_floor "$port" "$peer_threads" >"$work/floor.log" 2>&1 &
        pid_of[floor]=$!
        wait_ready floor "http://127.0.0.1:$port/json" ;;
    esac
    base_of[$1]="http://127.0.0.1:$port"
}
for s in "${servers[@]}"; do # those that serve a workload of this run
    for w in "${workloads[@]}"; do
        if want "$w" && serves "$s" "$w"; then start_server "$s"; break; fi
    done
done

# ---- bearer authentication: a key, its JWK Set, a token, a server ----
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
if want user-auth || want transfer-auth; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/jwt.pem" 2>/dev/null
    modulus=$(openssl rsa -in "$work/jwt.pem" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
    printf '{"keys":[{"kty":"RSA","kid":"bench","use":"sig","alg":"RS256","n":"%s","e":"AQAB"}]}\n' "$modulus" >"$work/jwks.json"
    jwt_head=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
    jwt_claims=$(printf '{"sub":"1","scope":"admin","iat":%d,"exp":%d}' "$(date +%s)" $(($(date +%s) + 86400)) | b64url)
    jwt_sig=$(printf '%s.%s' "$jwt_head" "$jwt_claims" | openssl dgst -sha256 -sign "$work/jwt.pem" -binary | b64url)
    bench_token="$jwt_head.$jwt_claims.$jwt_sig"
    start_server h2pg-auth
    # the token is good, and the server does want one
    code_with=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bench_token" "${base_of[h2pg-auth]}/users/1")
    code_without=$(curl -s -o /dev/null -w '%{http_code}' "${base_of[h2pg-auth]}/users/1")
    if [ "$code_with" != 200 ] || [ "$code_without" != 401 ]; then
        echo "bench: the authenticated h2pg answers $code_with with the token, $code_without without (want 200, 401)" >&2
        exit 1
    fi
fi

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
base_of[nginx]="http://127.0.0.1:$nport"
for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
pid_nginx=$(cat "$work/nginx.pid" 2>/dev/null || true)

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
SELECT events_emit('transfer.created', '{"id":1,"from_account_id":2,"to_account_id":3,"amount_cents":4,"created_at":"2026-12-04T03:40:00.804727Z"}'::jsonb);
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
SELECT events_emit('transfer.created', '{"id":1,"from_account_id":2,"to_account_id":3,"amount_cents":4,"created_at":"2026-12-04T03:40:00.804727Z"}'::jsonb);
COMMIT;
EOF

# ---- wrk scripts for the POST and random-id workloads ----
# GET /users/{id}: ids 1..USERS, all of which exist; the same script for
# every server that serves it.
cat >"$work/user.lua" <<EOF
local thread_id = 0
setup = function(thread) thread_id = thread_id + 1; thread:set("tid", thread_id) end
init = function() math.randomseed(os.time() + tid) end
local token = os.getenv("TOKEN")
local headers = {}
if token then headers["Authorization"] = "Bearer " .. token end
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, $USERS), headers)
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
  if os.getenv("TOKEN") then headers["Authorization"] = "Bearer " .. os.getenv("TOKEN") end
  if os.getenv("IDEMPOTENT") then
    counter = counter + 1
    headers["Idempotency-Key"] = string.format("wrk-%d-%d-%d", os.time(), tid, counter)
  end
  return wrk.format("POST", "/transfers", headers, body)
end
EOF

# ---- measuring ----
hz=$(getconf CLK_TCK)
page_kib=$(($(getconf PAGESIZE) / 1024))
ncpu=$(nproc)
# CPU ticks (utime + stime + cutime + cstime) and RSS (KiB) of the process
# trees under each root pid, one "ticks kib" line per root ("0 0" for none),
# from one pass over /proc.
proc_trees() { # root pid...
    # cat, not awk, opens the files: a process may end between the glob and
    # the read, and mawk stops at a file it cannot open
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v roots="$*" -v pk="$page_kib" '
    {
        p = 0; s = $0
        while ((i = index(substr(s, p + 1), ")")) > 0) p += i # comm may hold ")"
        split(substr(s, p + 2), f, " ")                        # f[1] = field 3, state
        pid = $1 ""; pp[pid] = f[2] ""; t[pid] = f[12] + f[13] + f[14] + f[15]; r[pid] = f[22]
    }
    END {
        n = split(roots, R, " ")
        for (k = 1; k <= n; k++) {
            delete inside; inside[R[k] ""] = 1
            do {
                grown = 0
                for (x in pp) if (!(x in inside) && (pp[x] in inside)) { inside[x] = 1; grown = 1 }
            } while (grown)
            ct = 0; rs = 0
            for (x in inside) if (x in t) { ct += t[x]; rs += r[x] }
            printf "%d %d\n", ct, rs * pk
        }
    }'
}
tree_pids() { # root pid -> it and its descendants, comma-separated
    local all=("$1") i=0 c
    while [ "$i" -lt "${#all[@]}" ]; do
        for c in $(cat /proc/"${all[$i]}"/task/*/children 2>/dev/null); do all+=("$c"); done
        i=$((i + 1))
    done
    (IFS=,; echo "${all[*]}")
}
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
snap() { # server-root ("none": no server) -> "server-ticks pg-ticks busy-ticks"
    local a b
    { read -r a _; read -r b _; } < <(proc_trees "${1:-none}" "${pg_root:-none}")
    echo "$a $b $(busy_ticks)"
}
us_per() { # ticks count -> microseconds per unit, or "-" (two decimals: at 4 µs a tenth is 2.5%)
    awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { if (t == "" || n + 0 <= 0) print "-"; else printf "%.2f", t * 1e6 / hz / n }'
}
sample_rss() { # root pid: peak RSS of its tree, KiB, into $work/rss
    local peak=0 v
    while kill -0 "$1" 2>/dev/null; do
        read -r _ v < <(proc_trees "$1")
        [ "${v:-0}" -gt "$peak" ] && peak=$v && echo "$peak" >"$work/rss"
        sleep 0.2
    done
}
# Fills the row's fields from the CPU before (s0) and after (s1), the
# client's ticks and the count of requests or transactions.
cpu_fields() { # "s0" "s1" client-ticks count server-measured(1/0)
    local -a x y
    local srv=0
    read -r -a x <<<"$1"; read -r -a y <<<"$2"
    if [ "$5" = 1 ]; then srv=$((y[0] - x[0])); srv_us=$(us_per "$srv" "$4"); else srv_us="-"; fi
    if [ -n "$pg_root" ]; then pg_us=$(us_per $((y[1] - x[1])) "$4"); else pg_us="-"; fi
    cli_us=$(us_per "$3" "$4")
    # everything else busy on the machine meanwhile, as a share of all its CPU
    other=$(awk -v b=$((y[2] - x[2])) -v m=$(($3 + srv + y[1] - x[1])) -v w="$window" -v hz="$hz" -v c="$ncpu" \
        'BEGIN { v = (b - m) / (w * hz * c) * 100; if (v < 0) v = 0; printf "%.0f%%", v }')
}
# wrk against one server (or nginx): sets req p50 p99 non2xx srv_us pg_us
# cli_us other rss_mib
run_wrk() { # server path [lua]
    local url="${base_of[$1]}$2" root out s0 s1 t0 t1 args=(-t2 -c"$conns" -d"${secs}s" --latency)
    if [ "$1" = nginx ]; then root="$pid_nginx"; else root="${pid_of[$1]}"; fi
    [ -n "${3:-}" ] && args+=(-s "$3")
    wrk "${args[@]}" -d2s "$url" >/dev/null 2>&1 || true # warm up
    echo 0 >"$work/rss"
    sample_rss "$root" &
    local sampler=$!
    local tracer=""
    if [ -n "${SYSCALLS:-}" ] && [ "$1" != nginx ]; then
        perf stat -x, -e 'syscalls:sys_enter_*' -p "$(tree_pids "$root")" -o "$work/syscalls" &
        tracer=$!
    elif [ -n "${PERF_DIR:-}" ] && [ "$1" != nginx ]; then
        mkdir -p "$PERF_DIR"
        perf record -q -F 1999 -g -p "$(tree_pids "$root")" \
            -o "$PERF_DIR/${label_of[$1]:-$1}$(tr -c 'a-z0-9\n' _ <<<"$2").data" 2>/dev/null &
        tracer=$!
    fi
    s0=$(snap "$root"); t0=$(date +%s.%N)
    # the subshell's cutime + cstime, once wrk is reaped, are wrk's CPU
    out="$(wrk "${args[@]}" "$url" 2>&1; me=$BASHPID; echo "client-ticks $(awk '{ sub(/.*\) /, ""); print $14 + $15 }' "/proc/$me/stat")")"
    s1=$(snap "$root"); t1=$(date +%s.%N)
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    if [ -n "$tracer" ]; then
        kill -INT "$tracer" 2>/dev/null; wait "$tracer" 2>/dev/null || true
    fi
    window=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
    req=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    non2xx=${non2xx:-0}
    local n cli errs
    n=$(awk '/ requests in / {print $1}' <<<"$out")
    cli=$(awk '$1 == "client-ticks" {print $2}' <<<"$out")
    errs=$(awk '/Socket errors/ {print}' <<<"$out")
    [ -n "$errs" ] && echo "  (${label_of[$1]:-$1} $2: $errs)" >&2
    [ -n "$req" ] || { echo "  (${label_of[$1]:-$1} $2: wrk failed: $out)" >&2; req=0 p50=- p99=-; }
    cpu_fields "$s0" "$s1" "${cli:-0}" "${n:-0}" 1
    rss_mib=$(awk '{printf "%.1f", $1 / 1024}' "$work/rss")
    if [ -n "$tracer" ] && [ -n "${SYSCALLS:-}" ]; then # the server's system calls per request, the most frequent first
        echo "  (${label_of[$1]:-$1} $2 system calls per request: $(awk -F, -v n="${n:-0}" '
            $3 ~ /sys_enter_/ && $1 + 0 > 0 && n > 0 { sub(/.*sys_enter_/, "", $3); printf "%s %.2f\n", $3, $1 / n }' "$work/syscalls" |
            sort -k2,2 -rn | awk '$2 >= 0.01 {printf "%s%s %s", sep, $1, $2; sep = ", "}'))" >&2
    fi
}
# pgbench with the same SQL: sets req (tps) pg_us cli_us other, srv_us "-"
run_pgbench() { # script
    local out s0 s1 t0 t1
    s0=$(snap none); t0=$(date +%s.%N)
    out="$({ pgbench -n -M prepared -c64 -j2 -T "$secs" -f "$1" "$db" 2>"$work/pgbench.err" || true; }
        me=$BASHPID; echo "client-ticks $(awk '{ sub(/.*\) /, ""); print $14 + $15 }' "/proc/$me/stat")")"
    sleep 0.2 # its backends end (the postmaster reaps them into its cutime)
    s1=$(snap none); t1=$(date +%s.%N)
    window=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
    if grep -q aborted "$work/pgbench.err"; then
        echo "bench: pgbench $(basename "$1") had aborted clients:" >&2
        grep -m3 error "$work/pgbench.err" >&2
    fi
    req=$(awk '/^tps/ {printf "%d", $3}' <<<"$out")
    local n
    n=$(awk '/number of transactions actually processed/ {split($NF, a, "/"); print a[1]}' <<<"$out")
    cpu_fields "$s0" "$s1" "$(awk '$1 == "client-ticks" {print $2}' <<<"$out")" "${n:-0}" 0
    p50=- p99=- non2xx=- rss_mib=-
}

fmt='| %-33s | %-19s | %9s | %10s | %8s | %8s | %7s | %13s | %9s | %13s | %7s | %7s |\n'
# shellcheck disable=SC2059 # one format for every row of the tables
header() {
    printf "$fmt" workload server "req/s" "of ceiling" p50 p99 non-2xx "server µs/req" "PG µs/req" "client µs/req" "RSS MiB" "others"
    printf "$fmt" :- :- -: -: -: -: -: -: -: -: -: -: | tr ' ' - | sed 's/|-/| /g; s/-|/ |/g'
}
# shellcheck disable=SC2059
row() { # workload server [ceiling]
    local of="-"
    [ "${3:-0}" -gt 0 ] 2>/dev/null && of=$(awk -v a="$req" -v b="$3" 'BEGIN {printf "%.2f", a / b}')
    printf "$fmt" "$1" "$2" "$req" "$of" "$p50" "$p99" "$non2xx" "$srv_us" "$pg_us" "$cli_us" "$rss_mib" "$other"
    echo "$1|$2|$req|$srv_us|$pg_us" >>"$work/results"
}
workload() { # name label path [lua]: the servers that serve it, after the ceiling
    local s round order
    for ((round = 1; round <= rounds; round++)); do
        # ROUNDS > 1: the servers take turns, in reverse order every other
        # round, so that a machine growing busier or quieter hurts all alike
        order=("${servers[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((s = ${#servers[@]} - 1; s >= 0; s--)); do order+=("${servers[$s]}"); done
        fi
        for s in "${order[@]}"; do
            serves "$s" "$1" || continue
            # each server's updates start from a vacuumed table, not from the
            # dead rows the one before left
            [ "$1" = updates ] && psql -q "$db" -c "VACUUM world"
            run_wrk "$s" "$3" "${4:-}"; row "$2" "${label_of[$s]}" "$ceiling"
        done
    done
    echo
}
: >"$work/results"
echo "bench: servers ${servers[*]}; wrk -t2 -c$conns ${secs}s per measurement after a 2 s warm-up; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

if want json; then
    header; run_wrk nginx /json; row /json "nginx (static)"; ceiling=$req
    workload json /json /json
fi
if want plaintext; then header; ceiling=0; workload plaintext /plaintext /plaintext; fi
if want db; then
    header; run_pgbench "$work/db.sql"; row /db pgbench; ceiling=$req
    workload db /db /db
fi
if want queries; then
    header
    run_pgbench "$work/queries.sql"; row "/queries?queries=20" "pgbench"
    run_pgbench "$work/queries-pipelined.sql"; row "/queries?queries=20" "pgbench (pipelined)"; ceiling=$req
    workload queries "/queries?queries=20" "/queries?queries=20"
fi
if want updates; then
    header; psql -q "$db" -c "VACUUM world"; run_pgbench "$work/updates.sql"; row "/updates?queries=20" pgbench; ceiling=$req
    workload updates "/updates?queries=20" "/updates?queries=20"
fi
if want fortunes; then
    header; run_pgbench "$work/fortunes.sql"; row /fortunes pgbench; ceiling=$req
    workload fortunes /fortunes /fortunes
fi
if want user; then
    header; run_pgbench "$work/user.sql"; row "GET /users/{id}" pgbench; ceiling=$req
    workload user "GET /users/{id}" /users/1 "$work/user.lua"
fi
if want transfer; then
    header; run_pgbench "$work/transfer.sql"; row "POST /transfers" pgbench; ceiling=$req
    workload transfer "POST /transfers" /transfers "$work/transfer.lua"
fi
if want transfer-key; then
    header; run_pgbench "$work/transfer-key.sql"; row "POST /transfers + Idempotency-Key" pgbench; ceiling=$req
    IDEMPOTENT=1 workload transfer-key "POST /transfers + Idempotency-Key" /transfers "$work/transfer.lua"
fi
# The same requests without and with an RS256 token, in the order
# without, with, with, without, so that a machine getting busier or
# quieter meanwhile weighs on both alike; the ratios are of the sums.
auth_pair() { # label path lua
    local round r=(0 0) us=(0 0) i
    header
    for round in h2pg h2pg-auth h2pg-auth h2pg; do
        if [ "$round" = h2pg ]; then i=0; else i=1; fi
        if [ "$i" = 1 ]; then TOKEN="$bench_token" run_wrk "$round" "$2" "$3"; else run_wrk "$round" "$2" "$3"; fi
        row "$1" "${label_of[$round]}"
        r[i]=$((r[i] + req))
        us[i]=$(awk -v a="${us[i]}" -v b="$srv_us" 'BEGIN { print (b == "-") ? a : a + b }')
    done
    awk -v r0="${r[0]}" -v r1="${r[1]}" -v u0="${us[0]}" -v u1="${us[1]}" -v w="$1" 'BEGIN {
        printf "%s with the token / without (both rounds): req/s %.2f, server µs/req %.2f\n",
            w, (r0 > 0) ? r1 / r0 : 0, (u0 > 0) ? u1 / u0 : 0 }'
    echo
}
if want user-auth; then auth_pair "GET /users/{id}" /users/1 "$work/user.lua"; fi
if want transfer-auth; then auth_pair "POST /transfers" /transfers "$work/transfer.lua"; fi

# ---- h2pg against each peer, ratios h2pg / peer ----
ran=()
for s in "${servers[@]:1}"; do [ -n "${pid_of[$s]:-}" ] && ran+=("$s"); done
if [ ${#ran[@]} -gt 0 ]; then
    echo "h2pg / peer (a ratio above 1 is h2pg faster in req/s; below 1, h2pg cheaper in µs/req$([ "$rounds" -gt 1 ] && echo "; medians of $rounds rounds")):"
    echo
    echo "| workload | peer | req/s h2pg / peer | ratio | server µs/req h2pg / peer | ratio | PG µs/req h2pg / peer | ratio |"
    echo "|:-|:-|-:|-:|-:|-:|-:|-:|"
    awk -F'|' '
    # no ratio of next to nothing (PostgreSQL on /json: a stray tick)
    function ratio(a, b) { return (a == "-" || b == "-" || a + 0 < 0.5 || b + 0 < 0.5) ? "-" : sprintf("%.2f", a / b) }
    # the median of the rounds of a server (the one round when ROUNDS=1)
    function median(key, col,    n, i, j, t, v) {
        n = split(vals[key, col], v, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n == 0 ? "-" : (n % 2 ? v[(n + 1) / 2] : (v[n / 2] == "-" ? "-" : sprintf("%.2f", (v[n / 2] + v[n / 2 + 1]) / 2)))
    }
    $2 == "h2pg" || $2 == "node" || $2 == "tfb-h2o" || $2 == "h2o-floor" {
        k = $1 SUBSEP $2
        if (!(k in seen)) { seen[k] = 1; order[++n] = k }
        for (c = 3; c <= 5; c++) vals[k, c] = vals[k, c] " " $c
    }
    END {
        for (i = 1; i <= n; i++) {
            split(order[i], kw, SUBSEP)
            h = kw[1] SUBSEP "h2pg"
            if (kw[2] == "h2pg" || !(h in seen)) continue
            r1 = median(h, 3); r2 = median(order[i], 3); s1 = median(h, 4); s2 = median(order[i], 4)
            p1 = median(h, 5); p2 = median(order[i], 5)
            printf "| %s | %s | %s / %s | %s | %s / %s | %s | %s / %s | %s |\n", kw[1], kw[2], r1, r2, ratio(r1, r2),
                s1, s2, ratio(s1, s2), p1, p2, ratio(p1, p2)
        }
    }' "$work/results"
    echo
fi
echo "$(date -u +%Y-%m-%d) $(nproc) cores, $(uname -m); wrk -t2 -c$conns ${secs}s; pgbench -M prepared -c64 -j2; h2pg THREADS=${THREADS:-$(nproc)} POOL_MAX=${POOL_MAX:-32}$([ ${#ran[@]} -gt 0 ] && echo "; peers ${ran[*]} with $peer_threads workers/threads"); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "CPU per request completed (µs): the server's processes and threads, PostgreSQL's whole cluster, the client (wrk or pgbench); others: the rest of the machine's busy CPU during the run, as a share of all of it"
