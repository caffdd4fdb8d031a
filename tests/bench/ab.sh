#!/usr/bin/env bash
# tests/bench/ab.sh: two gateway binaries compared in A/B pairs.
#
#   tests/bench/ab.sh OLD_BINARY NEW_BINARY
#
# The machine's speed drifts by 20-30% over minutes, so two runs made at
# different times say little. This starts one reference backend, then for
# BENCH_ROUNDS (3) rounds runs each binary in turn (A, B, then B, A in the
# next round) against it, with a fresh gateway per measurement:
#   - RETR of a 10 MiB and of the 100 MB message by a fast reader (MB/s,
#     gateway CPU);
#   - c=50 full POP3 sessions for BENCH_SECS (5) seconds (sessions/s, p99,
#     gateway CPU per session);
#   - with "tls" in BENCH_AB_SECTIONS: RETR of the same two messages over
#     STLS by curl (MB/s, gateway CPU), with a throwaway certificate.
# Prints every measurement and the range for each binary. Uses lib.sh's
# mailbox (and adds the 10 MiB message); BENCH_AB_SECTIONS ("retr sessions";
# "tls" needs curl and openssl) picks what runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
A=$(readlink -f "$1")
B=$(readlink -f "$2")
# shellcheck source=tests/bench/lib.sh
BENCH_GW=$B BENCH_NO_MAKE=1 . "$ROOT/tests/bench/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECS:-5}
SECTIONS=${BENCH_AB_SECTIONS:-retr sessions}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }

bench_setup
TEN=13 # a 10 MiB message, after the ones lib.sh makes
"$LG" mkmsg "$MB/$USER_NAME/cur/4000.M97.bench:2,S" 10485760 97
start_backend
if want tls; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -keyout "$TMP/tls.key" -out "$TMP/tls.crt" 2>/dev/null
fi
cpu_ms() { awk '{print ($14 + $15) * 10}' "/proc/$1/stat"; } # at 100 ticks/s
kv() { printf '%s\n' "$1" | awk -v k="$2=" '{for (i = 1; i <= NF; i++) if (index($i, k) == 1) {print substr($i, length(k) + 1); exit}}'; }
declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
range() { printf '%s\n' $1 | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s..%s", lo, hi}'; }

measure() { # NAME BINARY
    local name=$1 line
    GW=$2
    SPOOL_OPT=() # the spool where the binary knows the key
    if "$GW" --check-config --listen=127.0.0.1:1 --backend_url=http://127.0.0.1:1 \
        --spool_dir="$TMP/spool" >/dev/null 2>&1; then
        SPOOL_OPT=(--spool_dir="$TMP/spool")
    fi
    if want retr; then
        for m in $TEN $BIG; do
            start_gateway
            sleep 0.3
            line=$("$LG" retr --port="$GW_PORT" --msg=$m --user=$USER_NAME --pass=$USER_PASS --pid="$GW_PID")
            check_alive
            log "ab: $name retr msg $m: $line"
            add "$name.retr$m" "$(kv "$line" mb_s)"
            add "$name.retrcpu$m" "$(kv "$line" gw_cpu_ms)"
            stop_pid "$GW_PID"
        done
    fi
    if want tls; then
        GW_OPT=(--tls_cert="$TMP/tls.crt" --tls_key="$TMP/tls.key")
        for m in $TEN $BIG; do
            start_gateway
            sleep 0.3
            local c0 c1 speed
            c0=$(cpu_ms "$GW_PID")
            speed=$(curl -s --ssl-reqd -k -u "$USER_NAME:$USER_PASS" -o /dev/null \
                -w '%{speed_download}' "pop3://127.0.0.1:$GW_PORT/$m")
            c1=$(cpu_ms "$GW_PID")
            check_alive
            log "ab: $name tls retr msg $m: $speed B/s, gateway CPU $((c1 - c0)) ms"
            add "$name.tls$m" "$(awk -v s="$speed" 'BEGIN {printf "%.0f", s / 1e6}')"
            add "$name.tlscpu$m" "$((c1 - c0))"
            stop_pid "$GW_PID"
        done
        GW_OPT=()
    fi
    if want sessions; then
        start_gateway
        "$LG" sessions --port="$GW_PORT" -c 50 -t 1 --user=$USER_NAME --pass=$USER_PASS >/dev/null
        line=$("$LG" sessions --port="$GW_PORT" -c 50 -t "$SECS" --warmup=1 --user=$USER_NAME \
            --pass=$USER_PASS --pid="$GW_PID")
        check_alive
        log "ab: $name sessions: $line"
        add "$name.rate" "$(kv "$line" rate)"
        add "$name.p99" "$(kv "$line" p99_ms)"
        add "$name.cpu" "$(kv "$line" gw_cpu_us_per_session)"
        stop_pid "$GW_PID"
    fi
}

for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        measure A "$A"
        measure B "$B"
    else
        measure B "$B"
        measure A "$A"
    fi
done
stop_pid "$BE_PID"

echo
echo "A/B, $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS rounds; A = $A, B = $B"
echo "| measurement | A | B |"
echo "| --- | --- | --- |"
if want retr; then
    echo "| RETR 10 MiB, MB/s | $(range "${R[A.retr$TEN]}") | $(range "${R[B.retr$TEN]}") |"
    echo "| RETR 10 MiB, gateway CPU ms | $(range "${R[A.retrcpu$TEN]}") | $(range "${R[B.retrcpu$TEN]}") |"
    echo "| RETR 100 MB, MB/s | $(range "${R[A.retr$BIG]}") | $(range "${R[B.retr$BIG]}") |"
    echo "| RETR 100 MB, gateway CPU ms | $(range "${R[A.retrcpu$BIG]}") | $(range "${R[B.retrcpu$BIG]}") |"
fi
if want tls; then
    echo "| RETR 10 MiB over STLS, MB/s | $(range "${R[A.tls$TEN]}") | $(range "${R[B.tls$TEN]}") |"
    echo "| RETR 10 MiB over STLS, gateway CPU ms | $(range "${R[A.tlscpu$TEN]}") | $(range "${R[B.tlscpu$TEN]}") |"
    echo "| RETR 100 MB over STLS, MB/s | $(range "${R[A.tls$BIG]}") | $(range "${R[B.tls$BIG]}") |"
    echo "| RETR 100 MB over STLS, gateway CPU ms | $(range "${R[A.tlscpu$BIG]}") | $(range "${R[B.tlscpu$BIG]}") |"
fi
if want sessions; then
    echo "| c=50 sessions/s | $(range "${R[A.rate]}") | $(range "${R[B.rate]}") |"
    echo "| c=50 p99 ms | $(range "${R[A.p99]}") | $(range "${R[B.p99]}") |"
    echo "| c=50 gateway CPU us/session | $(range "${R[A.cpu]}") | $(range "${R[B.cpu]}") |"
fi
