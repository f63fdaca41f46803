#!/usr/bin/env bash
# scripts/fresh-test.sh
#
# Proves that the README's two commands work on a fresh Debian bookworm
# machine, by running them in one: a container of debian:bookworm-slim
# (made locally from debootstrap, never pulled; scripts/lib/podman.sh) that
# has nothing installed but Debian's minimal base, and this checkout copied
# to /root/h2pg. There, as root, as a newcomer would:
#   1. `scripts/run.sh` in the background: it installs its packages, builds
#      and serves on :8080 with a private PostgreSQL. Once `curl
#      localhost:8080/readyz` answers 200, one `POST /users` must answer 201;
#      then SIGTERM must stop it with status 0 and no PostgreSQL left over;
#   2. `H2PG_BUILD_ONLY=1 scripts/test.sh`: the suite's own script installs
#      everything it needs (scripts/deps.sh test), configures and builds
#      every target of the normal and the ASan + UBSan build, and runs the
#      OpenAPI test's `npm ci`; the tests themselves run on the host
#      (scripts/test.sh, stages 1 and 2).
# A package that scripts/deps.sh forgets fails one of them, and the lines of
# the log that name what is missing are shown first.
#
# What is copied is what a clone would hold, plus the working tree's edits:
# `git ls-files --cached --others --exclude-standard`, files that exist
# only (never build*/ or node_modules/). H2PG_FRESH_TREE=HEAD copies the
# last commit instead (`git archive HEAD`), what a clean clone gets.
#
# Packages come from the Debian mirror and npm's registry, as on a real
# machine, through podman's default network; if the container cannot reach
# the mirror that way, the host's network is used. The host's own network
# settings go in as a machine of the same site would have them: podman
# copies /etc/resolv.conf, and here the proxy variables (http_proxy, ...)
# and NODE_EXTRA_CA_CERTS (a CA bundle, e.g. for a TLS-inspecting proxy,
# that npm must trust to reach its registry) are passed on, when the host
# sets them; its file is mounted read-only. Downloaded .deb files and
# npm's cache are kept in the cache directory between runs (mounted into the
# container), so a second run downloads almost nothing. The container is
# removed at the end, whatever happens; its logs are printed on failure.
#
# Run as root (it installs podman and runs containers). Environment:
#   H2PG_COMPOSE_CACHE    cache directory, shared with scripts/compose-test.sh
#                         (/var/cache/h2pg-compose)
#   H2PG_DEBIAN_MIRROR    Debian mirror (http://deb.debian.org/debian)
#   H2PG_FRESH_TREE       worktree (default) or HEAD: what is copied in
#   H2PG_FRESH_NETWORK    auto (default), bridge or host: the container's network
#   H2PG_FRESH_WAIT       seconds for scripts/run.sh to serve (900)
#   H2PG_FRESH_BUILD_WAIT seconds for the build-only test.sh (1800)
set -euo pipefail

cd "$(dirname "$0")/.."

cache="${H2PG_COMPOSE_CACHE:-/var/cache/h2pg-compose}"
mirror="${H2PG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tree="${H2PG_FRESH_TREE:-worktree}"
network="${H2PG_FRESH_NETWORK:-auto}"
run_wait="${H2PG_FRESH_WAIT:-900}"
build_wait="${H2PG_FRESH_BUILD_WAIT:-1800}"
name="h2pg-fresh-$$"
label=h2pg.fresh-test
start_time=$SECONDS

log() { echo "fresh-test: [$((SECONDS - start_time))s] $*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

if [[ "$(id -u)" -ne 0 ]]; then
    echo "fresh-test: run it as root (it installs packages, runs podman and writes /etc/containers)" >&2
    exit 2
fi
case "$tree" in worktree | HEAD) ;; *) die "H2PG_FRESH_TREE must be worktree or HEAD, not '$tree'" ;; esac
case "$network" in auto | bridge | host) ;; *) die "H2PG_FRESH_NETWORK must be auto, bridge or host, not '$network'" ;; esac

