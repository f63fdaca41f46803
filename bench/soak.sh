#!/usr/bin/env bash
# Soak: mixed load for a bounded time while the server's memory and open
# file descriptors are sampled every second; both must stay flat after the
# warm-up, and the books must balance at the end.
#
#   bench/soak.sh
#
# Load: nine wrk processes at once (bench/soak.lua, one kind each):
#   reads      GET /users/{id} (-c8), GET /db (-c8), GET /fortunes (-c4)
#   transfers  POST /transfers among seeded accounts (-c6); the same with an
#              Idempotency-Key (-c4), every other one a replay of one of 100
#              keys, which must not move money again
#   errors     404s (unknown user, unknown account, no route), 422s (invalid
#              user, negative amount, insufficient funds), 400s (malformed
#              JSON, a body that is not an object), 409s (a key reused with
#              another body) (-c2 each; -c1 for the 400s, which are the cheapest)
# Every kind must get one status (200, 201, 404, 422, 400, 409): those are
# counted as expected, anything else (and wrk's socket errors) as unexpected.
#
# Samples VmRSS and the number of open fds of the server once a second into
# a CSV (time_s,rss_kib,fds), then prints: the value at the end of the
# warm-up (the first WARMUP_PCT of the run), min/max/last after it, the
# least-squares slope of RSS after it (KiB per minute), the growth between
# the first and the last tenth of the run after warm-up, and the fd ranges.
# At the end: the sum of all balances must be what it was, no balance
# negative, and each replayed key must have moved money exactly once.
#
# Exits 1 when RSS grew by more than RSS_GROWTH_LIMIT_KIB (default 2048)
# between the first and the last tenth after warm-up, when the peak fd
# count of the last tenth exceeds that of the first tenth after warm-up by
# more than FD_SLACK (default 8: wrk reconnects after answers that close the
# connection), when the books do not balance, or on unexpected answers.
#
# Starts everything itself: a private PostgreSQL unless DATABASE_URL is set
# (scripts/with-postgres.sh), a database with seeded users and accounts,
# the server. Needs wrk, curl, psql. Environment: H2PG (the binary; default:
# scripts/build.sh, then build/h2pg), SOAK_SECONDS (default 300), WARMUP_PCT
# (default 20), THREADS (default 2), POOL_MAX (default 16), SOAK_CSV (where
# the samples go; default a file in $TMPDIR or /tmp, named at the end).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [[ -z "${DATABASE_URL:-}" ]]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi

secs="${SOAK_SECONDS:-300}"
warm_pct="${WARMUP_PCT:-20}"
threads="${THREADS:-2}"
pool_max="${POOL_MAX:-16}"
rss_limit="${RSS_GROWTH_LIMIT_KIB:-2048}"
fd_slack="${FD_SLACK:-8}"
csv="${SOAK_CSV:-${TMPDIR:-/tmp}/h2pg-soak-$(date +%Y%m%d-%H%M%S).csv}"
if [[ -n "${H2PG:-}" ]]; then
    h2pg="$(realpath "$H2PG")"
else
    scripts/build.sh >/dev/null
    h2pg="$repo/build/h2pg"
fi
[[ "$secs" -ge 20 ]] || {
    echo "soak: SOAK_SECONDS must be at least 20" >&2
    exit 2
}

# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"
need_tools wrk:wrk curl:curl psql:postgresql-client-15
scale_init soak-bench

# ---- the database: users, rich accounts, replay accounts, a poor one ----

shared_db soak
"$h2pg" migrate --database-url "$db_url" --log-level warn
users=1000
accounts=$((users * 2)) # 1..accounts: random transfers
psql_q -d "$db_url" >/dev/null <<SQL
INSERT INTO users (name, email) SELECT 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, $users) i;
INSERT INTO accounts (user_id, balance_cents) SELECT 1 + (i - 1) % $users, 1000000000 FROM generate_series(1, $accounts) i;
INSERT INTO accounts (user_id, balance_cents) SELECT 1, 1000000 FROM generate_series(1, 200);
INSERT INTO accounts (user_id, balance_cents) VALUES (1, 0);
VACUUM ANALYZE;
SQL
poor=$((accounts + 201))
[[ "$(sql "$db_url" "SELECT max(id) FROM accounts")" -eq $poor ]] || die "accounts did not get the ids 1..$poor"
books() { sql "$db_url" "SELECT sum(balance_cents) || ' ' || count(*) || ' ' || count(*) FILTER (WHERE balance_cents < 0) FROM accounts"; }
read -r sum0 count0 _ <<<"$(books)"

