#!/usr/bin/env bash
# A bounded run of the libFuzzer targets (fuzz/fuzz_<target>.c):
#
#   scripts/fuzz.sh [--merge] [target...]     targets: router query body headers forwarded (default: all)
#
# Installs clang and its libFuzzer runtime when missing (scripts/deps.sh
# fuzz), builds build-fuzz/ with clang, libFuzzer, ASan and UBSan, then runs
# each target for FUZZ_SECONDS (default 60), one after another. A target
# starts from its seeds (fuzz/corpus/<target>) and past crashes
# (fuzz/regressions/<target>), with fuzz/<target>.dict; what it finds goes
# to a scratch directory (FUZZ_WORKDIR, default a new one under /tmp), never
# into the repository, unless --merge: then the inputs that reached new
# coverage are added to fuzz/corpus/<target> (libFuzzer -merge=1).
#
# Prints per target the executions, executions per second, coverage
# (edges), features and corpus size. Exits 1 if a target crashed (a failed
# check, a sanitizer report, a leak, a timeout), naming the input; keep it
# as a regression test with
#   cp <input> fuzz/regressions/<target>/<what-it-is>
# and replay it with build-fuzz/fuzz/fuzz_<target> <input>.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(router query body headers forwarded)
merge=0
targets=()
for arg in "$@"; do
    case "$arg" in
    --merge) merge=1 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $arg" >&2; exit 2 ;;
    *)
        [ -f "fuzz/fuzz_$arg.c" ] || { echo "fuzz: no target $arg (have: ${all[*]})" >&2; exit 2; }
        targets+=("$arg")
        ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
seconds="${FUZZ_SECONDS:-60}"
work="${FUZZ_WORKDIR:-$(mktemp -d /tmp/h2pg-fuzz.XXXXXX)}"
mkdir -p "$work"

scripts/deps.sh fuzz
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DH2PG_FUZZ=ON -DH2PG_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

echo "fuzz: ${seconds}s per target, scratch directory $work"
summary=()
crashed=()
for t in "${targets[@]}"; do
    dir="$work/$t"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
    log="$dir/fuzz.log"
    echo "== $t"
    status=0
    # new inputs go to the first directory only; the others are read
    "build-fuzz/fuzz/fuzz_$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" "$dir/corpus" "fuzz/corpus/$t" "fuzz/regressions/$t" \
        >"$log" 2>&1 || status=$?
    last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")"
    line="$(printf '%-10s execs %-10s execs/s %-7s cov %-5s ft %-6s corpus %s' "$t" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}")"
    if [ "$status" -ne 0 ]; then
        input="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        line="$line  CRASHED: ${input:-see $log}"
        crashed+=("$t")
        grep -E 'ERROR: |check failed|runtime error|SUMMARY' "$log" | head -5 | sed 's/^/    /' || true
    fi
    echo "$line"
    summary+=("$line")
    if [ "$merge" = 1 ] && [ "$status" -eq 0 ]; then
        "build-fuzz/fuzz/fuzz_$t" -merge=1 "fuzz/corpus/$t" "$dir/corpus" >"$dir/merge.log" 2>&1
        echo "   merged into fuzz/corpus/$t: $(sed -n 's/^MERGE-OUTER: \([0-9]* new files.*\)/\1/p' "$dir/merge.log")"
    fi
done

echo "== summary (${seconds}s per target; logs and new inputs in $work)"
printf '%s\n' "${summary[@]}"
if [ ${#crashed[@]} -gt 0 ]; then
    echo "fuzz: crashed: ${crashed[*]} (keep each input in fuzz/regressions/<target>/)" >&2
    exit 1
fi
