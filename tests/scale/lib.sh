# shellcheck shell=bash
# shellcheck disable=SC2154  # repo and h2pg: set by the script that sources this
# tests/scale/lib.sh: what the scale-out tests (tests/scale/*.sh) and
# bench/scale.sh share, sourced, never run. Bash with set -euo pipefail.
#
# scale_init NAME sets up a temp directory, the EXIT trap and the log
# helpers; everything started afterwards through these functions (h2pg
# processes, PostgreSQL clusters, PgBouncer, nginx, databases and roles on
# $DATABASE_URL's server) is registered and undone by that trap, in reverse
# order, whether the script passes, fails or is interrupted; a detached
# watchdog does the same if the script is killed outright (SIGKILL).
#
# The servers run as unprivileged users when the script runs as root:
# PostgreSQL and PgBouncer as the postgres system user (both refuse root),
# nginx's workers as nobody. So the temp directory is world-traversable
# (mode 755), while the data directories inside it belong to postgres.

# ---- logging ----

scale_name=scale
passed=0
log() { echo "$scale_name: $*" >&2; }
die() {
    log "FAILED: $*"
    stray_signal_note
    exit 1
}
ok() {
    passed=$((passed + 1))
    log "ok: $*"
}

# On a shared machine another job may signal a pid that was once its own
# (pids wrap at 32768 here) or every process of a name: say so when an h2pg
# of ours logged a stop signal that this script did not send.
declare -A h2pg_pids=() # name -> pid
stopped=" "             # pids this script stopped
stray_signal_note() {
    local name
    for name in "${!h2pg_pids[@]}"; do
        [[ "$stopped" != *" ${h2pg_pids[$name]} "* && -f "$tmp/$name.log" ]] || continue
        if grep -q '"received SIG\(TERM\|INT\)' "$tmp/$name.log"; then
            log "NOTE: $name (pid ${h2pg_pids[$name]}) received a stop signal this script did not send: another job on this machine?"
        fi
    done
}

# ---- packages ----

