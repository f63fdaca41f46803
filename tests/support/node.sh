# Sourced by the tests that Node drives (tests/openapi, tests/sse,
# tests/auth run.sh):
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
