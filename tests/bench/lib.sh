# tests/bench/lib.sh: set-up shared by run.sh and profile.sh (sourced).
#
# Settings (environment): BENCH_WORKERS (2), BENCH_POOL (8, per worker),
# BENCH_BE_THREADS (2), BENCH_NO_MAKE=1 (do not run make), BENCH_GW and
# BENCH_BE (binaries to use instead of build/pop3gw, build/pop3gw-maildir).

GW=${BENCH_GW:-$ROOT/build/pop3gw}
BE=${BENCH_BE:-$ROOT/build/pop3gw-maildir}
WORKERS=${BENCH_WORKERS:-2}
POOL=${BENCH_POOL:-8}
BE_THREADS=${BENCH_BE_THREADS:-2}
USER_NAME=bench
USER_PASS=bench-pass
BIG=11  # the 100 MB message
SLOW=12 # the 20 MB message the slow readers ask for
GW_MAXCONN=20000
PIDS=()

log() { printf '%s\n' "$*" >&2; }

bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}

# Builds, makes the temporary directory, the load generator and the mailbox.
bench_setup() {
    if [ "${BENCH_NO_MAKE:-0}" != 1 ]; then
        if ! make -C "$ROOT" all >/dev/null 2>&1; then
            log "bench: 'make all' failed; using the binaries already in place"
        fi
    fi
    local b
    for b in "$GW" "$BE"; do
        [ -x "$b" ] || { log "bench: $b is missing (build it, or set BENCH_GW / BENCH_BE)"; exit 1; }
    done
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/pop3gw-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    LG=$TMP/loadgen
    ${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -o "$LG" "$ROOT/tests/bench/loadgen.c"

    # 15,000 idle clients need as many descriptors in the load generator and
    # in the gateway (which raises its own soft limit to the hard one).
    ulimit -n "$(ulimit -Hn)"
    NOFILE=$(ulimit -n)

    # The mailbox: 10 messages of 4 KB, one of 100 MB and one of 20 MB, LF line
# ends.
    MB=$TMP/mail
    mkdir -p "$MB/$USER_NAME/new" "$MB/$USER_NAME/cur" "$MB/$USER_NAME/tmp"
    printf '%s:%s\n' "$USER_NAME" "$USER_PASS" >"$MB/users"
    local i
    for i in 0 1 2 3 4 5 6 7 8 9; do
        "$LG" mkmsg "$MB/$USER_NAME/cur/100$i.M$i.bench:2,S" 4096 "$i"
    done
    "$LG" mkmsg "$MB/$USER_NAME/cur/2000.M99.bench:2,S" 104857600 99
    # and one of 20 MB for the slow readers
    "$LG" mkmsg "$MB/$USER_NAME/cur/3000.M98.bench:2,S" 20971520 98

    # max_connections_per_ip=0 disables the per-address limit where the
    # config accepts it; otherwise the largest value stands in for "none".
    PER_IP=0
    if ! "$GW" --check-config --listen=127.0.0.1:1 --backend_url=http://127.0.0.1:1 \
        --max_connections_per_ip=0 >/dev/null 2>&1; then
        PER_IP=10000000
    fi
    GW_OPT=() # more gateway options, for one script's needs
    # The spool in the benchmark's own directory, where the gateway has one.
    SPOOL_OPT=()
    mkdir -p "$TMP/spool"
    if "$GW" --check-config --listen=127.0.0.1:1 --backend_url=http://127.0.0.1:1 \
        --spool_dir="$TMP/spool" >/dev/null 2>&1; then
        SPOOL_OPT=(--spool_dir="$TMP/spool")
    fi
}

# A loopback port nothing listens on, below the ephemeral range.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    log "bench: no free port"
    exit 1
}

# wait_port PORT PID [TRIES]: until something accepts on PORT (PID alive).
wait_port() {
    local port=$1 pid=$2 tries=${3:-100}
    for _ in $(seq "$tries"); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# Stops one of our processes (TERM, then KILL after 5 s).
stop_pid() {
    local p=$1 i
    if kill -TERM "$p" 2>/dev/null; then
        for i in $(seq 100); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
    local keep=()
    for i in "${PIDS[@]}"; do
        [ "$i" = "$p" ] || keep+=("$i")
    done
    PIDS=("${keep[@]}")
}

BE_PID=
BE_PORT=
start_backend() {
    "$BE" --listen=127.0.0.1:0 --root="$MB" --threads="$BE_THREADS" --quiet 2>"$TMP/be.log" &
    BE_PID=$!
    PIDS+=("$BE_PID")
    for _ in $(seq 100); do
        BE_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/be.log")
        [ -n "$BE_PORT" ] && return 0
        kill -0 "$BE_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "bench: the backend did not start:"
    cat "$TMP/be.log" >&2
    exit 1
}

GW_PID=
GW_PORT=
# start_gateway [NOFILE]: a fresh gateway, optionally under a lower
# descriptor limit (hard and soft).
start_gateway() {
    local lim=${1:-}
    GW_PORT=$(free_port)
    (
        if [ -n "$lim" ]; then ulimit -n "$lim"; fi
        exec "$GW" --listen="127.0.0.1:$GW_PORT" --backend_url="http://127.0.0.1:$BE_PORT" \
            --admin_listen= --workers="$WORKERS" --log_level=warn --backend_pool="$POOL" \
            --max_connections="$GW_MAXCONN" --max_connections_per_ip="$PER_IP" \
            --shutdown_grace=1 --hostname=bench.local "${SPOOL_OPT[@]}" "${GW_OPT[@]}"
    ) 2>>"$TMP/gw.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    if ! wait_port "$GW_PORT" "$GW_PID"; then
        log "bench: the gateway did not start:"
        tail -20 "$TMP/gw.log" >&2
        exit 1
    fi
}

check_alive() {
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        log "bench: the gateway died; its log:"
        tail -30 "$TMP/gw.log" >&2
        exit 1
    fi
}
