#!/usr/bin/env bash
# lint-openapi.sh — lint openapi.yaml with Redocly CLI (pinned: later
# releases need Node 22). Exits non-zero on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
export REDOCLY_TELEMETRY=off
exec npx --yes @redocly/cli@2.77.0 lint openapi.yaml "$@"
