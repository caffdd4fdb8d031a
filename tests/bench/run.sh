#!/usr/bin/env bash
# tests/bench/run.sh: the pop3gw benchmark (`make bench`).
#
# Builds the gateway, the reference backend and the load generator, makes a
# mailbox in a temporary directory (10 messages of 4 KB and one of 100 MB, LF
# line ends), starts the backend and the gateway on free loopback ports and
# measures, each BENCH_RUNS times (medians reported, with the range):
#   - full POP3 sessions at c=1, 50 and 500 (rate, p50/p99/max latency,
#     errors, gateway CPU per session), and the backend's TCP connections
#     during the c=50 runs;
#   - the same webhook sequence straight to the backend over keep-alive
#     HTTP at c=50, run right after each gateway c=50 run: the ratio of the
#     two in the same round is the gateway's own overhead;
#   - RETR of the 100 MB message: throughput and gateway RSS growth;
#   - gateway RSS per idle logged-in connection at 1,000, 5,000, 15,000;
#   - what the gateway does when it runs out of descriptors;
#   - slow readers: the c=50 session load alone, then again while
#     BENCH_STALLED (200) clients each hold a RETR of the 20 MB message
#     unread (sessions/s and p99 of both), and first the gateway's RSS per
#     stalled reader, with the stalled readers alone.
# Everything runs on this machine's loopback; load, gateway and backend share
# its cores. Prints one table; stops everything and cleans up.
#
# Settings (environment): BENCH_WORKERS (2), BENCH_POOL (8, per worker),
# BENCH_BE_THREADS (2), BENCH_RUNS (3), BENCH_SECS (5), BENCH_IDLE
# ("1000 5000 15000"), BENCH_STALLED (200), BENCH_STALL_SETTLE (15 s),
# BENCH_SECTIONS ("sessions retr idle fd slow"),
# BENCH_QUICK=1 (1 run, shorter), BENCH_RAW=FILE (keep every loadgen result
# line), and those of lib.sh: BENCH_NO_MAKE=1, BENCH_GW=, BENCH_BE=.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECS:-5}
IDLE_COUNTS=${BENCH_IDLE:-1000 5000 15000}
SECTIONS=${BENCH_SECTIONS:-sessions retr idle fd slow}
STALLED=${BENCH_STALLED:-200}
STALL_SETTLE=${BENCH_STALL_SETTLE:-15}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    RUNS=1
    SECS=2
fi

bench_setup
RAW=${BENCH_RAW:-$TMP/raw.txt}
: >"$RAW"

# kv LINE KEY: the value of KEY=... in a loadgen result line.
kv() { printf '%s\n' "$1" | awk -v k="$2=" '{for (i = 1; i <= NF; i++) if (index($i, k) == 1) {print substr($i, length(k) + 1); exit}}'; }

be_conns() { "$LG" get /_stats --port="$BE_PORT" | sed -n 's/.*"connections": *\([0-9]*\).*/\1/p'; }

