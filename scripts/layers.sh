#!/usr/bin/env bash
# The shape of the house, from the sources themselves:
#   1. the include graph between the top-level folders (how many #include
#      lines point from each folder into each other one), checked against
#      the layers: arrows point down only;
#   2. the libraries a layer must not see (server/ knows nothing of libpq,
#      the runtime nothing but h2o, the HTTP client neither libpq nor h2o:
#      it waits on fds through aio/);
#   3. functions longer than 60 lines outside tests/, fuzz/ and bench/.
#
#   scripts/layers.sh [DIR]           prints the graph and any violation
#                                     (DIR: another checkout; default this one)
#   scripts/layers.sh --check [DIR]   the same, and exits 1 on a violation
#                                     (the suite runs it: test_layers)
set -euo pipefail

check=0
if [[ "${1:-}" == "--check" ]]; then
    check=1
    shift
fi
cd "${1:-$(dirname "$0")/..}"

# Each layer and the folders it may include from (besides itself).
declare -A allowed=(
    [base]=""
    [aio]=""
    [db]="aio base"
    [server]="aio base"
    [client]="aio base"
    [routes]="aio base db server client"
)
layers=(base aio db server client routes)
# System headers a layer must not include.
declare -A forbidden_headers=(
    [aio]="libpq-fe.h jansson.h"
    [base]="libpq-fe.h h2o.h jansson.h"
    [server]="libpq-fe.h"
    [client]="libpq-fe.h h2o.h"
)
MAX_LINES=60

violations=0
violation() {
    echo "VIOLATION: $*"
    violations=$((violations + 1))
}

# ---- 1. the include graph ----
declare -A edges=()
for from in "${layers[@]}"; do
    while IFS= read -r line; do
        to="${line#*\"}"
        to="${to%%/*}"
        [[ "$to" == "$line" || "$to" == *.h* ]] && continue # "foo.h": the same folder
        [[ "$to" == "$from" ]] && continue
        edges[$from:$to]=$((${edges[$from:$to]:-0} + 1))
    done < <(grep -rhE '^#include "[a-z_]+/' "$from" --include='*.c' --include='*.h' 2>/dev/null || true)
done

echo "include graph (folder -> folder: #include lines); layers from the bottom: ${layers[*]}"
for from in "${layers[@]}"; do
    out=""
    for to in "${layers[@]}"; do
        n=${edges[$from:$to]:-0}
        [[ $n -gt 0 ]] && out+=" $to($n)"
    done
    printf '  %-7s ->%s\n' "$from" "${out:- (nothing)}"
done
for key in "${!edges[@]}"; do
    from=${key%%:*}
    to=${key#*:}
    if [[ " ${allowed[$from]} " != *" $to "* ]]; then
        violation "$from/ includes from $to/ (${edges[$key]} lines): an arrow that does not point down"
        grep -rnE "^#include \"$to/" "$from" --include='*.c' --include='*.h' | head -5 | sed 's/^/    /'
    fi
done

# ---- 2. libraries a layer must not see ----
for layer in "${!forbidden_headers[@]}"; do
    for h in ${forbidden_headers[$layer]}; do
        if hits=$(grep -rnE "^#include <$h>" "$layer" --include='*.c' --include='*.h' 2>/dev/null); then
            violation "$layer/ includes <$h>:"
            echo "${hits//$'\n'/$'\n'    }" | sed '1s/^/    /'
        fi
    done
done

# ---- 3. long functions ----
# A function body: from a line that opens it at column 0 ('{' alone after
# a signature, as the code is formatted) to the '}' at column 0.
long=$(for f in $(git ls-files '*.c' | grep -vE '^(tests|fuzz|bench)/'); do
    awk -v max="$MAX_LINES" -v file="$f" '
        /^[A-Za-z]/ { sig = $0 }
        /\)[[:space:]]*$/ { sigline = NR }
        /^\{/ { if (NR == sigline + 1) { start = NR; name = sig } }
        /^\}/ { if (start) { n = NR - start - 1; if (n > max) printf "%s:%d: %d lines: %s\n", file, start, n, name; start = 0 } }
    ' "$f"
done)
if [[ -n "$long" ]]; then
    violation "functions over $MAX_LINES lines:"
    echo "${long//$'\n'/$'\n'    }" | sed '1s/^/    /'
fi

if [[ $violations -eq 0 ]]; then
    echo "ok: every arrow points down, no layer sees what it must not, no function over $MAX_LINES lines"
fi
[[ $check -eq 1 && $violations -gt 0 ]] && exit 1
exit 0