# ---- the server ----

start_h2pg server MIGRATE_ON_START=false THREADS="$threads" POOL_MAX="$pool_max" LOG_LEVEL=warn
server_pid=$spawned
base="http://127.0.0.1:$port"
# the key the key_conflict kind reuses with another body
req POST "$base/transfers" -H 'Content-Type: application/json' -H 'Idempotency-Key: soak-conflict' \
    -d '{"from_account_id":1,"to_account_id":2,"amount_cents":1}'
expect 201 "the first use of the conflict key"
rss_start=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")

# ---- sampling ----

# one line a second: seconds since the load started, VmRSS in KiB, open fds
sample() {
    local t0=$EPOCHREALTIME now rss fds line
    local -a fdl
    echo "time_s,rss_kib,fds"
    while kill -0 "$server_pid" 2>/dev/null; do
        now=$EPOCHREALTIME
        rss=""
        while read -r line; do
            [[ "$line" == VmRSS:* ]] && rss="${line//[^0-9]/}" && break
        done <"/proc/$server_pid/status"
        fdl=("/proc/$server_pid/fd/"*)
        fds=${#fdl[@]}
        printf '%s,%s,%s\n' "$(awk -v a="$t0" -v b="$now" 'BEGIN {printf "%.1f", b - a}')" "$rss" "$fds"
        # the next whole second after the start, however long this took
        sleep "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {d = b - a; printf "%.3f", (int(d) + 1) - d}')"
    done
}

# ---- the load ----

kinds=(user:8 db:8 fortunes:4 transfer:6 transfer_key:4 not_found:2 invalid:2 malformed:1 key_conflict:2)
log "soaking for $secs s: ${kinds[*]} (kind:connections); samples in $csv"
sample >"$csv" &
sampler=$!
track "$sampler"
wrks=()
for k in "${kinds[@]}"; do
    wrk -t1 -c"${k#*:}" -d"${secs}s" --timeout 10s -s "$repo/bench/soak.lua" "$base" -- \
        "${k%%:*}" "$users" "$accounts" "$poor" "$RANDOM$RANDOM" >"$tmp/wrk-${k%%:*}.out" 2>&1 &
    wrks+=($!)
    track "$!"
done
for p in "${wrks[@]}"; do
    wait "$p" || log "a wrk process exited with status $?"
    forget "$p"
done
stop_proc "$sampler"
sleep 3
rss_after=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")
fdl=("/proc/$server_pid/fd/"*)
fds_after=${#fdl[@]}
stop_proc "$server_pid"
server_exit=$exited

# ---- the report ----

status=0
echo
echo "Soak: ${secs} s, THREADS=$threads POOL_MAX=$pool_max, warm-up: the first ${warm_pct}%"
printf '%-13s %-9s %10s %10s %10s %8s  %s\n' kind class requests expected unexpected "req/s" "statuses (and socket errors)"
declare -A class=([user]=read [db]=read [fortunes]=read [transfer]=transfer [transfer_key]=transfer
    [not_found]=error [invalid]=error [malformed]=error [key_conflict]=error)
declare -A total=()
for k in "${kinds[@]}"; do
    k="${k%%:*}"
    out="$tmp/wrk-$k.out"
    line="$(grep '^soak ' "$out" || true)"
    [[ -n "$line" ]] || die "wrk $k printed no counts: $(tail -n 5 "$out")"
    get() { grep -o "\b$1=[^ ]*" <<<"$line" | cut -d= -f2; }
    errs="$(grep -o 'Socket errors:.*' "$out" | sed 's/Socket errors: //' || true)"
    rps="$(awk '/Requests\/sec/ {printf "%d", $2}' "$out")"
    printf '%-13s %-9s %10s %10s %10s %8s  %s\n' "$k" "${class[$k]}" "$(get requests)" "$(get expected)" \
        "$(get unexpected)" "$rps" "$(get statuses)${errs:+ (socket errors: $errs)}"
    c="${class[$k]}"
    total[$c-req]=$((${total[$c-req]:-0} + $(get requests)))
    total[$c-exp]=$((${total[$c-exp]:-0} + $(get expected)))
    total[$c-unexp]=$((${total[$c-unexp]:-0} + $(get unexpected)))
    if [[ "$(get unexpected)" -ne 0 || -n "$errs" ]]; then status=1; fi
done
for c in read transfer error; do
    printf '%-13s %-9s %10s %10s %10s\n' "all" "$c" "${total[$c-req]}" "${total[$c-exp]}" "${total[$c-unexp]}"
done
echo "(expected: the status each kind must get; for the error kinds that is their 4xx, so a non-2xx there is expected)"

echo
# time_s,rss_kib,fds -> the figures after the warm-up
awk -F, -v secs="$secs" -v pct="$warm_pct" -v rss_limit="$rss_limit" -v fd_slack="$fd_slack" -v rss_start="$rss_start" '
NR == 1 { next }
{ t[++n] = $1; r[n] = $2; f[n] = $3 }
END {
    cut = secs * pct / 100
    for (i = 1; i <= n; i++) {
        if (t[i] < cut) { wmin_f = (wmin_f == "" || f[i] < wmin_f) ? f[i] : wmin_f; wmax_f = (f[i] > wmax_f) ? f[i] : wmax_f; continue }
        if (first == "") first = i
        last = i
    }
    if (first == "") { print "too few samples"; exit 1 }
    m = last - first + 1
    tenth = int(m / 10); if (tenth < 1) tenth = 1
    rmin = rmax = r[first]; fmin = fmax = f[first]
    for (i = first; i <= last; i++) {
        if (r[i] < rmin) rmin = r[i]; if (r[i] > rmax) rmax = r[i]
        if (f[i] < fmin) fmin = f[i]; if (f[i] > fmax) fmax = f[i]
        sx += t[i]; sy += r[i]; sxx += t[i] * t[i]; sxy += t[i] * r[i]
    }
    slope = (m * sxy - sx * sy) / (m * sxx - sx * sx) * 60
    for (i = first; i < first + tenth; i++) { head += r[i]; if (f[i] > head_f) head_f = f[i] }
    for (i = last - tenth + 1; i <= last; i++) { tail += r[i]; if (f[i] > tail_f) tail_f = f[i] }
    growth = (tail - head) / tenth
    printf "samples: %d (%d after warm-up, from %.0f s)\n", n, m, t[first]
    printf "RSS KiB: start of load %s; end of warm-up %d; after warm-up min %d max %d last %d\n", rss_start, r[first], rmin, rmax, r[last]
    printf "RSS after warm-up: slope %+.1f KiB/min; growth first->last tenth %+.0f KiB (limit %d)\n", slope, growth, rss_limit
    printf "fds: warm-up %d..%d; after warm-up %d..%d; peak of the first tenth %d, of the last %d (slack %d)\n", wmin_f, wmax_f, fmin, fmax, head_f, tail_f, fd_slack
    bad = 0
    if (growth > rss_limit) { print "RSS GREW after warm-up"; bad = 1 }
    if (tail_f > head_f + fd_slack) { print "FDS GREW after warm-up"; bad = 1 }
    exit bad
}' "$csv" || status=1
echo "after the load (3 s later): RSS $rss_after KiB, fds $fds_after; server exit status on SIGTERM: $server_exit"
[[ "$server_exit" -eq 0 ]] || status=1

echo
read -r sum1 count1 negative <<<"$(books)"
replay_keys=$(sql "$db_url" "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'soak-replay-%'")
replay_moves=$(sql "$db_url" "SELECT count(*) FROM transfers WHERE from_account_id BETWEEN $accounts + 1 AND $accounts + 100")
transfers=$(sql "$db_url" "SELECT count(*) FROM transfers")
poor_balance=$(sql "$db_url" "SELECT balance_cents FROM accounts WHERE id = $poor")
echo "books: sum of balances $sum0 -> $sum1 over $count0 -> $count1 accounts; negative balances: $negative;" \
    "poor account: $poor_balance; transfers recorded: $transfers"
echo "replayed keys: $replay_keys used, $replay_moves transfers made for them (must be equal)"
if [[ "$sum0" != "$sum1" || "$count0" != "$count1" || "$negative" != 0 || "$poor_balance" != 0 || "$replay_keys" != "$replay_moves" ]]; then
    echo "THE BOOKS DO NOT BALANCE"
    status=1
fi
warnings=$(grep -c '"level":"\(warn\|error\)"' "$tmp/server.log" || true)
echo "server log: $warnings warning/error line(s)$( ((warnings == 0)) || echo ": $(grep -m3 '"level":"\(warn\|error\)"' "$tmp/server.log" | cut -c1-300)")"
echo "samples: $csv"
echo
echo "$(date -u +%Y-%m-%d) $(nproc) cores ($(uname -m)); load average $(cut -d' ' -f1-3 /proc/loadavg)"
[[ $status -eq 0 ]] || log "FAILED (see above)"
exit "$status"
