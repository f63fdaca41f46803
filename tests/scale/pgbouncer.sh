#!/usr/bin/env bash
# tests/scale/pgbouncer.sh PATH/TO/h2pg PATH/TO/scale_transfers
#
# The service behind Debian's PgBouncer (1.18) in transaction pooling mode,
# where consecutive transactions of one client connection may run on
# different server sessions and named prepared statements are not tracked:
#   1. DATABASE_POOLER=transaction, DATABASE_URL at PgBouncer, migrations at
#      start through PgBouncer too, on a fresh database; the backstop
#      timeouts set on the role (no startup options get through);
#   2. every endpoint through it: health, readiness, metrics, the benchmark
#      endpoints, users / orders / accounts / transfers created, read, paged,
#      patched, deleted, their errors (409, 422, 404), an idempotent transfer
#      replayed, the NDJSON export over several cursor batches, deadlines
#      that cancel statements through PgBouncer, and a concurrent mixed load
#      with PgBouncer multiplexing many client connections onto a few
#      server connections;
#   3. the transfer invariant through it, plain and with Idempotency-Keys;
#   4. what goes wrong without DATABASE_POOLER=transaction: PgBouncer refuses
#      the startup options the service sends (not ready, 503); with those
#      options ignored (ignore_startup_parameters = options), named prepared
#      statements collide between server sessions and the same load fails.
#
# Needs DATABASE_URL (scripts/with-postgres.sh) as a user that may create
# roles and databases: a role and a database h2pg_pgb_* are created on that
# server and dropped afterwards. Installs pgbouncer, curl and the PostgreSQL
# client when missing.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PATH/TO/h2pg PATH/TO/scale_transfers" >&2
    exit 2
fi
h2pg="$(realpath "$1")"
transfers="$(realpath "$2")"
answers="$(dirname "$transfers")/scale_answers"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=tests/scale/lib.sh
. "$repo/tests/scale/lib.sh"

need_tools pgbouncer:pgbouncer curl:curl psql:postgresql-client-15
scale_init scale-pgbouncer
[[ -n "${DATABASE_URL:-}" ]] || die "DATABASE_URL is not set (run under scripts/with-postgres.sh)"
log "$(pgbouncer --version | head -n 1)"

# ---- the role, the database, PgBouncer ----

# A role of our own: the backstops go on it (PgBouncer passes no startup
# options), and its password lets PgBouncer log in whatever the server's
# pg_hba asks for.
role="h2pg_pgb_$$_${RANDOM}"
password="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
psql_q -d "$DATABASE_URL" -c "CREATE ROLE \"$role\" LOGIN PASSWORD '$password'" >/dev/null
on_exit "psql -X -q -d \"\$DATABASE_URL\" -c 'DROP ROLE IF EXISTS \"$role\"'"
psql_q -d "$DATABASE_URL" \
    -c "ALTER ROLE \"$role\" SET statement_timeout = '30s'" \
    -c "ALTER ROLE \"$role\" SET idle_in_transaction_session_timeout = '60s'" >/dev/null
db="$role"
psql_q -d "$DATABASE_URL" -c "CREATE DATABASE \"$db\" OWNER \"$role\"" >/dev/null
on_exit "psql -X -q -d \"\$DATABASE_URL\" -c 'DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)'"
direct="$(with_dbname "$DATABASE_URL" "$db")" # for checks, not through PgBouncer

# where PgBouncer finds the server: its TCP address, or its socket directory
IFS="|" read -r be_host be_port <<<"$(sql "$DATABASE_URL" "SELECT coalesce(host(inet_server_addr()), split_part(current_setting('unix_socket_directories'), ',', 1)), current_setting('port')")"
backend="host=$be_host port=$be_port dbname=$db user=$role password=$password"

# who may log in to PgBouncer NAME: the role, and the admin (trust)
users_file() {
    mkdir -p "$tmp/$1"
    printf '"%s" ""\n"%s" ""\n' "$role" "$pguser" >"$tmp/$1/users.txt"
}
users_file pgb
start_pgbouncer pgb "$backend" "default_pool_size = 4" "max_client_conn = 500"
via_pgb="host=127.0.0.1 port=$pgb_port dbname=app user=$role"
admin() { psql -X -q -A -t -F ' ' -h 127.0.0.1 -p "$pgb_port" -U "$pguser" -d pgbouncer -c "$1"; }
[[ "$(admin "SHOW CONFIG" | awk '$1 == "pool_mode" {print $2}')" == transaction ]] || die "PgBouncer is not in transaction mode"
[[ "$(sql "$via_pgb" "SHOW statement_timeout")" == 30s ]] || die "statement_timeout through PgBouncer is not the role's 30s"
log "PgBouncer on 127.0.0.1:$pgb_port, transaction pooling, 4 server connections -> $be_host:$be_port/$db as $role"

