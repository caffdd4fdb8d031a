#!/bin/sh
# make check-install: checks a staged `make install` (DESTDIR) of pop3gw.
# Usage: check-install.sh DESTDIR PREFIX
#
# - every file is where it belongs, with its mode;
# - the man page renders without a groff warning and lists the same options
#   and keys (with the same defaults) as `pop3gw --help`;
# - `systemd-analyze verify` accepts the unit (and the TLS drop-in example),
#   and `systemd-analyze security` rates its sandbox.
# systemd-analyze comes from Debian's systemd package, installed when missing
# and root; where it cannot run, that part prints SKIP (a failure with
# PGW_REQUIRE_ALL=1, as .ci/run sets it).
set -eu
D=${1:?usage: check-install.sh DESTDIR PREFIX}
P=${2:-/usr/local}
R=$D$P
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
skip() {
    if [ "${PGW_REQUIRE_ALL:-}" = 1 ]; then
        bad "$* (PGW_REQUIRE_ALL=1: a skipped check is a failure)"
    else
        echo; echo "#### SKIP: $*"; echo
    fi
}

# ---- files
for f in bin/pop3gw:755 bin/pop3gw-maildir:755 share/man/man8/pop3gw.8:644 \
    lib/systemd/system/pop3gw.service:644 share/doc/pop3gw/pop3gw.conf.example:644 \
    share/doc/pop3gw/pop3gw.env.example:644 share/doc/pop3gw/tls-credentials.conf.example:644 \
    share/doc/pop3gw/deployment.md:644; do
    path=$R/${f%:*}
    mode=${f#*:}
    if [ ! -f "$path" ]; then
        bad "missing $P/${f%:*}"
    elif [ "$(stat -c %a "$path")" != "$mode" ]; then
        bad "$P/${f%:*} has mode $(stat -c %a "$path"), expected $mode"
    else
        ok "$P/${f%:*} ($mode)"
    fi
done
grep -q "^ExecStart=$P/bin/pop3gw " "$R/lib/systemd/system/pop3gw.service" &&
    ok "unit runs $P/bin/pop3gw" || bad "unit's ExecStart is not $P/bin/pop3gw"
"$R/bin/pop3gw" --version >/dev/null && ok "installed pop3gw runs" || bad "installed pop3gw --version failed"

# ---- the example configuration is valid (with a backend URL it names)
# (listen_tls needs a certificate, which the example leaves commented out)
if err=$("$R/bin/pop3gw" -c "$R/share/doc/pop3gw/pop3gw.conf.example" --plaintext_auth=allow \
    --listen_tls= --check-config 2>&1 >/dev/null); then
    ok "pop3gw.conf.example passes --check-config"
else
    bad "pop3gw.conf.example: $err"
fi

# ---- tools: systemd-analyze (systemd), groff (groff-base), man (man-db)
need=""
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v groff >/dev/null 2>&1 || need="$need groff-base"
command -v man >/dev/null 2>&1 || need="$need man-db"
if [ -n "$need" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$need (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1; } || true
fi

# ---- man page
if command -v groff >/dev/null 2>&1; then
warn=$(groff -man -Tutf8 -ww -z "$R/share/man/man8/pop3gw.8" 2>&1) || true
[ -z "$warn" ] && ok "groff -man -ww: no warnings" || bad "groff warnings: $warn"
else
    skip "groff not available: the man page was not rendered"
fi
if python3 "$(dirname "$0")/check-man.py" "$R/bin/pop3gw" "$R/share/man/man8/pop3gw.8"; then
    ok "man page matches --help"
else
    bad "man page and --help differ"
fi
if command -v man >/dev/null 2>&1; then
    MANPATH=$R/share/man man -P cat pop3gw >/dev/null 2>&1 && ok "man finds pop3gw(8) under $P/share/man" ||
        bad "man does not find pop3gw(8) under $P/share/man"
fi

# ---- systemd
if ! command -v systemd-analyze >/dev/null 2>&1; then
    skip "systemd-analyze not available: the unit was not verified"
else
    # A copy whose ExecStart points into DESTDIR (verify checks the binary),
    # with the man page findable for Documentation=.
    U=$(mktemp -d)
    sed "s|$P/bin/pop3gw|$R/bin/pop3gw|g" "$R/lib/systemd/system/pop3gw.service" >"$U/pop3gw.service"
    if out=$(MANPATH=$R/share/man systemd-analyze verify "$U/pop3gw.service" 2>&1) && [ -z "$out" ]; then
        ok "systemd-analyze verify pop3gw.service: clean"
    else
        bad "systemd-analyze verify pop3gw.service: $out"
    fi
    mkdir "$U/pop3gw.service.d"
    cp "$R/share/doc/pop3gw/tls-credentials.conf.example" "$U/pop3gw.service.d/tls.conf"
    if out=$(cd "$U" && MANPATH=$R/share/man SYSTEMD_UNIT_PATH="$U:" systemd-analyze verify pop3gw.service 2>&1) &&
        [ -z "$out" ]; then
        ok "systemd-analyze verify with the TLS credentials drop-in: clean"
    else
        bad "systemd-analyze verify with the TLS drop-in: $out"
    fi
    if score=$(systemd-analyze security --offline=true --no-pager "$U/pop3gw.service" 2>&1 | tail -n 1); then
        echo "systemd-analyze security: $score"
    fi
    rm -rf "$U"
fi

echo
echo "check-install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