# Results: lists of numbers per key, space separated.
declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
range() { printf '%s\n' $1 | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {if (NR>1) printf "%s..%s", lo, hi; else printf "-"}'; }
sum() { printf '%s\n' $1 | awk '{s+=$1} END {print s+0}'; }
maxof() { printf '%s\n' $1 | sort -g | awk 'END {print $1}'; }

run_lg() {
    local out
    out=$("$LG" "$@" 2>>"$TMP/loadgen.err") || true
    printf '%s\n' "$out" >>"$RAW"
    printf '%s\n' "$out"
}

# ---- 1. sessions, and direct to the backend -------------------------------
start_backend
log "bench: backend pid $BE_PID port $BE_PORT (threads=$BE_THREADS); gateway workers=$WORKERS backend_pool=$POOL; nofile=$NOFILE"
if want sessions; then
    start_gateway
    before=$(be_conns)
    run_lg sessions --port="$GW_PORT" -c 50 -t 1 --user=$USER_NAME --pass=$USER_PASS >/dev/null # warm-up
    after=$(be_conns)
    GW_BE_CONNS=$((after - before - 1))
    for r in $(seq "$RUNS"); do
        for c in 1 50 500; do
            before=$(be_conns)
            warm=1
            [ $c = 1 ] && warm=0.5
            line=$(run_lg sessions --port="$GW_PORT" -c $c -t "$SECS" --warmup=$warm --user=$USER_NAME \
                --pass=$USER_PASS --pid="$GW_PID" --bpid="$BE_PID")
            after=$(be_conns)
            check_alive
            log "bench: round $r c=$c: $line"
            add "rate$c" "$(kv "$line" rate)"
            add "p50_$c" "$(kv "$line" p50_ms)"
            add "p99_$c" "$(kv "$line" p99_ms)"
            add "max_$c" "$(kv "$line" max_ms)"
            add "err$c" "$(kv "$line" errors)"
            add "cpu$c" "$(kv "$line" gw_cpu_us_per_session)"
            add "becpu$c" "$(kv "$line" be_cpu_us_per_session)"
            add "lgcpu$c" "$(kv "$line" lg_cpu_us_per_session)"
            d=$((after - before - 1)) # the stats request is a connection too
            GW_BE_CONNS=$((GW_BE_CONNS + d))
            if [ $c = 50 ]; then
                add "beconn50" "$d"
                # the same calls straight to the backend, in the same round
                hline=$(run_lg http --port="$BE_PORT" -c 50 -t "$SECS" --warmup=1 --user=$USER_NAME \
                    --pass=$USER_PASS --bpid="$BE_PID")
                log "bench: round $r direct: $hline"
                add "rateh" "$(kv "$hline" rate)"
                add "p50_h" "$(kv "$hline" p50_ms)"
                add "p99_h" "$(kv "$hline" p99_ms)"
                add "max_h" "$(kv "$hline" max_ms)"
                add "errh" "$(kv "$hline" errors)"
                add "becpuh" "$(kv "$hline" be_cpu_us_per_session)"
                add "lgcpuh" "$(kv "$hline" lg_cpu_us_per_session)"
                add "ratio" "$(awk -v a="$(kv "$line" rate)" -v b="$(kv "$hline" rate)" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')"
            fi
        done
    done
    stop_pid "$GW_PID"
fi

# ---- 2. RETR of 100 MB -------------------------------------------------------
# A fresh gateway each time, so that the RSS growth is not hidden by memory
# an earlier test left in its heap.
if want retr; then
    for r in $(seq "$RUNS"); do
        start_gateway
        sleep 0.3
        line=$(run_lg retr --port="$GW_PORT" --msg=$BIG --user=$USER_NAME --pass=$USER_PASS --pid="$GW_PID")
        check_alive
        log "bench: round $r retr: $line"
        add "retr" "$(kv "$line" mb_s)"
        add "retrg" "$(kv "$line" rss_growth_kb)"
        add "retrcpu" "$(kv "$line" gw_cpu_ms)"
        add "retrsecs" "$(kv "$line" secs)"
        [ -n "$(kv "$line" octets)" ] || add "retrerr" 1
        stop_pid "$GW_PID"
    done
fi

# ---- 3. idle connections ------------------------------------------------------
if want idle; then
    for n in $IDLE_COUNTS; do
        for r in $(seq "$RUNS"); do
            start_gateway
            # a few sessions first, so the backend pool and the workers'
            # start-up allocations are in the baseline, not in the
            # per-connection figure
            run_lg sessions --port="$GW_PORT" -c 2 -n 4 --user=$USER_NAME --pass=$USER_PASS >/dev/null
            sleep 0.3
            line=$(run_lg idle --port="$GW_PORT" -n "$n" -c 200 --timeout=60 --user=$USER_NAME \
                --pass=$USER_PASS --pid="$GW_PID")
            check_alive
            log "bench: round $r idle $n: $line"
            add "idle$n" "$(kv "$line" rss_per_conn_bytes)"
            add "idlein$n" "$(kv "$line" logged_in)"
            add "idleerr$n" "$(kv "$line" errors)"
            stop_pid "$GW_PID"
        done
    done
fi

# ---- 4. out of descriptors ------------------------------------------------------
# A gateway whose descriptor limit (1024, soft and hard) is below
# max_connections: 1,100 clients connect at once and try to log in within
# 5 s; then, once they have left (and 3 s later), new sessions must work.
if want fd; then
    start_gateway 1024
    lines_before=$(wc -l <"$TMP/gw.log")
    eline=$("$LG" idle --port="$GW_PORT" -n 1100 -c 1100 --timeout=5 --hold=0 --user=$USER_NAME \
        --pass=$USER_PASS --pid="$GW_PID" 2>"$TMP/fd.err") || true
    printf '%s\n' "$eline" >>"$RAW"
    check_alive
    sleep 3 # the webhook circuit breaker, if it opened, stays open for 2 s
    rline=$(run_lg sessions --port="$GW_PORT" -c 1 -n 20 --user=$USER_NAME --pass=$USER_PASS)
    [ -n "$rline" ] || rline="errors=all(the-first-session-failed)"
    FD_ALIVE=$(kill -0 "$GW_PID" 2>/dev/null && echo yes || echo no)
    # the most frequent gateway log lines and client errors (addresses
    # and ports stripped so that alike lines count together)
    FD_LOG=$(tail -n +"$((lines_before + 1))" "$TMP/gw.log" | sed 's/^.*msg=//; s/ client=[0-9.]*//; s/ connections=[0-9]*//' |
        cut -c1-100 | sort | uniq -c | sort -rn | sed -n 1,4p || true)
    FD_ERRS=$(sed 's/^loadgen: //' "$TMP/fd.err" | cut -c1-100 | sort | uniq -c | sort -rn | sed -n 1,4p || true)
    log "bench: descriptors: $eline"
    log "bench: after: $rline"
    stop_pid "$GW_PID"
fi
# ---- 5. slow readers ---------------------------------------------------------------
# The c=50 session load alone, then the same while STALLED clients each
# hold a RETR of the 20 MB message without reading (4 KB receive buffers):
# their messages must not slow anyone else down.
if want slow; then
    # After the stalled readers leave, the next run waits until the gateway
    # has closed their connections and spool files (its descriptors are
    # back to what they were) and a second more, so that freeing 4 GB of
    # spool does not land in the run that measures the load alone.
    fds() { find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
    wait_fds_back() {
        for _ in $(seq 300); do
            [ "$(fds)" -le $((FDS0 + 2)) ] && break
            sleep 0.1
        done
        sleep 1
    }
    start_gateway
    run_lg sessions --port="$GW_PORT" -c 50 -t 1 --user=$USER_NAME --pass=$USER_PASS >/dev/null # warm-up
    FDS0=$(fds)
    # Memory per stalled reader, on its own: the stalled readers alone,
    # the RSS read once every backend transfer has gone to the spool
    # (STALL_SETTLE seconds after the last +OK; 200 x 20 MB take about 5 s).
    line=$("$LG" stall --port="$GW_PORT" -n "$STALLED" -c 50 --msg=$SLOW --timeout=60 \
        --settle="$STALL_SETTLE" --hold=0 --user=$USER_NAME --pass=$USER_PASS --pid="$GW_PID" \
        2>>"$TMP/loadgen.err")
    printf '%s\n' "$line" >>"$RAW"
    log "bench: stalled readers alone: $line"
    SLOW_RSS=$(kv "$line" rss_per_conn_bytes)
    SLOW_RSS_IN=$(kv "$line" logged_in)
    check_alive
    wait_fds_back
    for r in $(seq "$RUNS"); do
        line=$(run_lg sessions --port="$GW_PORT" -c 50 -t "$SECS" --warmup=1 --user=$USER_NAME \
            --pass=$USER_PASS --pid="$GW_PID")
        log "bench: round $r slow readers, alone: $line"
        add "slow_rate_a" "$(kv "$line" rate)"
        add "slow_p99_a" "$(kv "$line" p99_ms)"
        add "slow_err" "$(kv "$line" errors)"
        # the stalled readers, in the background, held long enough for the run
        "$LG" stall --port="$GW_PORT" -n "$STALLED" -c 50 --msg=$SLOW --timeout=60 \
            --hold=$((SECS + 10)) --user=$USER_NAME --pass=$USER_PASS --pid="$GW_PID" \
            >"$TMP/stall.out" 2>>"$TMP/loadgen.err" &
        st_pid=$!
        for _ in $(seq 600); do
            [ -s "$TMP/stall.out" ] && break
            kill -0 "$st_pid" 2>/dev/null || break
            sleep 0.1
        done
        sline=$(head -n 1 "$TMP/stall.out")
        printf '%s\n' "$sline" >>"$RAW"
        log "bench: round $r stalled: $sline"
        add "slow_in" "$(kv "$sline" logged_in)"
        line=$(run_lg sessions --port="$GW_PORT" -c 50 -t "$SECS" --warmup=1 --user=$USER_NAME \
            --pass=$USER_PASS --pid="$GW_PID")
        log "bench: round $r slow readers, with $STALLED stalled: $line"
        add "slow_rate_b" "$(kv "$line" rate)"
        add "slow_p99_b" "$(kv "$line" p99_ms)"
        add "slow_err" "$(kv "$line" errors)"
        kill -TERM "$st_pid" 2>/dev/null || true
        wait "$st_pid" 2>/dev/null || true
        check_alive
        wait_fds_back
    done
    stop_pid "$GW_PID"
fi
stop_pid "$BE_PID"

# ---- the table ----------------------------------------------------------------
pass() {
    case "$1" in
    " "* | *"  "* | "" | -*) echo "-" ;; # a missing value
    *) if awk "BEGIN {exit !($1)}" 2>/dev/null; then echo "yes"; else echo "NO"; fi ;;
    esac
}
TOTAL_POOL=$((WORKERS * POOL))

