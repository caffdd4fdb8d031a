#!/bin/sh
# Installs the Debian packages pop3gw needs.
#   scripts/deps.sh                         build and demo packages
#   scripts/deps.sh --test                  also everything `make test` uses
#   scripts/deps.sh --check-or-install [--test]
#                                           the same, only when something is missing
set -e
BUILD_PKGS="build-essential pkg-config libevent-dev libcurl4-openssl-dev libssl-dev \
libjansson-dev libmicrohttpd-dev libinih-dev libcmocka-dev curl python3 openssl clang-format"
TEST_PKGS="fetchmail mpop haproxy prometheus chromium nodejs valgrind clang libclang-rt-14-dev"
LIBS="libevent libevent_openssl libevent_pthreads libcurl openssl jansson libmicrohttpd inih cmocka"

check=0
test=0
for a in "$@"; do
    case "$a" in
    --check-or-install) check=1 ;;
    --test) test=1 ;;
    *) echo "deps.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

missing() {
    pkg-config --exists $LIBS 2>/dev/null || return 0
    for c in cc curl python3 openssl; do
        command -v "$c" >/dev/null 2>&1 || return 0
    done
    if [ $test = 1 ]; then
        for c in fetchmail mpop haproxy promtool node npm valgrind clang; do
            command -v "$c" >/dev/null 2>&1 || return 0
        done
        [ -x /usr/bin/chromium ] || return 0
    fi
    return 1
}

if [ $check = 1 ] && ! missing; then
    exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS=$BUILD_PKGS
[ $test = 1 ] && PKGS="$PKGS $TEST_PKGS"
echo "installing packages (apt-get): $PKGS"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
# Debian's nodejs comes without npm (some node packages bundle it).
if [ $test = 1 ] && ! command -v npm >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
