#!/usr/bin/env bash
# make docker-test: builds the pop3gw container images and runs them for real.
#
#  1. Installs Debian's docker.io and debootstrap when they are missing.
#  2. Builds a bookworm minbase root with debootstrap from the Debian mirror
#     this machine's apt uses (cached as build/docker-test/*.tar) and imports
#     it as debian:bookworm-slim, so no container registry is needed.
#  3. Starts a private dockerd (own data root, exec root and socket; no
#     iptables changes, no docker0), stopped by its PID on exit.
#  4. Builds docker/Dockerfile (the gateway, the maildir demo backend and the
#     HAProxy stage), apt inside the build using the same mirror.
#  5. Runs the gateway as its non-root user with the reference backend, both
#     reading their secrets from files mounted at /run/secrets, and reads a
#     message with curl over STLS (pop3://) and implicit TLS (pop3s://);
#     checks tls-only refuses a clear-text login, the admin token from its
#     file, the HEALTHCHECK, the capability that binds port 110, no secret
#     in the log, and a clean stop on SIGTERM.
#  6. Runs docker/compose.yaml (HAProxy with PROXY v2 in front of two
#     gateways) when a compose tool is at hand, and reads mail through it.
#
# Where docker, dockerd or debootstrap cannot run here, it prints a loud
# "SKIP: reason" and exits 0. Every container, network, mount and process it
# made is removed on exit, failure included.
#
# Environment:
#   POP3GW_DEBIAN_MIRROR    Debian mirror to use (default: from apt's sources)
#   POP3GW_DOCKER_CACHE     cache folder (default: build/docker-test)
#   POP3GW_DOCKER_COMPOSE=0 leave out the compose part
#   POP3GW_DOCKER_KEEP=1    keep the private dockerd's folder for a look after a failure
#   POP3GW_DOCKER_TMPFS=0   build on disk, not in memory (tmpfs spares dpkg's fsyncs:
#                           the debootstrap and the image build take a fraction of the time)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
CACHE=${POP3GW_DOCKER_CACHE:-$ROOT/build/docker-test}
SUITE=bookworm
START=$(date +%s)
SECRET=whsec_ZJ/o0rh/aECC4aYggRr+LyWaZgkSDYpq
T=""
DOCKERD_PID=""
NETWORKS=""
COMPOSE=()
COMPOSE_UP=0
COMPOSE_PROJECT=p3gwdemo-$$
# BuildKit builds independent stages in parallel and only those a target
# needs; it uses the imported base image and fetches no frontend image.
export DOCKER_BUILDKIT=1

elapsed() { echo $(($(date +%s) - START)); }
log() { printf '[docker-test %4ss] %s\n' "$(elapsed)" "$*"; }
banner() {
    echo
    echo "########################################################################"
    printf '#### %s\n' "$@"
    echo "########################################################################"
    echo
}
skip() {
    banner "SKIP: $*" "(make docker-test could not run here; nothing was tested)"
    exit 0
}
fail() {
    banner "FAIL: $*"
    exit 1
}