echo
echo "pop3gw benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores shared by the load generator, the gateway and the backend."
echo "gateway: workers=$WORKERS backend_pool=$POOL (x$WORKERS workers = $TOTAL_POOL connections); backend: --threads=$BE_THREADS."
echo "$RUNS runs of each measurement, ${SECS} s each; medians, [min..max over runs]. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
if want sessions; then
    RATE50=$(median "${R[rate50]}")
    P99_500=$(median "${R[p99_500]}")
    RATIO=$(median "${R[ratio]}")
    ERRS=$(($(sum "${R[err1]}") + $(sum "${R[err50]}") + $(sum "${R[err500]}")))
    echo
    echo "| load | sessions/s | p50 ms | p99 ms | max ms | CPU us/session: gateway | backend | load generator | errors |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for c in 1 50 500; do
        printf '| POP3 c=%s | %s [%s] | %s | %s [%s] | %s | %s | %s | %s | %s |\n' "$c" \
            "$(median "${R[rate$c]}")" "$(range "${R[rate$c]}")" "$(median "${R[p50_$c]}")" \
            "$(median "${R[p99_$c]}")" "$(range "${R[p99_$c]}")" "$(median "${R[max_$c]}")" \
            "$(median "${R[cpu$c]}")" "$(median "${R[becpu$c]}")" "$(median "${R[lgcpu$c]}")" \
            "$(sum "${R[err$c]}")"
    done
    printf '| direct HTTP c=50 | %s [%s] | %s | %s [%s] | %s | - | %s | %s | %s |\n' \
        "$(median "${R[rateh]}")" "$(range "${R[rateh]}")" "$(median "${R[p50_h]}")" \
        "$(median "${R[p99_h]}")" "$(range "${R[p99_h]}")" "$(median "${R[max_h]}")" \
        "$(median "${R[becpuh]}")" "$(median "${R[lgcpuh]}")" "$(sum "${R[errh]}")"
