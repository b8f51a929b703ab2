#!/usr/bin/env bash
# lint-openapi.sh — lint openapi.yaml with a standard linter from the npm
# registry. Redocly CLI 2.77.0 (pinned: later releases need Node 22) needs
# Node >= 20.19; on older Node (Debian 12's nodejs is 18) Spectral with its
# OpenAPI ruleset (.spectral.yaml) does the job. Exits non-zero on an error.
set -euo pipefail
cd "$(dirname "$0")/.."
export REDOCLY_TELEMETRY=off

node_ok=$(node -e 'const [a, b] = process.versions.node.split(".").map(Number);
                   console.log(a >= 22 || (a === 20 && b >= 19) ? 1 : 0)')
if [ "$node_ok" = 1 ]; then
    npx --yes @redocly/cli@2.77.0 lint openapi.yaml "$@"
else
    echo "Node $(node --version) is too old for Redocly CLI: using Spectral"
fi
# Spectral always runs too: a second, independent reading of the spec.
npx --yes @stoplight/spectral-cli@6.16.3 lint --fail-severity=warn openapi.yaml
