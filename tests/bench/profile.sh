#!/usr/bin/env bash
# tests/bench/profile.sh: where the gateway's CPU goes at c=50.
#
# Starts the reference backend and the gateway as run.sh does, drives full
# POP3 sessions at c=50 with the load generator and profiles the gateway:
#   perf      perf record -g (cpu-clock: this VM has no hardware counters)
#             for BENCH_PROF_SECS (8) seconds; prints the split by library
#             and the top functions, self and with callees.
#   callgrind the gateway under valgrind --tool=callgrind (workers=1) for
#             BENCH_PROF_SESSIONS (1000) sessions at c=10: user-space
#             instructions per session and per function, free of the noise
#             of a shared machine (kernel time is not counted).
#   syscalls  strace -c -f on the gateway during 2000 sessions at c=50:
#             system calls per session, by kind.
# Usage: tests/bench/profile.sh [perf|callgrind|syscalls|both|all]
# (default both: perf and callgrind).
# BENCH_PROF_OUT=DIR keeps perf.data, the callgrind output and the reports.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"
WHAT=${1:-both}
SECS=${BENCH_PROF_SECS:-8}
NSESS=${BENCH_PROF_SESSIONS:-1000}

bench_setup
OUT=${BENCH_PROF_OUT:-$TMP/prof}
mkdir -p "$OUT"
start_backend

if [ "$WHAT" = perf ] || [ "$WHAT" = both ] || [ "$WHAT" = all ]; then
    command -v perf >/dev/null || { log "profile: perf is not installed"; exit 1; }
    start_gateway
    "$LG" sessions --port="$GW_PORT" -c 50 -t 1 --user="$USER_NAME" --pass="$USER_PASS" >/dev/null
    "$LG" sessions --port="$GW_PORT" -c 50 -t $((SECS + 3)) --user="$USER_NAME" --pass="$USER_PASS" \
        --pid="$GW_PID" --bpid="$BE_PID" >"$OUT/load.txt" &
    LOAD=$!
    sleep 1
    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$GW_PID" -o "$OUT/perf.data" \
        -- sleep "$SECS" 2>"$OUT/perf-record.log" >/dev/null
    wait "$LOAD" || true
    echo "== load during the profile"
    cat "$OUT/load.txt"
    echo
    echo "== gateway CPU by library (perf, self time)"
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep '%' | sed -n 1,12p || true
    echo
    echo "== top functions, self time (perf)"
    perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep '%' | sed -n 1,30p || true
    echo
    echo "== gateway and library entry points, with callees (perf)"
    perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep '%' | grep -v '0x0000' |
        grep -E 'wh_|conn_|pop3_|json|curl_|evbuffer_write|evbuffer_read|epoll|bufferevent_write|RAND_bytes|accept|malloc|free' |
        sed -n 1,45p || true
    stop_pid "$GW_PID"
fi

if [ "$WHAT" = syscalls ] || [ "$WHAT" = all ]; then
    command -v strace >/dev/null || { log "profile: strace is not installed"; exit 1; }
    start_gateway
    "$LG" sessions --port="$GW_PORT" -c 50 -t 1 --user="$USER_NAME" --pass="$USER_PASS" >/dev/null
    strace -c -f -p "$GW_PID" -o "$OUT/strace.txt" 2>/dev/null &
    ST=$!
    sleep 1
    "$LG" sessions --port="$GW_PORT" -c 50 -n 2000 --timeout=120 --user="$USER_NAME" \
        --pass="$USER_PASS" >"$OUT/load-strace.txt"
    sleep 0.5
    kill -INT "$ST" 2>/dev/null || true
    wait "$ST" 2>/dev/null || true
    echo "== system calls per session (strace -c, 2000 sessions at c=50)"
    cat "$OUT/load-strace.txt"
    awk '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%-14s %6.2f per session\n", $NF, $4 / 2000}' \
        "$OUT/strace.txt" || true
    echo
    stop_pid "$GW_PID"
fi

if [ "$WHAT" = callgrind ] || [ "$WHAT" = both ] || [ "$WHAT" = all ]; then
    command -v valgrind >/dev/null || { log "profile: valgrind is not installed"; exit 1; }
    GW_PORT=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        "$GW" --listen="127.0.0.1:$GW_PORT" --backend_url="http://127.0.0.1:$BE_PORT" \
        --admin_listen= --workers=1 --log_level=warn --backend_pool="$POOL" \
        --max_connections=20000 --max_connections_per_ip="$PER_IP" --shutdown_grace=1 \
        --hostname=bench.local 2>"$OUT/valgrind.log" &
    VG=$!
    PIDS+=("$VG")
    wait_port "$GW_PORT" "$VG" 400 || { log "profile: the gateway did not start under valgrind"; exit 1; }
    "$LG" sessions --port="$GW_PORT" -c 10 -n 100 --timeout=120 --user="$USER_NAME" --pass="$USER_PASS" >/dev/null
    callgrind_control -z "$VG" >/dev/null
    "$LG" sessions --port="$GW_PORT" -c 10 -n "$NSESS" --timeout=120 --user="$USER_NAME" \
        --pass="$USER_PASS" >"$OUT/load-callgrind.txt"
    callgrind_control -d "$VG" >/dev/null
    sleep 1
    stop_pid "$VG"
    f=$OUT/callgrind.out.1 # the dump taken right after the measured sessions
    total=$(callgrind_annotate "$f" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
    echo "== callgrind: $NSESS sessions at c=10, workers=1"
    cat "$OUT/load-callgrind.txt"
    echo "user-space instructions per session: $((total / NSESS))"
    echo
    echo "== inclusive instructions by function (callgrind)"
    callgrind_annotate --inclusive=yes "$f" 2>/dev/null | sed -n '/file:function/,$p' |
        grep -E 'pop3gw\]|curl_|json_|malloc|calloc|free|vsnprintf|RAND_bytes|event_base_loop' |
        sed 's/ \[[^]]*\]$//; s|/[^ ]*/\([a-z_]*/[a-z_0-9]*\.[ch]:\)|\1|' | sed -n 1,50p || true
fi
