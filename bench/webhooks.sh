#!/usr/bin/env bash
# What webhooks cost the API: POST /transfers under wrk (-t2 -c64, SECS
# seconds each, default 10) four times in one sitting against one copy of
# the service (THREADS, default 2), each from a vacuumed database:
#   none   no webhook;
#   fast   one webhook for transfer.created whose receiver answers at once;
#   none2  no webhook again (the tables grew: the slow run's baseline);
#   slow   one whose receiver takes 2 s per delivery;
# with ROUNDS=N, N pairs of none and fast first (none.2, fast.2, ...) and
# the median of the fast runs' ratios;
# each with req/s, p50/p99 and the CPU per request of the server, of
# PostgreSQL (every backend; the bench's own psql samples included) and of
# the receiver, and for the webhook runs the deliveries made per second
# during the load, the age of the oldest undelivered event while the load runs
# (h2pg_webhook_oldest_pending_seconds, sampled every 0.5 s: 0 means under
# a second) and how long after the load every event had been delivered.
# Then "backlog": the fast webhook disabled while transfers are written,
# enabled again, and the CPU per delivery of the server, PostgreSQL and
# the receiver, and the WAL per delivery, while they deliver that backlog
# with no other load.
# The receivers run on this machine and check every signature. The fast
# run's is bench/receiver.c (OpenSSL, epoll, a few microseconds of CPU per
# delivery), the slow run's tests/webhooks/receiver.mjs with node:crypto
# (its "verify": "native" mode). The Node receiver costs about 90 us of CPU
# per delivery even so (150 with the standardwebhooks library, whose
# SHA-256 is JavaScript), more than the server's sending it, and as one
# thread among the server's, PostgreSQL's and wrk's on two cores it is
# scheduled too little to take more than about 1,800 deliveries a second:
# the fast run would measure the receiver. RECEIVER=node runs the fast run
# with Node too, VERIFY=library with the library (as the tests do). A
# delivery that fails verification fails the bench.
#
#   bench/webhooks.sh
#
# Starts everything itself: a private PostgreSQL unless DATABASE_URL is set
# (scripts/with-postgres.sh), a database, the server in a session of its
# own, the receiver. Needs wrk, psql, node and npm. H2PG names the binary
# (default: scripts/build.sh, then build/h2pg).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [[ -z "${DATABASE_URL:-}" ]]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi

secs="${SECS:-10}"
threads="${THREADS:-2}"
accounts=10000
if [[ -n "${H2PG:-}" ]]; then
    h2pg="$(realpath "$H2PG")"
else
    scripts/build.sh >/dev/null
    h2pg="$repo/build/h2pg"
fi

# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"
need_tools wrk:wrk psql:postgresql-client-15 node:nodejs npm:npm curl:curl
scale_init webhooks-bench

(cd tests/webhooks && { [[ -d node_modules/standardwebhooks ]] || npm ci --no-audit --no-fund --loglevel=error; })
shared_db webhooks
"$h2pg" migrate --database-url "$db_url" --log-level warn
sql "$db_url" "INSERT INTO users (name, email) SELECT 'bench ' || g, 'bench' || g || '@example.com' FROM generate_series(1, 1000) g" >/dev/null
sql "$db_url" "INSERT INTO accounts (user_id, balance_cents) SELECT 1 + g % 1000, 1000000000000 FROM generate_series(1, $accounts) g" >/dev/null

port="$(free_port)"
env DATABASE_URL="$db_url" HOST=127.0.0.1 PORT="$port" THREADS="$threads" POOL_MAX=32 LOG_LEVEL=warn \
    WEBHOOK_ALLOW_PRIVATE=true setsid "$h2pg" serve >"$tmp/server.log" 2>&1 &
server_pid=$!
track "$server_pid"
wait_until 30 answers "$port" /readyz || die "the server did not get ready: $(tail -n 5 "$tmp/server.log")"

