#!/usr/bin/env bash
# check-format.sh — fail if a C file differs from .clang-format (Debian's
# clang-format 14); a stage of scripts/test.sh.
#   scripts/check-format.sh          list the files that differ, exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."

command -v clang-format >/dev/null ||
    { echo "check-format: clang-format missing (scripts/install-deps.sh)" >&2; exit 1; }

mapfile -t files < <(ls src/*.c include/*.h tests/unit/*.c tests/integration/*.c \
    tests/fuzz/*.c bench/*.c 2>/dev/null)
bad=()
for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
    printf 'check-format: %d of %d files differ from .clang-format:\n' \
        "${#bad[@]}" "${#files[@]}" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "fix: clang-format -i ${bad[*]}" >&2
    exit 1
fi
echo "check-format: ${#files[@]} files match .clang-format"