fi
echo
echo "| measurement | result | target | met |"
echo "| --- | --- | --- | --- |"
if want sessions; then
    echo "| sessions/s at c=50 | $RATE50 [$(range "${R[rate50]}")] | >= 5000 | $(pass "$RATE50 >= 5000") |"
    echo "| p99 at c=500 | $P99_500 ms [$(range "${R[p99_500]}")] | < 200 ms | $(pass "$P99_500 < 200") |"
    echo "| gateway / direct rate at c=50 (same round) | $RATIO [$(range "${R[ratio]}")] | >= 0.70 | $(pass "$RATIO >= 0.70") |"
    echo "| errors in all POP3 session runs | $ERRS | 0 | $(pass "$ERRS == 0") |"
    echo "| backend TCP connections opened during each c=50 run | $(printf '%s ' ${R[beconn50]})| <= $TOTAL_POOL | $(pass "$(maxof "${R[beconn50]}") <= $TOTAL_POOL") |"
    echo "| backend TCP connections opened by the gateway in all its session runs, warm-up included | $GW_BE_CONNS | <= $TOTAL_POOL | $(pass "$GW_BE_CONNS <= $TOTAL_POOL") |"
fi
if want idle; then
    for n in $IDLE_COUNTS; do
        v=$(median "${R[idle$n]:-}")
        t="-"
        m="-"
        if [ "$n" = 15000 ]; then
            t="<= 8192 B"
            m=$(pass "$v <= 8192")
        fi
        echo "| gateway RSS per idle logged-in connection, $n connections | $v B [$(range "${R[idle$n]:-}")]; logged in: $(printf '%s ' ${R[idlein$n]:-})| $t | $m |"
    done