node tests/webhooks/receiver.mjs >"$tmp/receiver.out" 2>&1 &
receiver_pid=$!
track "$receiver_pid"
wait_until 30 grep -q '^listening' "$tmp/receiver.out" || die "the receiver did not start"
rport="$(awk '/^listening/ {print $2}' "$tmp/receiver.out")"
node_pid="$receiver_pid"

# bench/receiver.c for the fast run (RECEIVER=node: the Node one)
cport=""
if [[ "${RECEIVER:-c}" != node ]]; then
    cc -O2 -o "$tmp/creceiver" bench/receiver.c -lcrypto || die "bench/receiver.c does not build (libssl-dev?)"
    "$tmp/creceiver" >"$tmp/creceiver.out" 2>&1 &
    creceiver_pid=$!
    track "$creceiver_pid"
    wait_until 30 grep -q '^listening' "$tmp/creceiver.out" || die "bench/receiver.c did not start"
    cport="$(awk '/^listening/ {print $2}' "$tmp/creceiver.out")"
fi

cat >"$tmp/transfer.lua" <<LUA
local thread_id = 0
setup = function(thread) thread_id = thread_id + 1; thread:set("tid", thread_id) end
init = function() math.randomseed(os.time() + tid) end
request = function()
  local a, b = math.random(1, $accounts), math.random(1, $accounts)
  while b == a do b = math.random(1, $accounts) end
  local body = string.format('{"from_account_id":%d,"to_account_id":%d,"amount_cents":%d}', a, b, math.random(1, 100))
  return wrk.format("POST", "/transfers", {["Content-Type"] = "application/json"}, body)
