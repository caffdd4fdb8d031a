#!/bin/sh
# Runs the admin dashboard's browser test (tests/browser/dashboard.test.mjs)
# with node's built-in test runner. Installs playwright-core from npm into
# tests/browser/node_modules when it is missing. Needs Debian's chromium
# (/usr/bin/chromium, or set CHROMIUM) and a built gateway (`make`; or set
# PGW_BUILD to the directory with pop3gw and pop3gw-maildir).
# The screenshot and the process logs land in tests/browser/out/.
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
exec node --test dashboard.test.mjs