# shellcheck source=SCRIPTDIR/lib/podman.sh
source scripts/lib/podman.sh
# git: what a clone holds; catatonit: podman run --init (a PID 1 that reaps
# orphans, as on a real machine, where pg_ctl's daemonized server ends up)
podman_install_packages git catatonit
podman_containers_conf
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$(pwd) is not a git checkout (what would a clone hold?)"

# ---- cleanup, from here on ----

tmp="$(mktemp -d "${TMPDIR:-/tmp}/h2pg-fresh.XXXXXX")"
started=0
phase=""
tests_in=()

# the lines of a log that name what is missing, if any
hints() {
    grep -E -i "no package '[^']*' found|package '[^']*'.* not found|could not find|unable to locate package|has no installation candidate|command not found|: not found$|fatal error: .*no such file|cannot find -l|cmake error|^E: " "$1" 2>/dev/null |
        grep -v '^ *$' | head -n 15 | sed 's/^/fresh-test: missing? /' >&2 || true
}

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    set +e
    if [[ $started -eq 1 ]]; then
        if [[ $status -ne 0 ]]; then
            log "failed while: $phase"
            if [[ ! -s "$tmp/test.log" ]] && podman exec "$name" test -s /root/run.log 2>/dev/null; then
                podman exec "$name" cat /root/run.log >"$tmp/run.log" 2>/dev/null
                echo "---- scripts/run.sh in the container (last 60 lines)" >&2
                tail -n 60 "$tmp/run.log" >&2
                hints "$tmp/run.log"
            fi
            if [[ -s "$tmp/test.log" ]]; then
                echo "---- H2PG_BUILD_ONLY=1 scripts/test.sh in the container (last 60 lines)" >&2
                tail -n 60 "$tmp/test.log" >&2
                hints "$tmp/test.log"
            fi
        fi
        podman rm -f -t 0 "$name" >/dev/null 2>&1 || podman rm -f "$name" >/dev/null 2>&1
        log "removed the container $name"
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

# Containers of runs that were killed before their cleanup: each carries
# the pid of its script; those whose script is gone are removed.
while read -r id pid; do
    [[ -n "$id" ]] || continue
    if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
        log "removing the container $id of an earlier run (pid $pid is gone)"
        podman rm -f -t 0 "$id" >/dev/null 2>&1 || true
    fi
done < <(podman ps -a --filter "label=$label" --format "{{.ID}} {{index .Labels \"$label\"}}" 2>/dev/null)

# ---- the image, the tree, the container ----

phase="making the base image"
podman_debian_image
mkdir -p "$cache/apt-archives/partial" "$cache/npm"

phase="packing the tree"
if [[ "$tree" == HEAD ]]; then
    git archive --format=tar HEAD >"$tmp/tree.tar"
    what="the last commit ($(git rev-parse --short HEAD))"
else
    # ls-files lists tracked files the working tree has deleted: skip those
    git ls-files -z --cached --others --exclude-standard |
        grep -z -v -E '^build[^/]*/|(^|/)node_modules/' |
        while IFS= read -r -d '' f; do
            [[ -f "$f" || -L "$f" ]] && printf '%s\0' "$f"
        done | sort -zu >"$tmp/files"
    tar --null -T "$tmp/files" -cf "$tmp/tree.tar"
    what="the working tree ($(tr -cd '\0' <"$tmp/files" | wc -c) files; HEAD $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' + edits'))"
fi

# podman's default network, unless the mirror cannot be reached through it
mirror_host="${mirror#*://}"
mirror_host="${mirror_host%%/*}"
mirror_port=80
[[ "$mirror" != https://* ]] || mirror_port=443
if [[ "$network" == auto ]]; then
    phase="checking the container network"
    if podman run --rm --network bridge "$debian_tag" \
        timeout 15 bash -c "exec 3<>/dev/tcp/$mirror_host/$mirror_port" >/dev/null 2>&1; then
        network=bridge
    else
        log "a container on podman's default network cannot reach $mirror_host:$mirror_port: using the host's network"
        network=host
    fi
fi
# On the host's network, 8080 may be taken: then the service gets another
# port (PORT, which h2pg reads like --port).
port=8080
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ "$network" == host ]] && port_in_use "$port"; then
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
    while port_in_use "$port"; do port=$((port >= 60000 ? 20000 : port + 1)); done
    log "port 8080 is in use on the host: the service in the container serves on $port"
