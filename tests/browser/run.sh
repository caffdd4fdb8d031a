#!/bin/sh
# Runs the admin dashboard's browser test (tests/browser/dashboard.test.mjs)
# with node's built-in test runner. Installs playwright-core from npm into
# tests/browser/node_modules when it is missing. Needs Debian's chromium
# (/usr/bin/chromium, or set CHROMIUM) and a built gateway (`make`; or set
# PGW_BUILD to the directory with pop3gw and pop3gw-maildir).
# The screenshot and the process logs land in tests/browser/out/.
# With PGW_REQUIRE_ALL=1 (as .ci/run sets it) a skipped or todo test is
# named and fails the run.
set -e
if [ -n "$PGW_BUILD" ]; then # relative to where run.sh was started
    PGW_BUILD=$(cd "$PGW_BUILD" && pwd)
    export PGW_BUILD
fi
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "run.sh: node and npm are needed (apt-get install -y nodejs npm)" >&2
    exit 1
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "run.sh: ${CHROMIUM:-/usr/bin/chromium} not found (apt-get install -y chromium)" >&2
    exit 1
fi
if [ ! -d node_modules/playwright-core ]; then
    echo "run.sh: installing playwright-core (npm ci)..."
    npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${PGW_REQUIRE_ALL:-}" != 1 ]; then
    exec node --test dashboard.test.mjs
fi
# The usual report on stdout, and a TAP copy to look for skips in.
mkdir -p out
rc=0
node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination=out/results.tap dashboard.test.mjs || rc=$?
skipped=$(grep -E '^ *(not )?ok [0-9]+ .*# (SKIP|TODO)' out/results.tap || true)
if [ -n "$skipped" ]; then
    echo "run.sh: PGW_REQUIRE_ALL=1: skipped or todo tests count as failed:" >&2
    echo "$skipped" | sed 's/^ */  /' >&2
    [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
