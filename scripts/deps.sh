#!/bin/sh
# Installs the Debian packages pop3gw needs to build, test and run its demo.
# With --check-or-install, installs only when something is missing.
set -e
PKGS="build-essential pkg-config libevent-dev libcurl4-openssl-dev libssl-dev \
libjansson-dev libmicrohttpd-dev libinih-dev libcmocka-dev curl python3 \
fetchmail mpop clang-format"
LIBS="libevent libevent_openssl libevent_pthreads libcurl openssl jansson libmicrohttpd inih cmocka"

missing() {
    pkg-config --exists $LIBS 2>/dev/null || return 0
    for c in cc curl python3 fetchmail mpop; do
        command -v "$c" >/dev/null 2>&1 || return 0
    done
    return 1
}

if [ "$1" = "--check-or-install" ] && ! missing; then
    exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing build and test dependencies (apt-get)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