fi

# the host's proxy and extra CA settings, if any (see above)
site=()
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -z "${!v:-}" ]] || site+=(-e "$v=${!v}")
done
mounts=()
if [[ -n "${NODE_EXTRA_CA_CERTS:-}" && -f "$NODE_EXTRA_CA_CERTS" ]]; then
    mounts+=(-v "$(realpath "$NODE_EXTRA_CA_CERTS"):/etc/h2pg-host-extra-ca.pem:ro")
    site+=(-e NODE_EXTRA_CA_CERTS=/etc/h2pg-host-extra-ca.pem)
fi

phase="starting the container"
# The .deb files apt-get downloads and npm's cache live on the host; dpkg
# does not fsync (the container is thrown away; Debian's official images do
# the same). Nothing else differs from a fresh bookworm.
podman run -d --init --name "$name" --label "$label=$$" --network "$network" \
    -v "$cache/apt-archives:/var/cache/apt/archives" \
    -v "$cache/npm:/root/.npm" "${mounts[@]}" "${site[@]}" \
    "$debian_tag" sleep infinity >"$tmp/run-id" 2>"$tmp/podman-run.log" || {
    cat "$tmp/podman-run.log" >&2
    die "podman run failed"
}
started=1
podman exec "$name" sh -c 'echo force-unsafe-io >/etc/dpkg/dpkg.cfg.d/h2pg-fresh-test && mkdir -p /root/h2pg'
podman exec -i "$name" tar -x -C /root/h2pg <"$tmp/tree.tar"
log "container $name ($network network) with $what in /root/h2pg"
[[ ${#site[@]} -eq 0 ]] || log "the host's settings passed on: $(printf '%s\n' "${site[@]}" | sed -n 's/=.*//p' | tr '\n' ' ')"

# ---- 1. scripts/run.sh ----

phase="scripts/run.sh (waiting for /readyz)"
# run.sh execs scripts/with-postgres.sh, which keeps its pid: TERM to it
# stops the service and then the private PostgreSQL.
env=()
[[ "$port" == 8080 ]] || env=(-e PORT="$port")
# shellcheck disable=SC2016  # expanded in the container
podman exec -d "${env[@]}" "$name" bash -c '
    cd /root/h2pg
    scripts/run.sh >/root/run.log 2>&1 </dev/null &
    echo $! >/root/run.pid
    wait $!
    echo $? >/root/run.status' >/dev/null
t0=$SECONDS
log "scripts/run.sh started (up to ${run_wait}s for it to install, build and serve on :$port)"

# prints: "exited N", "nocurl" (something listens, but there is no curl),
# or the HTTP status of GET /readyz ("000" while nothing answers)
# shellcheck disable=SC2016  # expanded in the container
probe='
    if [ -s /root/run.status ]; then echo "exited $(cat /root/run.status)"; exit; fi
    if command -v curl >/dev/null; then
        curl -s -o /dev/null -w "%{http_code}" --max-time 5 "localhost:$1/readyz" || true
    elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then echo nocurl
    else echo 000; fi'
last_report=$SECONDS
while :; do
    state="$(podman exec "$name" bash -c "$probe" probe "$port" 2>/dev/null || echo 000)"
    case "$state" in
    200) break ;;
    exited*) die "scripts/run.sh stopped before it served (status ${state#exited })" ;;
    nocurl) die "the service listens on :$port, but there is no curl: scripts/deps.sh run must install it (README: curl -s localhost:8080/readyz)" ;;
    esac
    ((SECONDS - t0 < run_wait)) || die "scripts/run.sh did not serve /readyz with 200 within ${run_wait}s (last answer: $state)"
    if ((SECONDS - last_report >= 30)); then
        last_report=$SECONDS
        line="$(podman exec "$name" sh -c 'tr "\r" "\n" </root/run.log | grep -v "^ *$" | tail -n 1' 2>/dev/null | cut -c1-120 || true)"
        log "  ... $line"
    fi
    sleep 2
