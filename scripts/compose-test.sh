#!/usr/bin/env bash
# scripts/compose-test.sh
#
# Runs docker/compose.yaml for real and drives it with curl: builds the
# images, `docker-compose up -d`, waits until every service is healthy, then
# through nginx on localhost creates a user and two accounts, makes a
# transfer and reads it back, checks the request ids and that the service's
# access log names the client nginx saw (X-Forwarded-For believed from
# nginx only), and `docker-compose down -v`. Exits non-zero on any failure,
# after printing every service's log.
#
# No Docker engine is needed (nor any container registry): as root on
# Debian bookworm, it installs podman and Debian's docker-compose 1.29 and
# runs `podman system service` as the Docker API. Set up here, idempotently
# (the packages, containers.conf and debian:bookworm-slim by
# scripts/lib/podman.sh, shared with scripts/fresh-test.sh):
#   - /etc/containers/containers.conf: runc, cgroupfs, file events, netavark
#     and ulimits that fit (the defaults and crun fail on some machines);
#   - the base images, made locally, never pulled: debian:bookworm-slim from
#     debootstrap --variant=minbase, and stand-ins for postgres:15 and nginx
#     built from Debian's packages (docker/postgres/, docker/nginx/). They
#     are kept between runs (a stand-in is rebuilt when its files change);
#     an image of those names that is not a stand-in is used as it is;
#   - podman runs health checks from systemd timers, and there is no
#     systemd: a loop here runs them every 2 s, so that depends_on
#     `condition: service_healthy` resolves.
# Everything it starts (containers, network, volume, the API service, the
# health check loop) is stopped and removed at the end; the base images,
# the app image's build cache and the debootstrap tarball stay, in podman's
# storage and in the cache directory, so a second run takes far less time.
#
# Environment:
#   H2PG_COMPOSE_CACHE   cache directory (/var/cache/h2pg-compose)
#   H2PG_DEBIAN_MIRROR   Debian mirror for debootstrap and the images
#                        (http://deb.debian.org/debian)
#   H2PG_PORT            host port nginx is published on (8080; another
#                        free one is taken if 8080 is busy)
#   H2PG_COMPOSE_WAIT    seconds to wait for the stack to be healthy (600)
set -euo pipefail

cd "$(dirname "$0")/.."

project=h2pgtest
cache="${H2PG_COMPOSE_CACHE:-/var/cache/h2pg-compose}"
mirror="${H2PG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
wait_limit="${H2PG_COMPOSE_WAIT:-600}"
sock=/run/podman/podman.sock
# nginx's fixed address in docker/compose.yaml
nginx_ip="${H2PG_SUBNET_PREFIX:-10.231.57}.10"
start_time=$SECONDS