end
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$server_pid}/stat"; }
# PostgreSQL's CPU: the postmaster's own and its reaped children's, plus
# the children alive now (the server's pool connections)
postmaster="$(head -n1 "$(sql "$db_url" "SHOW data_directory")/postmaster.pid")"
pg_ticks() {
    local t
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
    for c in $(cat "/proc/$postmaster/task/$postmaster/children"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
delivered_now() { sql "$db_url" "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"; }
hz=$(getconf CLK_TCK)
oldest_now() {
    curl -s --max-time 2 "http://127.0.0.1:$port/metrics" | awk '/^h2pg_webhook_oldest_pending_seconds / {print $2}'
}

# webhook PATH MODE_JSON: a webhook for transfer.created to the Node
# receiver's PATH, the receiver told its secret and MODE; or, with $cport
# set, to bench/receiver.c, told the secret; sets $hook and $receiver_pid
webhook() {
    local out secret to="${cport:-$rport}"
    out="$(curl -s --max-time 10 -H 'Content-Type: application/json' \
        --data "{\"url\":\"http://127.0.0.1:$to$1\",\"events\":[\"transfer.created\"]}" "http://127.0.0.1:$port/webhooks")"
    hook="$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' <<<"$out")"
    secret="$(sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' <<<"$out")"
    [[ -n "$hook" && -n "$secret" ]] || die "POST /webhooks: $out"
    if [[ -n "$cport" ]]; then
        curl -sf --max-time 10 --data "$secret" "http://127.0.0.1:$cport/_secret" >/dev/null || die "bench/receiver.c refused the secret"
        receiver_pid="$creceiver_pid"
    else
        curl -s --max-time 10 -H 'Content-Type: application/json' --data "{\"secret\":\"$secret\"$2}" \
            "http://127.0.0.1:$rport/_control$1" >/dev/null
        receiver_pid="$node_pid"
    fi
}

declare -A rps p50 p99 cpu pgcpu rcpu dps oldest drained
run() {
    local name="$1" c0 c1 p0 p1 r0 r1 d0 d1 out sampler max=0
    # each run from a vacuumed database: the autovacuum that the last run's
    # rows call for is not counted against this one
    sql "$db_url" "VACUUM (ANALYZE)" >/dev/null
    sql "$db_url" "CHECKPOINT" >/dev/null 2>&1 || true # superuser only
    wrk -t2 -c64 -d2s -s "$tmp/transfer.lua" "http://127.0.0.1:$port/transfers" >/dev/null 2>&1 || true
    : >"$tmp/oldest.$name"
    (trap - EXIT INT TERM; while :; do oldest_now >>"$tmp/oldest.$name"; sleep 0.5; done) &
    sampler=$!
    d0=$(delivered_now)
    c0=$(cpu_ticks)
    p0=$(pg_ticks)
    r0=$(cpu_ticks "$receiver_pid")
    out="$(wrk -t2 -c64 -d"${secs}s" --latency -s "$tmp/transfer.lua" "http://127.0.0.1:$port/transfers" 2>&1)"
    c1=$(cpu_ticks)
    p1=$(pg_ticks)
    r1=$(cpu_ticks "$receiver_pid")
    d1=$(delivered_now)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    grep -q 'Non-2xx' <<<"$out" && log "$name: $(grep 'Non-2xx' <<<"$out")"
    rps[$name]="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")"
    p50[$name]="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99[$name]="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    local n
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    per_req() { awk -v t="$1" -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }
    cpu[$name]="$(per_req $((c1 - c0)))"
    pgcpu[$name]="$(per_req $((p1 - p0)))"
    rcpu[$name]="$(per_req $((r1 - r0)))"
    dps[$name]="$(awk -v d=$((d1 - d0)) -v s="$secs" 'BEGIN { printf "%d", d / s }')"
    max="$(sort -n "$tmp/oldest.$name" | tail -n1)"
    oldest[$name]="${max:--}"
    # the samples in order: a lag that grows through the run, or a burst
    [[ "$name" == none* ]] || log "$name: oldest undelivered (s), every 0.5 s: $(tr '\n' ' ' <"$tmp/oldest.$name")"
}

# waits until every transfer.created after the webhook's creation is
# delivered to it; the seconds that took after the load ended
drain() {
    local t0 want got
    t0=$(date +%s.%N)
    for _ in $(seq 1200); do
        want="$(sql "$db_url" "SELECT count(*) FROM events e, webhooks w WHERE w.id = $1 AND e.id > w.after_event_id AND e.type = 'transfer.created'")"
        got="$(sql "$db_url" "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND state = 'delivered'")"
        [[ "$(sql "$db_url" "SELECT count(*) FROM events_pending")" -eq 0 && "$got" -ge "$want" ]] && break
        sleep 0.5
    done
    awk -v a="$t0" -v b="$(date +%s.%N)" -v g="$got" -v w="$want" 'BEGIN { printf "%.1f s (%d of %d)", b - a, g, w }'
}

# ROUNDS (default 1) pairs of none and fast, in turn: the fast run's ratio
# moves by several points from run to run on a shared machine, and the
# summary gives the median
rounds="${ROUNDS:-1}"
pairs=()
verify=""
[[ "${VERIFY:-native}" == library ]] || verify=', "verify": "native"'
for ((k = 1; k <= rounds; k++)); do
    sfx=""
    ((k == 1)) || sfx=".$k"
    pairs+=("none$sfx" "fast$sfx")
    log "none$sfx: no webhook"
    run "none$sfx"
    log "fast$sfx: a receiver that answers at once"
    webhook /fast "$verify"
    run "fast$sfx"
    drained[fast$sfx]="$(drain "$hook")"
    if [[ -n "$cport" ]]; then
        stats="$(curl -s --max-time 10 "http://127.0.0.1:$cport/_stats")"
        log "fast$sfx: bench/receiver.c $stats"
        grep -q '"failed": 0}' <<<"$stats" || die "deliveries failed verification: $stats"
    fi
    ((k == rounds)) || curl -s -X DELETE --max-time 10 "http://127.0.0.1:$port/webhooks/$hook" >/dev/null
done
# Deliveries alone, without the API's load: the last fast run's webhook
# disabled while wrk writes transfers for BACKLOG_SECS (default 5), then
# enabled, and the CPU of the server, PostgreSQL and the receiver until
# every event is delivered, and the WAL written meanwhile, per delivery
log "backlog: transfers with the webhook disabled, then delivered with nothing else running"
sql "$db_url" "UPDATE webhooks SET disabled = true WHERE id = $hook" >/dev/null
wrk -t2 -c64 -d"${BACKLOG_SECS:-5}s" -s "$tmp/transfer.lua" "http://127.0.0.1:$port/transfers" >/dev/null 2>&1 || true
sql "$db_url" "VACUUM (ANALYZE)" >/dev/null
sql "$db_url" "CHECKPOINT" >/dev/null 2>&1 || true
bd0=$(delivered_now)
bc0=$(cpu_ticks)
bp0=$(pg_ticks)
br0=$(cpu_ticks "$receiver_pid")
bw0=$(sql "$db_url" "SELECT pg_current_wal_lsn()")
bt0=$(date +%s.%N)
sql "$db_url" "UPDATE webhooks SET disabled = false WHERE id = $hook" >/dev/null
backlog_drained="$(drain "$hook")"
bt1=$(date +%s.%N)
bc1=$(cpu_ticks)
bp1=$(pg_ticks)
br1=$(cpu_ticks "$receiver_pid")
bd1=$(delivered_now)
bwal=$(sql "$db_url" "SELECT pg_current_wal_lsn() - '$bw0'::pg_lsn")
backlog_line="$(awk -v n=$((bd1 - bd0)) -v t0="$bt0" -v t1="$bt1" -v c=$((bc1 - bc0)) -v p=$((bp1 - bp0)) \
    -v r=$((br1 - br0)) -v w="$bwal" -v hz="$hz" 'BEGIN { if (n < 1) n = 1;
    printf "%d deliveries in %.1f s (%d a second), per delivery: CPU of the server %.1f µs, of PostgreSQL %.1f µs, of the receiver %.1f µs; WAL %d bytes",
        n, t1 - t0, n / (t1 - t0), c * 1e6 / hz / n, p * 1e6 / hz / n, r * 1e6 / hz / n, w / n }')"