# need_tools CMD:PACKAGE...: installs the Debian packages of the commands
# that are missing (as root, or through sudo).
need_tools() {
    local pair cmd pkg need=() sudo=()
    PATH="$PATH:/usr/sbin:/sbin"
    for pair in "$@"; do
        cmd="${pair%%:*}"
        pkg="${pair#*:}"
        if [[ "$cmd" == /* ]]; then
            [[ -x "$cmd" ]] || need+=("$pkg")
        else
            command -v "$cmd" >/dev/null || need+=("$pkg")
        fi
    done
    [[ ${#need[@]} -gt 0 ]] || return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${need[*]}"
        sudo=(sudo)
    fi
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2
}

# ---- setup and teardown ----

tmp=""
pids=()     # background processes of ours, stopped with TERM at the end
undo=()     # commands run at the end, the last registered first
keep_logs=0 # 1: print the logs' tails even when the script passes

# Who runs the PostgreSQL servers and where its tools are.
scale_pg_env() {
    if [[ "$(id -u)" -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the postgres system user (apt-get install postgresql-15)"
        pguser=postgres
    else
        pguser="$(id -un)"
    fi
    pgbin="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
    if [[ ! -x "$pgbin/initdb" ]]; then
        local initdb_path
        initdb_path="$(command -v initdb || true)"
        [[ -z "$initdb_path" ]] || pgbin="$(dirname "$initdb_path")"
    fi
}

# scale_init NAME: the temp directory ($tmp), the traps and the watchdog.
scale_init() {
    scale_name="$1"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/h2pg-$1.XXXXXX")"
    chmod 755 "$tmp"
    : >"$tmp/.pids"
    : >"$tmp/.undo"
    trap scale_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    scale_pg_env
    # Detached (reparented to init, stdio closed, so that neither a killer
    # of this script's process tree nor a reader of its output waits for it).
    # shellcheck disable=SC2016  # expanded by that bash
    (setsid bash -c '. "$1"; scale_watchdog "$2" "$3" "$4"' watchdog "${BASH_SOURCE[0]}" "$$" "$(start_time $$)" "$tmp" \
        </dev/null >/dev/null 2>"${SCALE_WATCHDOG_LOG:-/dev/null}" &)
}

# start_time PID: when the process started (clock ticks since boot), which
# tells it from a later process that got the same pid
start_time() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# track PID: a background process of ours, stopped with TERM at the end
track() {
    pids+=("$1")
    echo "$1 $(start_time "$1")" >>"$tmp/.pids"
}

# When this script is killed without its EXIT trap running (SIGKILL, as a
# test timeout may send), the servers pg_ctl daemonized would stay. The
# watchdog waits for the script to go, and if $tmp is still there, stops what
# is still ours (pid and start time match) and runs the undo commands.
# shellcheck disable=SC2317  # run by the watchdog's own bash
scale_watchdog() {
    local main="$1" started="$2" pid st i cmds
    [[ -z "${SCALE_WATCHDOG_LOG:-}" ]] || set -x # SCALE_WATCHDOG_LOG: where its trace goes
    while [[ "$(start_time "$main")" == "$started" ]]; do sleep 1; done
    [[ -d "$3" && ! -e "$3/.done" ]] || return 0
    tmp="$3"
    scale_pg_env
    while read -r pid st; do
        [[ "$(start_time "$pid")" != "$st" ]] || kill -TERM "$pid" 2>/dev/null
    done <"$tmp/.pids"
    sleep 2
    mapfile -t cmds <"$tmp/.undo"
    for ((i = ${#cmds[@]} - 1; i >= 0; i--)); do
        eval "${cmds[i]}" >/dev/null 2>&1
    done
    rm -rf "$tmp"
}

# on_exit COMMAND...: runs COMMAND (one string, eval'd) at the end.
on_exit() {
    undo+=("$*")
    echo "$*" >>"$tmp/.undo"
}

# shellcheck disable=SC2317  # reached through the EXIT trap
scale_cleanup() {
    local status=$? pid i f
    set +e
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
    for ((i = ${#undo[@]} - 1; i >= 0; i--)); do
        eval "${undo[i]}" >/dev/null 2>&1
    done
    if [[ -n "$tmp" ]]; then
        if [[ $status -ne 0 || $keep_logs -eq 1 ]]; then
            for f in "$tmp"/*.log; do
                [[ -s "$f" ]] || continue
                echo "---- $(basename "$f") (last 30 lines)" >&2
                tail -n 30 "$f" >&2
            done
        fi
        touch "$tmp/.done" # for the watchdog
        if [[ -n "${SCALE_KEEP_TMP:-}" ]]; then
            echo "$scale_name: SCALE_KEEP_TMP is set: logs kept in $tmp" >&2
        else
            rm -rf "$tmp"
        fi
    fi
    if [[ $status -eq 0 && $passed -gt 0 ]]; then
        echo "$passed passed, 0 failed"
    fi
    exit "$status"
}

# forget PID: a process we stopped and reaped ourselves.
forget() {
    local keep=() p
    for p in "${pids[@]}"; do
        [[ "$p" == "$1" ]] || keep+=("$p")
    done
    pids=("${keep[@]}")
}

# ---- ports and probes ----

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port nobody listens on, and none handed out before in this
# run (several are picked before any is bound). It comes from below the
# kernel's ephemeral range: a port there is never taken by an outgoing
# connection's local end or by a test that binds port 0 (the C tests do),
# so a cluster stopped for a while can come back on the port it had.
given_ports=" "
port_floor=10000 port_ceiling=60000
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || ephemeral_low=0
if ((ephemeral_low > port_floor + 2000)); then port_ceiling=$((ephemeral_low - 1)); fi
free_port() {
    local p=$((port_floor + (RANDOM * 32768 + RANDOM) % (port_ceiling - port_floor + 1)))
    while port_in_use "$p" || [[ "$given_ports" == *" $p "* ]]; do
        p=$((p >= port_ceiling ? port_floor : p + 1))
    done
    given_ports+="$p "
    echo "$p"
}

# answers PORT PATH: GET PATH answers 200 (bash alone, 2 s at most).
answers() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
        IFS= read -r -t 2 line <&3
        [[ "$line" == "HTTP/1."?" 200"* ]]
    ) 2>/dev/null
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s; false if it
# never succeeded.
wait_until() {
    local tries=$(($1 * 10))
    shift
    for _ in $(seq 1 "$tries"); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# ---- HTTP ----

# req METHOD URL [curl args...]: sets $code and $body; headers in $tmp/headers.
req() {
    local method="$1" url="$2"
    shift 2
    code="$(curl -s -X "$method" --max-time 20 -D "$tmp/headers" -o "$tmp/body" -w '%{http_code}' "$@" "$url" || true)"
    body="$(cat "$tmp/body" 2>/dev/null || true)"
}
header() { sed -n "s/^$1: *//Ip" "$tmp/headers" | tr -d '\r' | tail -n1; }
expect() {
    [[ "$code" == "$1" ]] || die "$2: expected HTTP $1, got ${code:-no answer}: ${body:0:300}"
}
# json_int FIELD: the integer FIELD of $body (a flat match, enough for our objects)
json_int() { sed -n "s/.*\"$1\":\(-\?[0-9]*\).*/\1/p" <<<"$body" | head -n1; }

# ---- conninfo ----

# with_dbname CONNINFO DB: the same server with dbname=DB (a later dbname
# wins in a key=value string; a URI takes it as a parameter).
with_dbname() {
    case "$1" in
    postgres://* | postgresql://*)
        if [[ "$1" == *\?* ]]; then echo "$1&dbname=$2"; else echo "$1?dbname=$2"; fi
        ;;
    *) echo "$1 dbname=$2" ;;
    esac
}

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
# sql CONNINFO QUERY: the unaligned, tuples-only result
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

# shared_db PREFIX: a fresh database on $DATABASE_URL's server, dropped at
# the end; sets $db (its name) and $db_url.
shared_db() {
    [[ -n "${DATABASE_URL:-}" ]] || die "DATABASE_URL is not set (run under scripts/with-postgres.sh)"
    db="h2pg_${1}_$$_${RANDOM}"
    psql_q -d "$DATABASE_URL" -c "CREATE DATABASE \"$db\"" >/dev/null
    on_exit "psql -X -q -d \"\$DATABASE_URL\" -c 'DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)'"
    db_url="$(with_dbname "$DATABASE_URL" "$db")"
}

# ---- PostgreSQL clusters of our own ----

# Runs a PostgreSQL tool as the server's user, from the temp directory (the
# caller's working directory may be closed to that user).
as_pg() {
    if [[ "$pguser" == "$(id -un)" ]]; then
        (cd "$tmp" && "$@")
    else
        (cd "$tmp" && runuser -u "$pguser" -- "$@")
    fi
}

# pg_cluster NAME [postgresql.conf lines...]: initdb into $tmp/NAME, start on
# a free port, stop (immediately) and delete at the end; sets $pg_port.
# Trust authentication on 127.0.0.1 and the socket in $tmp, replication
# connections allowed; tuned for tests (fsync off), not durability.
pg_cluster() {
    local name="$1" attempt
    shift
    mkdir -p "$tmp/$name"
    [[ "$pguser" == "$(id -un)" ]] || chown "$pguser": "$tmp/$name"
    as_pg "$pgbin/initdb" -D "$tmp/$name/data" -U "$pguser" --auth=trust --encoding=UTF8 --locale=C --no-sync \
        >"$tmp/$name.initdb" 2>&1 || die "initdb for $name failed: $(tail -n 5 "$tmp/$name.initdb")"
    as_pg tee "$tmp/$name/data/pg_hba.conf" >/dev/null <<'EOF'
local all         all trust
host  all         all 127.0.0.1/32 trust
host  replication all 127.0.0.1/32 trust
EOF
    {
        echo
        echo "# tests/scale/lib.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$tmp/$name'"
        echo "fsync = off"
        echo "full_page_writes = off"
        echo "max_connections = 200"
        echo "shared_buffers = 64MB"
        echo "logging_collector = off"
        local line
        for line in "$@"; do echo "$line"; done
    } | as_pg tee -a "$tmp/$name/data/postgresql.conf" >/dev/null
    on_exit "pg_stop $name immediate; rm -rf '$tmp/$name'"
    pg_start "$name" "$(free_port)"
}

# pg_start NAME PORT [same]: starts the cluster in $tmp/NAME; sets $pg_port
# and records the port in $tmp/NAME/port. A port taken by now moves it to
# another, unless "same" is given (a restart others know the port of): then
# it tries that port again for up to 30 s.
pg_start() {
    local name="$1" port="$2" same="${3:-}" attempt attempts=20
    [[ -z "$same" ]] || attempts=30
    for attempt in $(seq 1 "$attempts"); do
        : >"$tmp/$name.log" # a fresh log per attempt, for the bind check below
        [[ "$pguser" == "$(id -un)" ]] || chown "$pguser": "$tmp/$name.log"
        if as_pg "$pgbin/pg_ctl" -D "$tmp/$name/data" -l "$tmp/$name.log" -o "-p $port" -w -t 60 start \
            >/dev/null 2>&1; then
            echo "$port" >"$tmp/$name/port"
            # shellcheck disable=SC2034  # for the caller
            pg_port="$port"
            wait_until 30 "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$pguser" -d postgres ||
                die "$name on port $port is not ready"
            return 0
        fi
        if [[ $attempt -eq $attempts ]] || ! grep -q "could not bind\|could not create any TCP/IP sockets" "$tmp/$name.log"; then
            die "PostgreSQL $name did not start on port $port: $(tail -n 10 "$tmp/$name.log" 2>/dev/null)"
        fi
        if [[ -n "$same" ]]; then sleep 1; else port="$(free_port)"; fi
    done
}

# pg_stop NAME MODE: pg_ctl stop -m MODE, if it runs.
pg_stop() {
    [[ -f "$tmp/$1/data/postmaster.pid" ]] || return 0
    as_pg "$pgbin/pg_ctl" -D "$tmp/$1/data" -m "$2" -w -t 60 stop >/dev/null
}

# pg_url NAME [DB]: conninfo of a cluster of ours
pg_url() { echo "host=127.0.0.1 port=$(cat "$tmp/$1/port") user=$pguser dbname=${2:-postgres}"; }

# ---- h2pg ----

# spawn_h2pg NAME PORT [ENV=VALUE...]: `h2pg serve` in the background on
# 127.0.0.1:PORT, log in $tmp/NAME.log; sets $spawned (its pid). Its
# database is $db_url unless a DATABASE_URL=... is among the settings.
spawn_h2pg() {
    local name="$1" port="$2"
    shift 2
    env DATABASE_URL="${db_url:-}" HOST=127.0.0.1 PORT="$port" THREADS=2 POOL_MAX=8 LOG_FORMAT=json LOG_LEVEL=info "$@" \
        "$h2pg" serve >"$tmp/$name.log" 2>&1 &
    spawned=$!
    track "$spawned"
    h2pg_pids[$name]=$spawned
}

# await_h2pg NAME PORT PID: until /healthz answers 200 (30 s); returns 1
# if the process exited first (its status in $exited), dies on a hang.
await_h2pg() {
    local name="$1" port="$2" pid="$3"
    exited=0
    for _ in $(seq 1 300); do
        answers "$port" /healthz && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "$name did not answer /healthz on port $port within 30 s"
    wait "$pid" || exited=$?
    forget "$pid"
    return 1
}

# start_h2pg NAME [ENV=VALUE...]: spawn_h2pg on a free port and await it,
# trying another port if that one was taken meanwhile; sets $port, $spawned.
start_h2pg() {
    local name="$1" attempt
    shift
    for attempt in $(seq 1 10); do
        port="$(free_port)"
        spawn_h2pg "$name" "$port" "$@"
        await_h2pg "$name" "$port" "$spawned" && return 0
        if [[ $attempt -eq 10 ]] || ! grep -qi "address already in use" "$tmp/$name.log"; then
            die "$name exited at start with status $exited: $(tail -n 5 "$tmp/$name.log")"
        fi
        mv "$tmp/$name.log" "$tmp/$name.attempt$attempt.log" # what it did before giving up stays readable
    done
}

# stop_proc PID: SIGTERM to a background process of ours and wait for it;
# the exit status in $exited.
stop_proc() {
    exited=0
    stopped+="$1 "
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" || exited=$?
    forget "$1"
}
stop_h2pg() { stop_proc "$1"; }

# stop_h2pg_clean NAME PID: stops it, which must exit with status 0 (under
# the sanitizers a leak or an error report makes that 1: shown from its log)
stop_h2pg_clean() {
    stop_proc "$2"
    [[ $exited -eq 0 ]] ||
        die "$1 exited with status $exited on SIGTERM: $(grep -m1 -A8 'ERROR: \(Address\|Leak\|Undefined\)' "$tmp/$1.log" || tail -n 3 "$tmp/$1.log")"
}

# access_count NAME [GREP-PATTERN]: the access-log lines in $tmp/NAME.log
# (matching the pattern, a fixed string, when one is given).
access_count() {
    grep -F '"type":"access"' "$tmp/$1.log" | grep -c -F -- "${2:-}" || true
}

# ---- nginx, with the shipped configuration ----

# start_nginx PORT...: nginx on a free loopback port in front of the
# services on the given ports, with docker/nginx.conf itself, where only the
# upstream's server line (one per service here), the listen port and the
# access-log path are replaced (as tests/nginx/run.sh does); sets
# $nginx_port and $nginx_pid. NGINX_WORKERS (default 2) worker processes; NGINX_ACCESS_LOG
# another access-log path, or "off".
start_nginx() {
    local shipped="$repo/docker/nginx.conf" line servers="" p attempt access
    access="access_log ${NGINX_ACCESS_LOG:-$tmp/nginx-access.log} h2pg;"
    [[ "${NGINX_ACCESS_LOG:-}" != off ]] || access="access_log off;"
    for line in 'server app:8080;' 'listen 80;' 'access_log /var/log/nginx/access.log h2pg;'; do
        [[ "$(grep -c -F -- "$line" "$shipped")" -eq 1 ]] ||
            die "docker/nginx.conf should have the line '$line' exactly once (this test replaces it)"
    done
    for p in "$@"; do servers+="server 127.0.0.1:$p; "; done
    mkdir -p "$tmp/nginx"
    for attempt in $(seq 1 10); do
        nginx_port="$(free_port)"
        sed -e "s|server app:8080;|$servers|" \
            -e "s|listen 80;|listen 127.0.0.1:$nginx_port;|" \
            -e "s|access_log /var/log/nginx/access.log h2pg;|$access|" \
            "$shipped" >"$tmp/nginx/h2pg.conf"
        cat >"$tmp/nginx/nginx.conf" <<EOF
# generated by tests/scale/lib.sh: the frame the nginx image gives conf.d
daemon off;
worker_processes ${NGINX_WORKERS:-2};
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    include $tmp/nginx/h2pg.conf;
}
EOF
        nginx -t -q -e "$tmp/nginx-error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>"$tmp/nginx-t.log" ||
            die "nginx rejects the configuration: $(cat "$tmp/nginx-t.log")"
        nginx -e "$tmp/nginx-error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>"$tmp/nginx-stderr.log" &
        track "$!"
        # shellcheck disable=SC2034  # for the caller
        nginx_pid="${pids[-1]}"
        wait_until 10 answers "$nginx_port" /healthz && return 0
        kill -0 "${pids[-1]}" 2>/dev/null && die "nginx did not pass /healthz through on port $nginx_port within 10 s"
        wait "${pids[-1]}" || true
        unset 'pids[-1]'
        if [[ $attempt -eq 10 ]] || ! grep -q "Address already in use" "$tmp/nginx-error.log"; then
            die "nginx exited at start: $(tail -n 5 "$tmp/nginx-error.log")"
        fi
    done
}

# ---- PgBouncer ----

# start_pgbouncer NAME BACKEND-CONNINFO [pgbouncer.ini lines...]: PgBouncer
# in transaction pooling mode on a free loopback port, with one database,
# "app", that is BACKEND-CONNINFO (host, port, dbname, user, password...).
# Clients log in as any user listed in $tmp/NAME/users.txt (trust, as the
# backend). Sets $pgb_port. As root it runs as the postgres user (PgBouncer
# refuses to run as root).
start_pgbouncer() {
    local name="$1" backend="$2" attempt line
    shift 2
    mkdir -p "$tmp/$name"
    [[ -f "$tmp/$name/users.txt" ]] || echo "\"$pguser\" \"\"" >"$tmp/$name/users.txt"
    for attempt in $(seq 1 10); do
        pgb_port="$(free_port)"
        {
            echo "; generated by tests/scale/lib.sh"
            echo "[databases]"
            echo "app = $backend"
            echo "[pgbouncer]"
            echo "listen_addr = 127.0.0.1"
            echo "listen_port = $pgb_port"
            echo "unix_socket_dir ="
            echo "auth_type = trust"
            echo "auth_file = $tmp/$name/users.txt"
            echo "admin_users = $pguser"
            echo "pool_mode = transaction"
            echo "logfile = $tmp/$name.log"
            echo "log_connections = 0"
            echo "log_disconnections = 0"
            echo "pidfile ="
            for line in "$@"; do echo "$line"; done
        } >"$tmp/$name/pgbouncer.ini"
        [[ "$pguser" == "$(id -un)" ]] || chown -R "$pguser": "$tmp/$name"
        : >"$tmp/$name.log"
        [[ "$pguser" == "$(id -un)" ]] || chown "$pguser": "$tmp/$name.log"
        # setpriv execs: the pid is PgBouncer's own, which the cleanup signals
        if [[ "$pguser" == "$(id -un)" ]]; then
            pgbouncer "$tmp/$name/pgbouncer.ini" >/dev/null 2>"$tmp/$name.stderr" &
        else
            setpriv --reuid="$pguser" --regid="$pguser" --init-groups pgbouncer "$tmp/$name/pgbouncer.ini" >/dev/null 2>"$tmp/$name.stderr" &
        fi
        track "$!"
        wait_until 10 port_in_use "$pgb_port" && return 0
        kill -0 "${pids[-1]}" 2>/dev/null && die "PgBouncer $name does not listen on $pgb_port after 10 s"
        wait "${pids[-1]}" || true
        unset 'pids[-1]'
        if [[ $attempt -eq 10 ]] || ! grep -qi "address already in use" "$tmp/$name.log"; then
            die "PgBouncer $name exited at start: $(tail -n 5 "$tmp/$name.log" "$tmp/$name.stderr")"
        fi
    done
}