log() { echo "compose-test: [$((SECONDS - start_time))s] $*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

if [[ "$(id -u)" -ne 0 ]]; then
    echo "compose-test: run it as root (it installs packages, runs podman and writes /etc/containers)" >&2
    exit 2
fi

# docker-compose talks to podman's Docker API. Builds go through that API
# too, not through the docker CLI (which may be installed without an engine).
export DOCKER_HOST="unix://$sock"
export COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0
export COMPOSE_HTTP_TIMEOUT=600
compose=(docker-compose -f docker/compose.yaml -p "$project" --ansi never)

# ---- packages, containers.conf (scripts/lib/podman.sh) ----

# shellcheck source=SCRIPTDIR/lib/podman.sh
source scripts/lib/podman.sh
podman_install_packages docker-compose curl ca-certificates python3
podman_containers_conf

# ---- cleanup, from here on ----

tmp="$(mktemp -d "${TMPDIR:-/tmp}/h2pg-compose.XXXXXX")"
service_pid=""
health_pid=""
stack_up=0

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    set +e
    if [[ $stack_up -eq 1 ]]; then
        if [[ $status -ne 0 ]]; then
            log "containers:"
            podman ps -a --filter "label=com.docker.compose.project=$project" >&2
            for s in db app nginx; do
                echo "---- logs of $s" >&2
                "${compose[@]}" logs --no-color --timestamps "$s" >&2 2>&1
            done
        fi
        log "docker-compose down -v"
        timeout 120 "${compose[@]}" down -v --remove-orphans --timeout 20 >&2 2>&1
    fi
    if [[ -n "$health_pid" ]]; then
        kill "$health_pid" 2>/dev/null
        wait "$health_pid" 2>/dev/null
    fi
    if [[ $status -ne 0 && -s "$tmp/podman-service.log" ]]; then
        echo "---- podman system service (last 30 lines)" >&2
        tail -n 30 "$tmp/podman-service.log" >&2
    fi
    if [[ -n "$service_pid" ]]; then
        kill -TERM "$service_pid" 2>/dev/null
        wait "$service_pid" 2>/dev/null
        rm -f "$sock"
    fi
    rm -rf "$tmp"
    if [[ $status -eq 0 ]]; then
        log "passed"
    else
        log "failed (exit status $status)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the Docker API: podman system service ----

api_ok() { curl -sf --max-time 5 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; }

if api_ok; then
    log "using the podman API service already listening on $sock"
else
    mkdir -p "$(dirname "$sock")"
    rm -f "$sock"
    # Niced: the image builds and the containers run under this process, on
    # a machine whose cores are shared.
    nice -n 10 podman system service --time=0 "unix://$sock" >"$tmp/podman-service.log" 2>&1 &
    service_pid=$!
    for _ in $(seq 1 100); do
        api_ok && break
        kill -0 "$service_pid" 2>/dev/null || { cat "$tmp/podman-service.log" >&2; die "podman system service exited"; }
        sleep 0.1
    done
    api_ok || die "podman system service does not answer on $sock"
    log "podman system service on $sock (pid $service_pid)"
fi

# ---- base images, made here ----

# make_standin TAG DIR: builds DIR's Dockerfile as TAG unless TAG is already
# a stand-in built from the same files, or an image that is not ours.
make_standin() {
    local tag="$1" dir="$2" sum have
    sum="$( (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
    if podman image exists "$tag"; then
        have="$(podman image inspect --format '{{index .Labels "h2pg.standin"}}' "$tag" 2>/dev/null || true)"
        if [[ -z "$have" || "$have" == "<no value>" ]]; then
            log "$tag exists and is not a stand-in: using it"
            return 0
        fi
        if [[ "$have" == "$sum" ]]; then
            log "$tag: cached stand-in"
            return 0
        fi
    fi
    log "building the stand-in $tag from $dir"
    nice -n 10 podman build --pull=never --label "h2pg.standin=$sum" -t "$tag" "$dir" >"$tmp/build-standin.log" 2>&1 || {
        tail -n 40 "$tmp/build-standin.log" >&2
        die "building $tag failed"
    }
}

podman_debian_image
make_standin docker.io/library/postgres:15 docker/postgres
make_standin docker.io/library/nginx:latest docker/nginx

# ---- the stack ----

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port="${H2PG_PORT:-8080}"
if port_in_use "$port"; then
    old="$port"
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
    while port_in_use "$port"; do port=$((port >= 60000 ? 20000 : port + 1)); done
    log "port $old is in use here: publishing nginx on $port instead"
fi
export H2PG_PORT="$port"
base="http://127.0.0.1:$port"

# A run that was killed may have left its stack behind.
stack_up=1
"${compose[@]}" down -v --remove-orphans --timeout 5 >"$tmp/down.log" 2>&1 || true

# podman has no systemd to run the health checks: run them here, for every
# running container of the project that has one, and report progress.
health_loop() {
    local last=-10 line id status
    while :; do
        line=""
        while read -r id status; do
            [[ -n "$id" ]] || continue
            case "$status" in
            *"(starting)"* | *"(healthy)"* | *"(unhealthy)"*)
                # stdin from /dev/null: it would eat the rest of the list
                podman healthcheck run "$id" </dev/null >/dev/null 2>&1 || true
                ;;
            esac
        done < <(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.ID}} {{.Status}}' 2>/dev/null)
        if ((SECONDS - last >= 10)); then
            last=$SECONDS
            line="$(podman ps -a --filter "label=com.docker.compose.project=$project" \
                --format '{{.Names}}={{.Status}}' 2>/dev/null | sort | tr '\n' ' ')"
            [[ -z "$line" ]] || log "status: $line"
        fi
        sleep 2
    done
}
health_loop &
health_pid=$!

