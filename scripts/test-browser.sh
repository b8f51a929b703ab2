#!/usr/bin/env bash
# test-browser.sh — the dashboard in a real browser (tests/browser): installs
# the pinned playwright-core with `npm ci` when needed, then runs the test
# with Node's test runner against a real poold (POOLD_BIN) and the test
# PostgreSQL (DATABASE_URL, POOLD_TEST_ADMIN_URL), using Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/../tests/browser"
if [ ! -d node_modules/playwright-core ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null ||
    { echo "chromium not installed (scripts/install-deps.sh)" >&2; exit 1; }
exec node --test --test-reporter=spec dashboard.test.mjs
