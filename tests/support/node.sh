# shellcheck shell=bash
# Sourced by the tests that Node drives (tests/openapi, tests/sse,
# tests/auth run.sh):
#
#   node_test_start NAME DIR "$@"
#
# the common start of such a run.sh, whose one argument is the h2pg binary
# (then DATABASE_URL must be set: scripts/with-postgres.sh) or --prepare
# (only the install, for H2PG_BUILD_ONLY=1 scripts/test.sh): checks them,
# sets bin to the binary's absolute path, cds to DIR, runs node_prepare,
# and ends the script after it with --prepare.
#
#   node_test_db_url DB     prints DATABASE_URL's server with dbname=DB
#   node_test_show_logs DIR  prints the last 40 lines of each log in DIR
#
#   node_prepare NAME
#
# in the current directory, which holds package.json and package-lock.json:
# installs Node.js and npm from Debian when either is missing (as root, or
# through sudo), then the packages with `npm ci` (which needs the registry)
# only when the lock file or node's version changed since the last install
# (a stamp in node_modules holds both). NAME prefixes what it prints.
node_prepare() {
    local name="$1"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        local sudo=()
        if [[ "$(id -u)" -ne 0 ]]; then
            command -v sudo >/dev/null || { echo "$name: need root (or sudo) to install nodejs and npm" >&2; return 1; }
            sudo=(sudo)
        fi
        echo "$name: installing nodejs and npm"
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends nodejs npm
    fi
    local stamp=node_modules/.h2pg-installed want
    want="$(sha256sum package-lock.json | cut -d' ' -f1) $(node --version)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "$name: npm ci"
        npm ci --no-audit --no-fund --loglevel=error
        echo "$want" >"$stamp"
    fi
}

node_test_start() {
    local name="$1" dir="$2"
    shift 2
    if [[ $# -ne 1 ]]; then
        echo "usage: $0 PATH/TO/h2pg | --prepare" >&2
        exit 2
    fi
    if [[ "$1" != --prepare ]]; then
        bin="$(realpath "$1")"
        [[ -x "$bin" ]] || { echo "$name: $1 is not an executable" >&2; exit 2; }
        [[ -n "${DATABASE_URL:-}" ]] || { echo "$name: DATABASE_URL is not set (run under scripts/with-postgres.sh)" >&2; exit 2; }
    fi
    cd "$dir" || exit 1
    node_prepare "$name" || exit 1
    [[ "$1" != --prepare ]] || exit 0
}

node_test_db_url() {
    # a later dbname wins in a key=value string; a URI takes it as a parameter
    case "$DATABASE_URL" in
    postgres://* | postgresql://*)
        if [[ "$DATABASE_URL" == *\?* ]]; then echo "$DATABASE_URL&dbname=$1"; else echo "$DATABASE_URL?dbname=$1"; fi ;;
    *) echo "$DATABASE_URL dbname=$1" ;;
    esac
}

node_test_show_logs() {
    local log
    for log in "$1"/*.log; do
        [[ -s "$log" ]] || continue
        echo "---- $(basename "$log") (last 40 lines)"
        tail -n 40 "$log"
    done
}