log "docker-compose build (the first build takes minutes)"
# the whole output to a file, the steps to the terminal
if ! timeout 1800 "${compose[@]}" build 2>&1 | tee "$tmp/build.log" |
    { grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?(STEP|Step) [0-9]+/[0-9]+' || true; } |
    sed -u 's/^\(.\{150\}\).*/\1.../; s/^/compose-test:   /' >&2; then
    tail -n 60 "$tmp/build.log" >&2
    die "docker-compose build failed"
fi
log "built"

# up -d waits for each depends_on condition itself (db healthy before app,
# app healthy before nginx) and fails if a dependency turns unhealthy.
log "docker-compose up -d (waiting up to ${wait_limit}s for the stack)"
timeout "$wait_limit" "${compose[@]}" up -d >"$tmp/up.log" 2>&1 || {
    cat "$tmp/up.log" >&2
    die "docker-compose up -d failed or timed out"
}

service_status() {
    podman ps -a --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Status}}' 2>/dev/null | head -n1
}
deadline=$((SECONDS + wait_limit))
while :; do
    db_s="$(service_status db)"
    app_s="$(service_status app)"
    nginx_s="$(service_status nginx)"
    if [[ "$db_s" == *"(healthy)"* && "$app_s" == *"(healthy)"* && "$nginx_s" == Up* ]] &&
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/readyz" || true)" == 200 ]]; then
        break
    fi
    for s in "$db_s" "$app_s" "$nginx_s"; do
        [[ "$s" != Exited* ]] || die "a container exited: db=[$db_s] app=[$app_s] nginx=[$nginx_s]"
    done
    ((SECONDS < deadline)) || die "the stack was not healthy within ${wait_limit}s: db=[$db_s] app=[$app_s] nginx=[$nginx_s]"
    sleep 2
done
log "the stack is up and healthy: $base"

# ---- the API, through nginx ----