# ---- 1. the service through PgBouncer, migrating at start ----

start_h2pg app DATABASE_URL="$via_pgb" DATABASE_POOLER=transaction MIGRATE_ON_START=true POOL_MIN=2 POOL_MAX=16
app_pid=$spawned
base="http://127.0.0.1:$port"
wait_until 10 answers "$port" /readyz || die "not ready through PgBouncer"
# (by this process, or by an attempt before it that lost its port)
nmig="$(find "$repo/migrations" -maxdepth 1 -name '[0-9]*.sql' | wc -l)"
grep -qs "\"migrations: $nmig applied, 0 already applied\"" "$tmp/app.log" "$tmp"/app.attempt*.log ||
    die "the migrations did not run at start through PgBouncer: $(grep migrat "$tmp/app.log" | head -n 5)"
[[ "$(sql "$direct" "SELECT count(*) FROM schema_migrations")" == "$nmig" ]] ||
    die "schema_migrations does not hold $nmig rows"
ok "DATABASE_POOLER=transaction: migrations applied at start through PgBouncer, /readyz 200"

# ---- 2. every endpoint ----

json=(-H 'Content-Type: application/json')

req GET "$base/healthz"; expect 200 "GET /healthz"
req GET "$base/readyz"; expect 200 "GET /readyz"
req GET "$base/metrics"; expect 200 "GET /metrics"
[[ "$body" == *h2pg_* ]] || die "GET /metrics: no h2pg_ metrics"
req GET "$base/json"; expect 200 "GET /json"
req GET "$base/plaintext"; expect 200 "GET /plaintext"
req GET "$base/db"; expect 200 "GET /db"
[[ "$body" =~ ^\{\"id\":[0-9]+,\"randomNumber\":[0-9]+\}$ ]] || die "GET /db: $body"
req GET "$base/queries?queries=20"; expect 200 "GET /queries?queries=20"
[[ "$(grep -o '"id"' <<<"$body" | wc -l)" -eq 20 ]] || die "GET /queries?queries=20: $body"
req GET "$base/updates?queries=20"; expect 200 "GET /updates?queries=20"
[[ "$(grep -o '"id"' <<<"$body" | wc -l)" -eq 20 ]] || die "GET /updates?queries=20: $body"
# what was answered is what is stored (no other writer runs now)
while read -r id number; do
    [[ "$(sql "$direct" "SELECT randomnumber FROM world WHERE id = $id")" == "$number" ]] ||
        die "GET /updates answered world $id = $number, the table holds $(sql "$direct" "SELECT randomnumber FROM world WHERE id = $id")"
done < <(grep -o '"id":[0-9]*,"randomNumber":[0-9]*' <<<"$body" | tr -c '0-9\n' ' ' | awk '{print $1, $2}')
req GET "$base/fortunes"; expect 200 "GET /fortunes"
[[ "$body" == *"Additional fortune added at request time."* && "$(grep -o '<tr>' <<<"$body" | wc -l)" -eq 14 ]] ||
    die "GET /fortunes: ${body:0:300}"
ok "health, readiness, metrics, /json, /plaintext, /db, /queries, /updates (written through), /fortunes"

tag="$$-$RANDOM"
users=()
for i in 1 2 3; do
    req POST "$base/users" "${json[@]}" --data-binary "{\"name\":\"PgBouncer $i\",\"email\":\"pgb$i-$tag@example.com\"}"
    expect 201 "POST /users"
    id="$(json_int id)"
    [[ "$(header Location)" == "/users/$id" ]] || die "POST /users: Location '$(header Location)' for id $id"
    users+=("$id")
done
req POST "$base/users" "${json[@]}" --data-binary "{\"name\":\"again\",\"email\":\"pgb1-$tag@example.com\"}"
expect 409 "POST /users with a duplicate email"
req GET "$base/users?limit=2"; expect 200 "GET /users?limit=2"
next="$(json_int next_after)"
[[ "$next" == "${users[1]}" && "$(grep -o '"email"' <<<"$body" | wc -l)" -eq 2 ]] || die "GET /users?limit=2: $body"
req GET "$base/users?limit=2&after=$next"; expect 200 "GET /users?limit=2&after=$next"
[[ "$body" == *"\"id\":${users[2]},"* && "$body" == *'"next_after":null'* ]] || die "GET /users?after=$next: $body"
req PATCH "$base/users/${users[0]}" "${json[@]}" --data-binary '{"name":"Renamed"}'
expect 200 "PATCH /users/${users[0]}"
[[ "$body" == *'"name":"Renamed"'* ]] || die "PATCH /users: $body"
ok "users: created (201 + Location), duplicate 409, paged (limit, after, next_after), patched"

req POST "$base/users/${users[0]}/orders" "${json[@]}" --data-binary '{"item":"widget","quantity":3,"price_cents":250}'
expect 201 "POST /users/{id}/orders"
order="$(json_int id)"
[[ "$(header Location)" == "/orders/$order" && "$(json_int total_cents)" == 750 ]] || die "POST orders: $body"
req GET "$base/orders/$order"; expect 200 "GET /orders/$order"
req GET "$base/users/${users[0]}/orders"; expect 200 "GET /users/{id}/orders"
[[ "$body" == *"\"id\":$order,"* ]] || die "GET /users/{id}/orders: $body"
req POST "$base/accounts" "${json[@]}" --data-binary "{\"user_id\":${users[0]},\"balance_cents\":1000}"
expect 201 "POST /accounts"
acc_a="$(json_int id)"
req POST "$base/accounts" "${json[@]}" --data-binary "{\"user_id\":${users[1]},\"balance_cents\":0}"
expect 201 "POST /accounts"
acc_b="$(json_int id)"
req GET "$base/accounts/$acc_a"; expect 200 "GET /accounts/$acc_a"
req GET "$base/users/${users[0]}"; expect 200 "GET /users/${users[0]}"
[[ "$body" == *'"user":'* && "$body" == *"\"id\":$order,"* && "$body" == *"\"id\":$acc_a,"* ]] || die "GET /users/{id}: $body"
ok "orders and accounts: created, read; GET /users/{id} with its orders and accounts (three reads at once)"

transfer() { req POST "$base/transfers" "${json[@]}" "$@"; }
transfer --data-binary "{\"from_account_id\":$acc_a,\"to_account_id\":$acc_b,\"amount_cents\":100}"
expect 201 "POST /transfers"
tr="$(json_int id)"
[[ "$(header Location)" == "/transfers/$tr" ]] || die "POST /transfers: Location '$(header Location)'"
req GET "$base/transfers/$tr"; expect 200 "GET /transfers/$tr"
transfer --data-binary "{\"from_account_id\":$acc_a,\"to_account_id\":$acc_b,\"amount_cents\":100000}"
expect 422 "POST /transfers beyond the balance"
transfer --data-binary "{\"from_account_id\":$acc_a,\"to_account_id\":999999999,\"amount_cents\":1}"
expect 404 "POST /transfers to an unknown account"
key="pgb-replay-$tag"
transfer -H "Idempotency-Key: $key" --data-binary "{\"from_account_id\":$acc_a,\"to_account_id\":$acc_b,\"amount_cents\":50}"
expect 201 "POST /transfers with Idempotency-Key"
first="$body"
transfer -H "Idempotency-Key: $key" --data-binary "{\"from_account_id\":$acc_a,\"to_account_id\":$acc_b,\"amount_cents\":50}"
expect 201 "POST /transfers replayed with the same Idempotency-Key"
[[ "$body" == "$first" ]] || die "the replay answered $body, the first request $first"
transfer -H "Idempotency-Key: $key" --data-binary "{\"from_account_id\":$acc_a,\"to_account_id\":$acc_b,\"amount_cents\":51}"
expect 409 "the same Idempotency-Key with another body"
req GET "$base/accounts/$acc_a"
[[ "$(json_int balance_cents)" == 850 ]] || die "account $acc_a should hold 1000 - 100 - 50 = 850: $body"
ok "transfers: 201 + Location, read, 422, 404; Idempotency-Key replay answers the same body, moves money once; reuse 409"

req DELETE "$base/users/${users[0]}"
expect 409 "DELETE a user who holds money"
req DELETE "$base/users/${users[2]}"
expect 204 "DELETE /users/${users[2]}"
req GET "$base/users/${users[2]}"
expect 404 "GET a deleted user"
ok "DELETE: 409 while the user holds money, 204, then 404"

# more orders than one cursor batch (1000), so the export's FETCHes run in
# one transaction on one server session through PgBouncer
sql "$direct" "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents)
               SELECT ${users[1]}, 'bulk ' || i, 1, 1, 1 FROM generate_series(1, 2500) i" >/dev/null
total="$(sql "$direct" "SELECT count(*) FROM orders")"
lines="$(curl -s --max-time 60 -o - -w '' "$base/export/orders" | grep -c '^{"id":' || true)"
[[ "$lines" -eq "$total" ]] || die "GET /export/orders: $lines lines, the table holds $total orders"
ok "GET /export/orders: $lines NDJSON lines over three cursor batches, one transaction"

# deadlines: statements cancelled through PgBouncer (it forwards the cancel),
# the connections come back clean
timeouts=0
for _ in $(seq 1 5); do
    req GET "$base/updates?queries=500" -H 'Request-Timeout: 1'
    [[ "$code" == 504 ]] && timeouts=$((timeouts + 1))
    [[ "$code" == 504 || "$code" == 200 ]] || die "GET /updates with Request-Timeout: 1 answered $code: $body"
done
((timeouts > 0)) || die "no request with Request-Timeout: 1 ran into its deadline"
for _ in $(seq 1 20); do
    req GET "$base/queries?queries=5"
    expect 200 "GET /queries after the deadlines"
done
ok "Request-Timeout: 1 gave $timeouts of 5 504s; 20 requests after them all 200"

# load: many requests at once over many client connections, which PgBouncer
# runs on its 4 server connections
: >"$tmp/mix.urls"
for i in $(seq 1 100); do
    for p in "/db?i=$i" "/queries?queries=5&i=$i" "/updates?queries=5&i=$i" "/fortunes?i=$i"; do
        printf 'url = "%s%s"\noutput = "/dev/null"\n' "$base" "$p" >>"$tmp/mix.urls"
    done
done
# mix BASE: the 400 requests of mix.urls against BASE, 32 at a time; sets
# $mix_ok (200s) and $mix_bad (the rest, "status count" pairs)
mix() {
    sed "s|$base|$1|" "$tmp/mix.urls" >"$tmp/mix.run"
    curl -s --no-progress-meter -Z --parallel-max 32 --max-time 60 -w '%{http_code}\n' -K "$tmp/mix.run" \
        >"$tmp/mix.codes" 2>/dev/null || true
    mix_ok="$(grep -c '^200$' "$tmp/mix.codes" || true)"
    mix_bad="$({ grep -v '^200$' "$tmp/mix.codes" || true; } | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep = ", "}')"
}
mix "$base"
[[ "$mix_ok" -eq 400 ]] || die "400 mixed requests, 32 at a time: $mix_ok answered 200 (others: $mix_bad)"
clients="$(admin "SHOW CLIENTS" | awk '$2 == "'"$role"'" && $3 == "app"' | wc -l)"
servers="$(admin "SHOW SERVERS" | awk '$2 == "'"$role"'" && $3 == "app"' | wc -l)"
((clients > servers && servers <= 4)) || die "expected more client than server connections at PgBouncer: $clients clients, $servers servers"
ok "400 mixed benchmark requests 32 at a time: all 200; PgBouncer ran the service's $clients connections on $servers server connections"

# Every answer is its own request's: many requests' reads share each
# pipelined connection, and PgBouncer hands server sessions from client to
# client between transactions; a result handed to the wrong request would
# show as another user's id (or a 500, where the rows had another shape).
mapfile -t answer_users < <(sql "$direct" "WITH u AS (INSERT INTO users (name, email) SELECT 'answers ' || i, \
    'answers-' || i || '-$tag@example.com' FROM generate_series(1, 40) i RETURNING id), \
    o AS (INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) \
    SELECT id, 'item', 1, 100, 100 FROM u, generate_series(1, 3)), \
    a AS (INSERT INTO accounts (user_id, balance_cents) SELECT id, 0 FROM u) SELECT id FROM u")
((${#answer_users[@]} == 40)) || die "could not create the users for the answers check"
result="$("$answers" -c 64 -d 6 "$base" "${answer_users[@]}" 2>"$tmp/answers-err.log")" ||
    die "answers through PgBouncer: $result $(head -c 2000 "$tmp/answers-err.log")"
ok "answers through PgBouncer: $result"

# ---- 3. the transfer invariant through PgBouncer ----

result="$("$transfers" -c 16 -n 150 -a 5 "$base" "$direct" 2>"$tmp/transfers-err.log")" ||
    die "the transfer invariant through PgBouncer: $(cat "$tmp/transfers-err.log")"
ok "transfer invariant through PgBouncer: $result"
result="$("$transfers" -i -c 8 -n 60 -a 4 "$base" "$direct" 2>"$tmp/transfers-err.log")" ||
    die "the transfer invariant with Idempotency-Keys through PgBouncer: $(cat "$tmp/transfers-err.log")"
ok "transfer invariant with Idempotency-Keys through PgBouncer: $result"

if grep -qi "unsupported startup parameter\|prepared statement" "$tmp/pgb.log"; then
    die "PgBouncer logged trouble: $(grep -i "unsupported startup parameter\|prepared statement" "$tmp/pgb.log" | head -n 3)"
fi
if grep -q '"level":"error"' "$tmp/app.log"; then
    die "the service logged errors: $(grep '"level":"error"' "$tmp/app.log" | head -n 3)"
fi
stop_h2pg_clean app "$app_pid"
ok "no error logged by the service or PgBouncer; the service stops with status 0"

# ---- 4. without DATABASE_POOLER=transaction ----

# The service sets its backstops as startup options, which PgBouncer refuses.
start_h2pg plain DATABASE_URL="$via_pgb" DATABASE_POOLER=none MIGRATE_ON_START=false
plain_pid=$spawned
sleep 0.5
req GET "http://127.0.0.1:$port/readyz"
expect 503 "/readyz with DATABASE_POOLER=none behind PgBouncer"
req GET "http://127.0.0.1:$port/db"
expect 503 "/db with DATABASE_POOLER=none behind PgBouncer"
grep -q "unsupported startup parameter: options" "$tmp/plain.log" ||
    die "expected PgBouncer's 'unsupported startup parameter: options' in the log: $(grep -v '"type":"access"' "$tmp/plain.log" | tail -n 3)"
stop_h2pg_clean plain "$plain_pid"
ok "DATABASE_POOLER=none: PgBouncer refuses the startup options (\"unsupported startup parameter: options\"): /readyz and /db 503"

# The usual workaround, ignore_startup_parameters = options, lets it connect
# (dropping the backstops without a word) and the named prepared statements
# meet other client connections' on shared server sessions: "already
# exists" when preparing (the service then knows its session is shared,
# says so and drops the connection), "does not exist" when executing, and
# results that answer another client's statements (PgBouncer hands a server
# session on after a Prepare's Sync, with our statement behind it): a
# result of another shape is caught (the connection is out of step), and
# whatever happens the service keeps running.
users_file pgb2
start_pgbouncer pgb2 "$backend" "default_pool_size = 4" "max_client_conn = 500" "ignore_startup_parameters = options"
start_h2pg named DATABASE_URL="host=127.0.0.1 port=$pgb_port dbname=app user=$role" DATABASE_POOLER=none \
    MIGRATE_ON_START=false POOL_MIN=2 POOL_MAX=16
named_pid=$spawned
named_base="http://127.0.0.1:$port"
mix "$named_base"
errors="$(grep -c '"level":"error".*database error' "$tmp/named.log" || true)"
shared="$(grep -c '"level":"error".*shares its server session' "$tmp/named.log" || true)"
out_of_step="$(grep -c '"level":"error".*out of step' "$tmp/named.log" || true)"
if ((mix_ok == 400)); then
    log "NOTE: with named prepared statements behind PgBouncer all 400 requests passed this time; nothing to show"
else
    ((errors + shared + out_of_step > 0)) ||
        die "$((400 - mix_ok)) requests failed ($mix_bad) but the service logged no database error"
    # by SQLSTATE; "none" where the service logged none ("database error (no
    # error result: a Prepare failed ...)": libpq gave no result to read it from)
    kinds="$(grep -o 'database error [^ ]*' "$tmp/named.log" | awk '{print (length($3) == 6 && $3 ~ /^[0-9A-Z]+:$/) ? substr($3, 1, 5) : "none"}' |
        sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep = ", "}')"
    ok "DATABASE_POOLER=none with ignore_startup_parameters=options: the same 400 requests: $mix_ok 200, $mix_bad; $errors database errors logged, by SQLSTATE: ${kinds:-none}; $shared shared sessions and $out_of_step out-of-step results detected"
fi
result="$("$answers" -c 64 -d 3 "$named_base" "${answer_users[@]}" 2>/dev/null || true)"
log "the same config under the answers check (not a failure: the configuration is wrong): ${result:-no summary}"
stop_h2pg_clean named "$named_pid"

# and the same PgBouncer with DATABASE_POOLER=transaction: no failure
start_h2pg unnamed DATABASE_URL="host=127.0.0.1 port=$pgb_port dbname=app user=$role" DATABASE_POOLER=transaction \
    MIGRATE_ON_START=false POOL_MIN=2 POOL_MAX=16
unnamed_pid=$spawned
mix "http://127.0.0.1:$port"
[[ "$mix_ok" -eq 400 ]] || die "DATABASE_POOLER=transaction on the same PgBouncer: $mix_ok of 400 answered 200 ($mix_bad)"
ok "the same PgBouncer with DATABASE_POOLER=transaction: 400 of 400 answered 200"
stop_h2pg_clean unnamed "$unnamed_pid"