# ---------------------------------------------------------------- clean-up
umount_under() { # mounts on and under a folder (overlays, netns, tmpfs), deepest first
    local m
    for m in $(awk -v t="$1" 'index($2 "/", t "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null
    done
}
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    set +e
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        if [ $rc -ne 0 ]; then
            log "failure: container logs follow"
            for c in $(dk ps -aq 2>/dev/null); do
                echo "---- $(dk inspect -f '{{.Name}}' "$c" 2>/dev/null)"
                dk logs --tail 40 "$c" 2>&1 | sed 's/^/    /'
            done
        fi
        if [ $COMPOSE_UP -eq 1 ]; then
            compose down -v --remove-orphans -t 5 >/dev/null 2>&1
        fi
        ids=$(dk ps -aq 2>/dev/null)
        [ -z "$ids" ] || dk rm -f -v $ids >/dev/null 2>&1
        NETWORKS="$NETWORKS $(dk network ls -q --filter type=custom 2>/dev/null)"
        for n in $(dk network ls -q --filter type=custom 2>/dev/null); do
            dk network rm "$n" >/dev/null 2>&1
        done
        log "stopping the private dockerd (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    if [ -n "$T" ] && [ -d "$T" ]; then
        # containerd started by that dockerd, and any shim of it still alive:
        # the processes whose command line names our private folder.
        for pid in $(cat "$T/exec/containerd/containerd.pid" 2>/dev/null) \
            $(grep -l -s -F "$T" /proc/[0-9]*/cmdline | cut -d/ -f3); do
            [ "$pid" != "$$" ] && kill -KILL "$pid" 2>/dev/null
        done
        # Bridges of the networks it made (they outlive the daemon).
        for n in $NETWORKS; do
            ip link del "br-${n:0:12}" >/dev/null 2>&1
        done
        umount_under "$T"
        if [ "${POP3GW_DOCKER_KEEP:-0}" = 1 ]; then
            log "kept $T"
        else
            rm -rf --one-file-system "$T"
        fi
    fi
    if [ -n "${ROOTFS:-}" ] && [ -d "$ROOTFS" ]; then
        umount_under "$ROOTFS"
        rm -rf --one-file-system "$ROOTFS"
    fi
    log "done in $(elapsed) s (exit $rc)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- prerequisites
[ "$(uname -s)" = Linux ] || skip "Docker engine tests need Linux"
[ "$(id -u)" -eq 0 ] || skip "a private dockerd and debootstrap need root (CI runs as root)"

install_pkgs() {
    command -v apt-get >/dev/null 2>&1 || return 1
    log "installing $* (apt-get)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >"$CACHE/apt-install.log" 2>&1
}
mkdir -p "$CACHE"
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    install_pkgs "${missing[@]}" ||
        skip "cannot install ${missing[*]}: $(tail -n 3 "$CACHE/apt-install.log" 2>/dev/null | tr '\n' ' ')"
fi
command -v dockerd >/dev/null 2>&1 || skip "dockerd not found after installing docker.io"
command -v debootstrap >/dev/null 2>&1 || skip "debootstrap not found"
# The client that came with this dockerd (another docker may be first on PATH).
DOCKER=docker
if [ -x "$(dirname "$(command -v dockerd)")/../bin/docker" ]; then
    DOCKER=$(cd "$(dirname "$(command -v dockerd)")/../bin" && pwd)/docker
fi
command -v "$DOCKER" >/dev/null 2>&1 || skip "no docker client found"
dk() { "$DOCKER" "$@"; }

# ---------------------------------------------------------------- the Debian mirror
# The mirror apt uses on this machine, for debootstrap and for apt inside the
# image build. apt's own view first (any sources format), then the files.
mirror_from_apt() {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
        sort -u
}
find_mirrors() {
    local targets
    targets=$(mirror_from_apt)
    if [ -z "$targets" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        targets=$(mirror_from_apt)
    fi
    MIRROR=$(awk -v s="$SUITE" '$2 == s {print $1; exit}' <<<"$targets")
    SECURITY=$(awk -v s="$SUITE-security" '$2 == s {print $1; exit}' <<<"$targets")
    if [ -z "$MIRROR" ]; then
        # Another Debian release on the host: its archive also serves bookworm.
        MIRROR=$(awk '$2 !~ /-security$/ && $1 ~ /\/debian\/?$/ {print $1; exit}' <<<"$targets")
    fi
    if [ -z "$SECURITY" ]; then
        SECURITY=$(awk '$2 ~ /-security$/ && $1 ~ /\/debian-security\/?$/ {print $1; exit}' <<<"$targets")
    fi
}
MIRROR=${POP3GW_DEBIAN_MIRROR:-}
SECURITY=${POP3GW_DEBIAN_SECURITY_MIRROR:-}
[ -n "$MIRROR" ] || find_mirrors
[ -n "$MIRROR" ] || skip "no Debian mirror in apt's sources (set POP3GW_DEBIAN_MIRROR)"
MIRROR=${MIRROR%/}
SECURITY=${SECURITY%/}
curl -fsS -o /dev/null --max-time 20 "$MIRROR/dists/$SUITE/Release" ||
    skip "the Debian mirror $MIRROR does not answer for $SUITE"
if [ -n "$SECURITY" ] && ! curl -fsS -o /dev/null --max-time 20 "$SECURITY/dists/$SUITE-security/Release"; then
    SECURITY=""
fi
# An HTTP proxy that apt is configured with applies to debootstrap and the build too.
APT_PROXY=""
eval "$(apt-config shell APT_PROXY Acquire::http::Proxy 2>/dev/null)" || true
BUILD_PROXY=()
if [ -n "$APT_PROXY" ] && [ "$APT_PROXY" != DIRECT ]; then
    export http_proxy=$APT_PROXY
    BUILD_PROXY=(--build-arg "http_proxy=$APT_PROXY")
fi
log "Debian mirror: $MIRROR${SECURITY:+ (security: $SECURITY)}${APT_PROXY:+ via $APT_PROXY}"

# ---------------------------------------------------------------- base image tarball
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
BASE_TAR=$CACHE/debian-$SUITE-minbase-$ARCH.tar
if [ -s "$BASE_TAR" ]; then
    log "base root from cache: $BASE_TAR"
else
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    if [ "${POP3GW_DOCKER_TMPFS:-1}" = 1 ]; then
        mount -t tmpfs -o size=2g,mode=0755 p3gw-rootfs "$ROOTFS" || true
    fi
    log "debootstrap --variant=minbase $SUITE (about 2 minutes, cached afterwards)"
    if ! timeout 900 debootstrap --variant=minbase --arch="$ARCH" "$SUITE" "$ROOTFS" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 15 "$CACHE/debootstrap.log" >&2
        skip "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    # Slim it down as Debian's -slim images are: no apt lists or package cache,
    # no documentation, man pages or translations, now or in later installs.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
        "$ROOTFS"/var/log/* "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname
    find "$ROOTFS"/usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
    tar --numeric-owner -C "$ROOTFS" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    umount_under "$ROOTFS"
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
    log "base root cached: $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
fi

# ---------------------------------------------------------------- private dockerd
# Short paths: containerd's sockets live under the exec root.
T=$(mktemp -d /tmp/p3gwdk.XXXXXX)
if [ "${POP3GW_DOCKER_TMPFS:-1}" = 1 ]; then
    mkdir "$T/data"
    mount -t tmpfs -o size=6g,mode=0710 p3gw-docker "$T/data" || true
fi
echo '{}' >"$T/daemon.json"
log "starting a private dockerd in $T"
dockerd --config-file="$T/daemon.json" --data-root="$T/data" --exec-root="$T/exec" \
    --host="unix://$T/docker.sock" --pidfile="$T/dockerd.pid" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --log-level=warn >"$T/dockerd.log" 2>&1 &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$T/docker.sock
for _ in $(seq 1 60); do
    dk version >/dev/null 2>&1 && break
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
        DOCKERD_PID=""
        tail -n 15 "$T/dockerd.log" >&2
        skip "dockerd exited at start: $(tail -n 1 "$T/dockerd.log")"
    fi
    sleep 1
done
dk version >/dev/null 2>&1 || skip "dockerd did not answer within 60 s: $(tail -n 1 "$T/dockerd.log")"
log "dockerd $(dk version -f '{{.Server.Version}}') up, storage driver $(dk info -f '{{.Driver}}')"

log "importing the base root as debian:$SUITE-slim"
dk import --change 'CMD ["bash"]' "$BASE_TAR" "debian:$SUITE-slim" >/dev/null
dk run --rm --network none "debian:$SUITE-slim" true >"$T/run-check.log" 2>&1 ||
    skip "dockerd cannot run a container here: $(tail -n 1 "$T/run-check.log")"

# ---------------------------------------------------------------- build
build() { # build TARGET TAG
    local target=$1 tag=$2 t0
    t0=$(elapsed)
    tar -C "$ROOT" -cf - Makefile VERSION lib gateway webhook admin backends/maildir docker |
        timeout 900 "$DOCKER" build -f docker/Dockerfile --network=host --progress=plain \
            --build-arg "DEBIAN_MIRROR=$MIRROR" --build-arg "DEBIAN_SECURITY_MIRROR=$SECURITY" \
            "${BUILD_PROXY[@]}" --target "$target" -t "$tag" - >"$CACHE/build-$target.log" 2>&1 || {
        tail -n 40 "$CACHE/build-$target.log" >&2
        fail "docker build --target $target failed (log: $CACHE/build-$target.log)"
    }
    log "built $tag in $(($(elapsed) - t0)) s"
}
t0=$(elapsed)
log "docker build: the gateway, the maildir demo backend, HAProxy"
build runtime pop3gw:latest
build maildir pop3gw-maildir:latest
build haproxy pop3gw-haproxy:latest
log "images built in $(($(elapsed) - t0)) s: $(dk images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep pop3gw | tr '\n' ' ')"

# The runtime image: non-root, the capability, only what it needs.
[ "$(dk inspect -f '{{.Config.User}}' pop3gw:latest)" = 10110:10110 ] || fail "image user is not 10110"
case "$(dk inspect -f '{{json .Config.Healthcheck}}' pop3gw:latest)" in
*'"--health"'*) ;;
*) fail "image has no HEALTHCHECK with pop3gw --health" ;;
esac
extra=$(dk run --rm --network none --entrypoint sh pop3gw:latest -c \
    'for t in gcc cc make curl wget; do command -v $t; done; ls -d /src 2>/dev/null; true' 2>&1 | tr '\n' ' ')
case "$extra" in
*gcc* | *make* | *curl* | *wget* | *src*) fail "the runtime image holds build or fetch tools: $extra" ;;
esac

# ---------------------------------------------------------------- run
CERTS=$T/certs
mkdir -p "$CERTS"
dk run --rm --network none --user 0:0 -v "$CERTS:/certs" --entrypoint sh pop3gw-maildir:latest -c \
    'openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=pop3.test -keyout /certs/tls.key -out /certs/tls.crt 2>/dev/null && chown 10110:10110 /certs/tls.key /certs/tls.crt && chmod 0400 /certs/tls.key' ||
    fail "cannot make a test certificate"

# The secrets as files, the way docker/compose.yaml and the docs give them
# (Docker secrets are such files in /run/secrets): nothing in the
# environment or on a command line.
SECRETS=$T/secrets
ADMIN_TOKEN=docker-test-admin-$$
mkdir -p "$SECRETS"
printf '%s\n' "$SECRET" >"$SECRETS/backend_secret"
printf '%s\n' "$ADMIN_TOKEN" >"$SECRETS/admin_token"
chmod 0755 "$SECRETS"
chmod 0444 "$SECRETS/backend_secret" "$SECRETS/admin_token"

NET=p3gw-test-$$
NETWORKS="$NETWORKS $(dk network create "$NET")"
# (docker run warns that IPv4 forwarding is off: only the bridge and the
# published ports are used, neither needs it.)
dk run -d --name p3gw-backend --network "$NET" --network-alias backend \
    -v "$SECRETS:/run/secrets:ro" pop3gw-maildir:latest \
    --listen=0.0.0.0:8025 --root=/srv/mail --secret-file=/run/secrets/backend_secret \
    >/dev/null 2>"$T/run-backend.log" ||
    fail "cannot start the backend: $(cat "$T/run-backend.log")"
# ip_unprivileged_port_start=1024 undoes Docker's own relaxation, so binding
# 110 and 995 below really takes the file capability on the binary.
dk run -d --name p3gw-gw --network "$NET" \
    --read-only --cap-drop ALL --cap-add NET_BIND_SERVICE \
    --sysctl net.ipv4.ip_unprivileged_port_start=1024 \
    --health-interval=2s --health-start-period=2s \
    -e POP3GW_BACKEND_URL=http://backend:8025 \
    -e POP3GW_BACKEND_SECRET_FILE=/run/secrets/backend_secret \
    -e POP3GW_ADMIN_TOKEN_FILE=/run/secrets/admin_token -v "$SECRETS:/run/secrets:ro" \
    -e POP3GW_LISTEN_TLS=0.0.0.0:995 -e POP3GW_TLS_CERT=/certs/tls.crt \
    -e POP3GW_TLS_KEY=/certs/tls.key -e POP3GW_HOSTNAME=pop3.test \
    -v "$CERTS:/certs:ro" -p 127.0.0.1::110 -p 127.0.0.1::995 -p 127.0.0.1::8110 \
    pop3gw:latest >/dev/null 2>"$T/run-gw.log" || fail "cannot start the gateway: $(cat "$T/run-gw.log")"
port() { dk port p3gw-gw "$1/tcp" | head -n 1 | sed 's/.*://'; }
P110=$(port 110)
P995=$(port 995)
P8110=$(port 8110)
log "gateway container up: pop3 127.0.0.1:$P110, pop3s 127.0.0.1:$P995, admin 127.0.0.1:$P8110"

for _ in $(seq 1 30); do
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$P8110/healthz" 2>/dev/null && break
    [ "$(dk inspect -f '{{.State.Running}}' p3gw-gw)" = true ] || fail "the gateway container exited"
    sleep 1
done
curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$P8110/healthz" || fail "/healthz did not answer 200"
curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$P8110/readyz" || fail "/readyz did not answer 200"
# The admin token came from its file: /sessions wants it.
code=$(curl -sS --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P8110/sessions")
[ "$code" = 401 ] || fail "/sessions without the admin token answered $code, not 401"
curl -fsS --max-time 2 -o /dev/null -H "Authorization: Bearer $ADMIN_TOKEN" \
    "http://127.0.0.1:$P8110/sessions" || fail "/sessions with the token from admin_token_file failed"

PASS=0
ok() {
    PASS=$((PASS + 1))
    log "ok: $*"
}
expect_mail() { # expect_mail FILE WHAT
    grep -q '^Subject: Welcome to pop3gw' "$1" || {
        cat "$1" >&2
        fail "$2: the message did not come through"
    }
}

curl -sS --max-time 10 -k --ssl-reqd -u alice:wonderland "pop3://127.0.0.1:$P110/1" >"$T/stls.txt" ||
    fail "curl pop3:// with STLS failed"
expect_mail "$T/stls.txt" "pop3:// with STLS"
ok "read message 1 with curl pop3:// (STLS), $(wc -c <"$T/stls.txt") bytes (secrets read from files on both sides)"

curl -sS --max-time 10 -k -u alice:wonderland "pop3s://127.0.0.1:$P995/1" >"$T/pop3s.txt" ||
    fail "curl pop3s:// failed"
expect_mail "$T/pop3s.txt" "pop3s://"
ok "read message 1 with curl pop3s:// (implicit TLS)"

curl -sS --max-time 10 -k --ssl-reqd -u alice:wonderland "pop3://127.0.0.1:$P110/" >"$T/list.txt" ||
    fail "LIST failed"
[ "$(grep -c '^[0-9]' "$T/list.txt")" -eq 2 ] || fail "LIST: expected 2 messages, got: $(cat "$T/list.txt")"
ok "LIST shows the 2 sample messages"

# USER/PASS in clear text (curl would pick APOP, which sends no password).
python3 - "$P110" >"$T/plain.txt" 2>&1 <<'PY' || fail "clear-text USER/PASS: $(cat "$T/plain.txt")"
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=10)
try:
    p.user("alice")
    p.pass_("wonderland")
except poplib.error_proto as e:
    print("refused:", e.args[0].decode(errors="replace"))
    sys.exit(0)
print("a clear-text login from a non-loopback client succeeded under plaintext_auth=tls-only")
sys.exit(1)
PY
ok "clear-text USER/PASS refused ($(cat "$T/plain.txt"))"

status=$(dk exec p3gw-gw cat /proc/1/status)
grep -Eq '^Uid:[[:space:]]+10110[[:space:]]' <<<"$status" || fail "the gateway does not run as uid 10110"
capeff=$(awk '/^CapEff:/ {print $2}' <<<"$status")
[ $((0x$capeff)) -eq $((1 << 10)) ] || fail "effective capabilities are $capeff, expected only CAP_NET_BIND_SERVICE"
ok "runs as uid 10110 with only CAP_NET_BIND_SERVICE (CapEff $capeff), bound 110 and 995"

dk exec p3gw-gw pop3gw --health || fail "pop3gw --health inside the container failed"
for _ in $(seq 1 30); do
    h=$(dk inspect -f '{{.State.Health.Status}}' p3gw-gw)
    [ "$h" = healthy ] && break
    sleep 1
done
[ "$h" = healthy ] || fail "HEALTHCHECK status is '$h', not healthy"
ok "HEALTHCHECK (pop3gw --health) reports healthy"

dk logs p3gw-gw >"$T/gw.log" 2>&1
grep -q 'msg=login user=alice' "$T/gw.log" || fail "no login line with user=alice in the gateway's log"
if grep -q 'without admin_token' "$T/gw.log"; then fail "the gateway warned of no admin token although admin_token_file is set"; fi
if grep -qF "$SECRET" "$T/gw.log"; then fail "the backend secret is in the gateway's log"; fi
if grep -qF "$ADMIN_TOKEN" "$T/gw.log"; then fail "the admin token is in the gateway's log"; fi
# --read-only: the spool volume the image declares must take spool files
# (the gateway makes one at start and warns when it cannot).
if grep -q 'cannot make spool files' "$T/gw.log"; then
    fail "no spool file can be made under --read-only: $(grep 'cannot make spool files' "$T/gw.log")"
fi
dk exec p3gw-gw sh -c 'test -d "$POP3GW_SPOOL_DIR" && test -w "$POP3GW_SPOOL_DIR"' ||
    fail "the spool directory is not writable by the gateway under --read-only"
ok "spool directory writable under --read-only (no spool warning at start)"
t0=$(date +%s)
dk stop -t 20 p3gw-gw >/dev/null
took=$(($(date +%s) - t0))
code=$(dk inspect -f '{{.State.ExitCode}}' p3gw-gw)
[ "$code" = 0 ] || fail "the gateway exited with $code after SIGTERM"
[ $took -lt 15 ] || fail "the gateway took $took s to stop on SIGTERM"
ok "docker stop: SIGTERM, exit 0 after $took s"
dk rm -f p3gw-gw p3gw-backend >/dev/null

# ---------------------------------------------------------------- compose
compose() { "${COMPOSE[@]}" -p "$COMPOSE_PROJECT" -f "$ROOT/docker/compose.yaml" "$@"; }
find_compose() {
    if "$DOCKER" compose version >/dev/null 2>&1; then
        COMPOSE=("$DOCKER" compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    fi
}
if [ "${POP3GW_DOCKER_COMPOSE:-1}" = 0 ]; then
    banner "SKIP (compose part only): POP3GW_DOCKER_COMPOSE=0"
else
    find_compose
    if [ ${#COMPOSE[@]} -eq 0 ]; then
        install_pkgs docker-compose || true
        find_compose
    fi
    if [ ${#COMPOSE[@]} -eq 0 ]; then
        banner "SKIP (compose part only): neither 'docker compose' nor docker-compose is available"
    fi
fi
if [ ${#COMPOSE[@]} -gt 0 ]; then
    read -r PP PS PA1 PA2 PST < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
    export POP3GW_DEMO_POP3_PORT=$PP POP3GW_DEMO_POP3S_PORT=$PS POP3GW_DEMO_ADMIN1_PORT=$PA1 \
        POP3GW_DEMO_ADMIN2_PORT=$PA2 POP3GW_DEMO_STATS_PORT=$PST
    log "compose up ($("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n 1)): HAProxy :$PP/:$PS, two gateways, backend"
    COMPOSE_UP=1
    compose up -d --no-build >"$T/compose-up.log" 2>&1 || {
        cat "$T/compose-up.log" >&2
        fail "compose up failed"
    }
    for _ in $(seq 1 40); do
        curl -sS --max-time 5 -k -u alice:wonderland "pop3s://127.0.0.1:$PP/1" >/dev/null 2>&1 || true
        if curl -sS --max-time 5 -k -u alice:wonderland "pop3s://127.0.0.1:$PS/1" >"$T/c-pop3s.txt" 2>/dev/null &&
            grep -q '^Subject: Welcome to pop3gw' "$T/c-pop3s.txt"; then
            break
        fi
        sleep 1
    done
    expect_mail "$T/c-pop3s.txt" "compose: pop3s:// through HAProxy"
    ok "compose: read message 1 through HAProxy with pop3s://"
    # Both replicas up in HAProxy, then several sessions spread over them.
    for _ in $(seq 1 20); do
        up=$(curl -fsS --max-time 2 "http://127.0.0.1:$PST/;csv" 2>/dev/null | grep -c '^pop3gw_pop3,gw[12],.*,UP' || true)
        [ "$up" -eq 2 ] && break
        sleep 1
    done
    [ "$up" -eq 2 ] || fail "compose: HAProxy does not see both gateways UP"
    for _ in 1 2 3 4 5 6; do
        curl -sS --max-time 10 -k --ssl-reqd -u alice:wonderland "pop3://127.0.0.1:$PP/1" >"$T/c-stls.txt" ||
            fail "compose: curl pop3:// with STLS through HAProxy failed"
        expect_mail "$T/c-stls.txt" "compose: pop3:// with STLS"
    done
    ok "compose: 6 STLS sessions through HAProxy on port 110"
    for g in 1 2; do
        pa=$PA1
        [ $g = 2 ] && pa=$PA2
        n=$(curl -fsS --max-time 3 -H "Authorization: Bearer $(cat "$ROOT/docker/demo-secrets/admin_token")" \
            "http://127.0.0.1:$pa/metrics" | awk '$1 == "pop3gw_connections_total" {print $2}')
        [ "${n:-0}" -gt 0 ] || fail "compose: gateway $g served no connection"
        log "gateway $g: pop3gw_connections_total $n"
    done
    ok "compose: both replicas served sessions (PROXY v2 accepted from HAProxy)"
    hap_ip=$(dk inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(compose ps -q haproxy)")
    hap_ip=${hap_ip% }
    logins=$(compose logs --no-color gw1 gw2 2>&1 | grep 'user=alice' | grep -o 'client=[^ ]*' | sort -u | tr "\n" " " | sed "s/ $//")
    [ -n "$logins" ] || fail "compose: no login lines in the gateways' logs"
    for ip in $hap_ip; do
        case " $logins " in *"client=$ip "*) fail "compose: the gateways logged HAProxy's address $ip, not the client's" ;; esac
    done
    ok "compose: gateways log the client's address from the PROXY header ($logins; HAProxy is $hap_ip)"
    t0=$(date +%s)
    compose down -v --remove-orphans -t 15 >"$T/compose-down.log" 2>&1 || fail "compose down failed"
    COMPOSE_UP=0
    took=$(($(date +%s) - t0))
    [ $took -lt 12 ] || fail "compose down took $took s: a container ignores its stop signal"
    ok "compose down: every container stopped on its stop signal ($took s)"
fi

echo
echo "docker-test: $PASS passed, 0 failed"