# req METHOD PATH [BODY] [HEADER...]: sets $code, $body and $headers (a file).
req() {
    local method="$1" path="$2" data="${3:-}"
    shift 3 || shift $#
    local args=(-s -X "$method" --max-time 20 -D "$tmp/headers" -o "$tmp/body" -w '%{http_code}')
    if [[ -n "$data" ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$data")
    fi
    local h
    for h in "$@"; do args+=(-H "$h"); done
    code="$(curl "${args[@]}" "$base$path" || true)"
    body="$(cat "$tmp/body" 2>/dev/null || true)"
    headers="$tmp/headers"
}
expect() {
    local want="$1" what="$2"
    [[ "$code" == "$want" ]] || die "$what: expected HTTP $want, got ${code:-no answer}: $body"
    log "$what: $code"
}
# json EXPR: a field of $body (python's syntax after the parsed value, e.g. '["id"]')
json() { python3 -c 'import json,sys; v=json.load(sys.stdin)'"$1"'; print(v)' <<<"$body"; }
header() { sed -n "s/^$1: *//Ip" "$headers" | tr -d '\r' | tail -n1; }

email="compose-$$-$RANDOM@example.com"
req POST /users "{\"name\":\"Compose Test\",\"email\":\"$email\"}"
expect 201 "POST /users"
user_id="$(json '["id"]')"
[[ "$(header Location)" == "/users/$user_id" ]] || die "POST /users: Location is '$(header Location)', not /users/$user_id"

req POST /accounts "{\"user_id\":$user_id,\"balance_cents\":10000}"
expect 201 "POST /accounts (funded)"
from="$(json '["id"]')"
req POST /accounts "{\"user_id\":$user_id,\"balance_cents\":0}"
expect 201 "POST /accounts (empty)"
to="$(json '["id"]')"

rid="compose-test-$$-$RANDOM"
req POST /transfers "{\"from_account_id\":$from,\"to_account_id\":$to,\"amount_cents\":2500}" \
    "X-Request-Id: $rid" "Idempotency-Key: $rid"
expect 201 "POST /transfers"
transfer_id="$(json '["id"]')"
[[ "$(header X-Request-Id)" == "$rid" ]] || die "POST /transfers: X-Request-Id came back as '$(header X-Request-Id)', not $rid"
log "X-Request-Id sent by the client came back: $rid"

req GET "/transfers/$transfer_id"
expect 200 "GET /transfers/$transfer_id"
[[ "$(json '["amount_cents"]')" == 2500 && "$(json '["from_account_id"]')" == "$from" &&
    "$(json '["to_account_id"]')" == "$to" ]] || die "GET /transfers/$transfer_id: $body"

req GET "/accounts/$from"
expect 200 "GET /accounts/$from"
[[ "$(json '["balance_cents"]')" == 7500 ]] || die "the funded account should hold 7500 cents now: $body"
req GET "/accounts/$to"
expect 200 "GET /accounts/$to"
[[ "$(json '["balance_cents"]')" == 2500 ]] || die "the empty account should hold 2500 cents now: $body"
log "balances moved: 10000/0 -> 7500/2500"

# /healthz, not /readyz: what is checked here is nginx's id, and a readiness
# probe may rightly answer 503 for a moment (one worker whose new database
# connection took over its 1 s budget: seen once on podman's bridge)
req GET /healthz
expect 200 "GET /healthz"
generated="$(header X-Request-Id)"
[[ "$generated" =~ ^[0-9a-f]{32}$ ]] || die "without X-Request-Id, expected nginx's \$request_id in the response, got '$generated'"
log "X-Request-Id generated by nginx when absent: $generated"

# ---- the logs: the service saw the client that nginx saw ----

# The service writes its access log in batches: give it a moment.
app_line=""
nginx_line=""
for _ in $(seq 1 20); do
    "${compose[@]}" logs --no-color app >"$tmp/app.log" 2>&1 || true
    "${compose[@]}" logs --no-color nginx >"$tmp/nginx.log" 2>&1 || true
    app_line="$(grep -F "\"request_id\":\"$rid\"" "$tmp/app.log" | grep -F '"type":"access"' | head -n1 || true)"
    nginx_line="$(grep -F "rid=$rid " "$tmp/nginx.log" | head -n1 || true)"
    [[ -z "$app_line" || -z "$nginx_line" ]] || break
    sleep 0.5
done
[[ -n "$app_line" ]] || die "no access-log line of the app for request id $rid"
[[ -n "$nginx_line" ]] || die "no access-log line of nginx for request id $rid"
log "app:   ${app_line#*| }"
log "nginx: ${nginx_line#*| }"

app_client="$(sed -n 's/.*"client":"\([^"]*\)".*/\1/p' <<<"$app_line")"
nginx_client="$(sed -E -n 's/^([^|]*\| *)?([0-9a-fA-F.:]+) - .*/\2/p' <<<"$nginx_line")"
[[ "$app_line" == *'"method":"POST"'* && "$app_line" == *'"path":"/transfers"'* && "$app_line" == *'"status":201'* ]] ||
    die "the app's access-log line is not the transfer's 201: $app_line"
[[ -n "$nginx_client" ]] || die "could not read the client address from nginx's line: $nginx_line"
[[ "$app_client" == "$nginx_client" ]] ||
    die "the app logged client '$app_client', but nginx saw the request come from '$nginx_client'"
[[ "$app_client" != "$nginx_ip" ]] || die "the app logged nginx's own address as the client"
log "the app logged the client nginx saw ($app_client), not nginx ($nginx_ip): X-Forwarded-For believed from nginx"

grep -q '"migrations: [0-9]* applied' "$tmp/app.log" || die "the app's log does not show the migrations run at start"
log "the app ran the migrations at start: $(grep -o 'migrations: [0-9]* applied, [0-9]* already applied' "$tmp/app.log" | head -n1)"

# ---- a graceful stop ----

# SIGTERM (STOPSIGNAL): the service finishes what is in flight and exits 0,
# well within stop_grace_period.
t0=$SECONDS
timeout 60 "${compose[@]}" stop -t 20 app >"$tmp/stop.log" 2>&1 || {
    cat "$tmp/stop.log" >&2
    die "docker-compose stop app failed"
}
app_id="$(podman ps -a -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=app")"
[[ -n "$app_id" ]] || die "the app container is gone after docker-compose stop"
exit_code="$(podman inspect --format '{{.State.ExitCode}}' "$app_id")"
[[ "$exit_code" == 0 ]] || die "the app exited with status $exit_code on SIGTERM (0 expected)"
((SECONDS - t0 < 15)) || die "the app took $((SECONDS - t0))s to stop on SIGTERM"
log "docker-compose stop app: SIGTERM, exit status 0 after $((SECONDS - t0))s"

# ---- down ----

log "docker-compose down -v"
timeout 120 "${compose[@]}" down -v --remove-orphans --timeout 20 >"$tmp/down.log" 2>&1 || {
    cat "$tmp/down.log" >&2
    die "docker-compose down failed"
}
stack_up=0
left="$(podman ps -a -q --filter "label=com.docker.compose.project=$project")"
[[ -z "$left" ]] || die "containers left after down: $left"
if podman volume ls -q | grep -q "^${project}_"; then
    die "volumes left after down -v: $(podman volume ls -q | grep "^${project}_" | tr '\n' ' ')"
fi
# Images of earlier builds, no longer tagged: the app images, and every
# build stage but the newest (whose layers, the build tools' among them,
# are the next build's cache). Listed newest first.
podman image prune -f --filter "label=org.opencontainers.image.title=h2pg" >/dev/null 2>&1 || true
podman images -q --filter dangling=true --filter "label=org.opencontainers.image.title=h2pg-build" 2>/dev/null |
    tail -n +2 | xargs -r podman rmi >/dev/null 2>&1 || true
log "done in $((SECONDS - start_time))s"