done
log "GET /readyz: 200 after $((SECONDS - t0))s (scripts/run.sh installed, built and served)"

phase="POST /users"
code="$(podman exec "$name" curl -s -o /root/post.out -w '%{http_code}' --max-time 20 \
    -H 'Content-Type: application/json' -d '{"name":"Fresh Machine","email":"fresh@example.com"}' \
    "localhost:$port/users" || true)"
[[ "$code" == 201 ]] || die "POST /users: expected 201, got ${code:-no answer}: $(podman exec "$name" cat /root/post.out 2>/dev/null)"
log "POST /users: 201 $(podman exec "$name" cat /root/post.out)"

phase="stopping scripts/run.sh"
podman exec "$name" sh -c 'kill -TERM "$(cat /root/run.pid)"'
for _ in $(seq 1 300); do
    podman exec "$name" test -s /root/run.status && break
    sleep 0.2
done
status="$(podman exec "$name" cat /root/run.status 2>/dev/null || true)"
[[ -n "$status" ]] || die "scripts/run.sh did not stop within 60s of SIGTERM"
[[ "$status" == 0 ]] || die "scripts/run.sh exited with status $status on SIGTERM (0 expected)"
# shellcheck disable=SC2016  # expanded in the container
left="$(podman exec "$name" sh -c 'for d in /proc/[0-9]*; do
    read -r n <"$d/comm" 2>/dev/null && [ "$n" = postgres ] && ! grep -q "^[0-9]* ([^)]*) Z" "$d/stat" && echo "${d#/proc/}"
done; true')"
[[ -z "$left" ]] || die "PostgreSQL processes left after scripts/run.sh stopped: pids $(echo "$left" | tr '\n' ' ')"
log "scripts/run.sh stopped on SIGTERM with status 0, its PostgreSQL gone"

# ---- 2. what scripts/test.sh installs and builds ----

phase="H2PG_BUILD_ONLY=1 scripts/test.sh"
t0=$SECONDS
log "H2PG_BUILD_ONLY=1 scripts/test.sh (deps.sh test; build/ and build-asan/ in full; npm ci)"
# the whole output to a file, the stage headers and installs to the terminal
if ! timeout "$build_wait" podman exec -e H2PG_BUILD_ONLY=1 -w /root/h2pg "$name" scripts/test.sh </dev/null 2>&1 |
    tee "$tmp/test.log" | { grep --line-buffered -E '^(== |deps: |openapi: |test: )' || true; } |
    sed -u 's/^\(.\{150\}\).*/\1.../; s/^/fresh-test:   /' >&2; then
    die "H2PG_BUILD_ONLY=1 scripts/test.sh failed or timed out (${build_wait}s)"
fi
grep -q '^== built everything the tests need' "$tmp/test.log" || die "scripts/test.sh ended without building everything"
# build/ was configured by scripts/run.sh without the tests first
for dir in build build-asan; do
    n="$(podman exec -w /root/h2pg "$name" ctest --test-dir "$dir" -N 2>/dev/null | sed -n 's/^Total Tests: //p')"
    [[ "${n:-0}" -gt 0 ]] || die "$dir/ has no tests configured after scripts/test.sh"
    tests_in+=("$n in $dir/")
done
log "scripts/test.sh installed and built everything in $((SECONDS - t0))s ($(grep -c 'Built target' "$tmp/test.log") targets; tests: ${tests_in[*]})"

# keeps the package cache from growing: .deb files the mirror no longer has go
podman exec "$name" apt-get autoclean -q >/dev/null 2>&1 || true
phase="done"
log "done in $((SECONDS - start_time))s"