log "backlog: $backlog_drained"
cport=""
curl -s -X DELETE --max-time 10 "http://127.0.0.1:$port/webhooks/$hook" >/dev/null
# the tables grew by the runs before: the slow run is compared with a run
# without a webhook just before it
log "none2: no webhook, again"
run none2
log "slow: a receiver that takes 2 s per delivery"
webhook /slow "$verify, \"sleep_ms\": 2000"
run slow
drained[slow]="not waited for (2 s each)"

echo
echo "| run | req/s | vs the none run before | p50 | p99 | server µs/req | PostgreSQL µs/req | receiver µs/req | deliveries/s | oldest undelivered (s, max) | all delivered after the load |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
declare -A ratio_of
base=""
for r in "${pairs[@]}" none2 slow; do
    [[ "$r" == none* ]] && base="$r"
    ratio_of[$r]="$(awk -v a="${rps[$r]}" -v b="${rps[$base]}" 'BEGIN { printf "%.2f", a / b }')"
    echo "| $r | ${rps[$r]} | ${ratio_of[$r]} | ${p50[$r]} | ${p99[$r]} | ${cpu[$r]} | ${pgcpu[$r]} | ${rcpu[$r]} | ${dps[$r]} | ${oldest[$r]:--} | ${drained[$r]:--} |"
done
if ((rounds > 1)); then
    fr=() fo=()
    for r in "${pairs[@]}"; do
        [[ "$r" == fast* ]] || continue
        fr+=("${ratio_of[$r]}")
        fo+=("${oldest[$r]:--}")
    done
    echo
    echo "fast / none over $rounds rounds: median $(printf '%s\n' "${fr[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : sprintf("%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2) }') (${fr[*]}); oldest undelivered (s, max) ${fo[*]}"
fi
echo
echo "backlog (deliveries alone, the fast run's receiver): ${backlog_line}"
# every outcome is an update of its delivery row: in place (HOT) unless it
# changes an indexed column or finds no room on its page (migration 0015)
read -r upd hot <<<"$(sql "$db_url" "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'webhook_deliveries'")"
echo
echo "webhook_deliveries: ${upd:-?} row updates in all runs, ${hot:-?} of them in place (HOT), as PostgreSQL's statistics had them at the end"
