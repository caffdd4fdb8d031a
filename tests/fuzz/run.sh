#!/bin/sh
# Runs the libFuzzer targets built by `make fuzz-build` (build/fuzz/fuzz_NAME).
#
#   sh tests/fuzz/run.sh fuzz SECONDS NAME...   fuzz each NAME for SECONDS,
#       then add the inputs that reach new edges to tests/fuzz/corpus/NAME/
#   sh tests/fuzz/run.sh cmin 0 NAME...         shrink tests/fuzz/corpus/NAME/
#       to a minimal set with the same edge coverage (seed-* and crash-* stay)
#
# A crash, leak or timeout is written straight into the corpus directory
# (crash-SHA1, leak-SHA1, timeout-SHA1), so that `make test` replays it from
# then on; the run goes on with the next target and exits 1 at the end.
# Past crashes are never given to libFuzzer itself (it would stop on them
# while loading the corpus): it works on copies of the other files.
set -u
cd "$(dirname "$0")/../.."
mode=$1
secs=$2
shift 2
fail=0

# Copies the corpus files that are not past failures into directory $2.
copy_clean() {
    mkdir -p "$2"
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        case ${f##*/} in
        crash-* | leak-* | timeout-* | oom-*) ;;
        *) cp "$f" "$2/" ;;
        esac
    done
}

# libFuzzer with the session's log lines (fd 2) sent to /dev/null; libFuzzer
# and the sanitizers keep reporting on a copy of stderr.
run() {
    FUZZ_LOG=1 "$@" -close_fd_mask=2
}

for t in "$@"; do
    bin=build/fuzz/fuzz_$t
    corpus=tests/fuzz/corpus/$t
    work=build/fuzz/work/$t
    tmp=build/fuzz/tmp/$t
    dict=
    [ -f tests/fuzz/$t.dict ] && dict=-dict=tests/fuzz/$t.dict
    mkdir -p "$corpus"
    rm -rf "$tmp"
    case $mode in
    fuzz)
        echo "== fuzz_$t: ${secs}s"
        copy_clean "$corpus" "$work"
        if ! run "$bin" "$work" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$corpus/"; then
            echo "== fuzz_$t FAILED: see the crash-/leak-/timeout- file in $corpus" >&2
            fail=1
        fi
        # Into the repository only inputs that reach new edges (hit-count
        # buckets stay in $work for the next local run).
        copy_clean "$corpus" "$tmp"
        run "$bin" -merge=1 -use_counters=0 "$tmp" "$work" 2>&1 |
            grep -E '^MERGE-OUTER: [0-9]+ new files' || true
        cp -n "$tmp"/* "$corpus"/ 2>/dev/null || true
        ;;
    cmin)
        mkdir -p "$tmp/fresh"
        copy_clean "$corpus" "$tmp/all"
        for f in "$corpus"/seed-*; do
            [ -f "$f" ] && cp "$f" "$tmp/fresh/"
        done
        if run "$bin" -merge=1 -use_counters=0 "$tmp/fresh" "$tmp/all" >/dev/null 2>&1; then
            before=$(ls "$corpus" | wc -l)
            for f in "$corpus"/*; do
                case ${f##*/} in
                crash-* | leak-* | timeout-* | oom-*) ;;
                *) rm -f "$f" ;;
                esac
            done
            cp "$tmp/fresh"/* "$corpus"/
            echo "fuzz_$t: corpus $before -> $(ls "$corpus" | wc -l) files"
        else
            echo "fuzz_$t: merge failed; corpus left as it was" >&2
            fail=1
        fi
        ;;
    *)
        echo "usage: run.sh fuzz|cmin SECONDS NAME..." >&2
        exit 2
        ;;
    esac
done
exit $fail