fi
if want retr; then
    RETR=$(median "${R[retr]}")
    RETRG=$(median "${R[retrg]}")
    echo "| RETR 100 MB throughput | $RETR MB/s [$(range "${R[retr]}")]; gateway CPU $(median "${R[retrcpu]}") ms in $(median "${R[retrsecs]}") s | >= 1500 MB/s | $(pass "$RETR >= 1500") |"
    echo "| gateway RSS growth during RETR 100 MB | $RETRG KB [$(range "${R[retrg]}")] | < 4096 KB | $(pass "$RETRG < 4096") |"
fi
if want slow; then
    P99A=$(median "${R[slow_p99_a]}")
    P99B=$(median "${R[slow_p99_b]}")
    echo "| c=50 sessions alone | $(median "${R[slow_rate_a]}")/s [$(range "${R[slow_rate_a]}")], p99 $P99A ms [$(range "${R[slow_p99_a]}")] | - | - |"
    echo "| c=50 sessions with $STALLED stalled readers of 20 MB | $(median "${R[slow_rate_b]}")/s [$(range "${R[slow_rate_b]}")], p99 $P99B ms [$(range "${R[slow_p99_b]}")]; stalled: $(printf '%s ' ${R[slow_in]})| p99 <= 1.5 x alone | $(pass "$P99B <= 1.5 * $P99A") |"
    echo "| gateway RSS per stalled reader of 20 MB ($SLOW_RSS_IN logged in, alone, read $STALL_SETTLE s after the last +OK) | $SLOW_RSS B | <= 131072 B | $(pass "$SLOW_RSS <= 131072") |"
    echo "| errors in the slow-reader session runs | $(sum "${R[slow_err]}") | 0 | $(pass "$(sum "${R[slow_err]}") == 0") |"
fi
if want fd; then
    echo
    echo "Out of descriptors (gateway limit 1024, max_connections=$GW_MAXCONN; 1,100 clients at once, 5 s to log in):"
    echo "  logged in: $(kv "$eline" logged_in); timed out (no greeting or reply): $(kv "$eline" err_timeout); refused/closed: $(($(kv "$eline" err_proto) + $(kv "$eline" err_eof) + $(kv "$eline" err_connect)))"
    echo "  gateway alive afterwards: $FD_ALIVE; 20 new sessions after the clients left: errors=$(kv "$rline" errors)"
    echo "  gateway log:"
    printf '%s\n' "$FD_LOG" | sed 's/^/    /'
    echo "  client errors:"
    printf '%s\n' "$FD_ERRS" | sed 's/^/    /'
fi
if [ -n "${BENCH_RAW:-}" ]; then
    echo
    echo "raw results: $RAW"
fi
