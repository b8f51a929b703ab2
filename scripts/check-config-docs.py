#!/usr/bin/env python3
"""check-config-docs.py POOLD_BIN DOC — docs/configuration.md names every
setting `poold --help` prints, with the same flag and default, and no
setting the binary does not know. Run by CTest (unit.config_docs).

--help prints, per setting:
  --pool-size            POOLD_POOL_SIZE            default: 4
A default in parentheses ("(generated)", "(empty)") is a description, not a
value, and is not compared.
"""
import os
import re
import subprocess
import sys


def help_settings(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True,
                         timeout=20, check=True, env={
                             k: v for k, v in os.environ.items()
                             if not k.startswith("POOLD_")}).stdout
    found = {}
    for m in re.finditer(r"^  (--[a-z0-9-]+)\s+([A-Z][A-Z0-9_]+)\s+"
                         r"default: (.*)$", out, re.M):
        found[m.group(2)] = (m.group(1), m.group(3).strip())
    return found


def doc_settings(path):
    """The rows of the table whose first cell is a `VARIABLE`."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            m = re.fullmatch(r"`([A-Z][A-Z0-9_]+)`", cells[0])
            if line.startswith("|") and m and len(cells) >= 4:
                rows[m.group(1)] = (cells[1].strip("`"),
                                    cells[-1].strip("`"))
    return rows


def main(binary, doc):
    binary_has, doc_has = help_settings(binary), doc_settings(doc)
    problems = []
    if len(binary_has) < 10:
        problems.append("poold --help printed %d settings: format changed?"
                        % len(binary_has))
    for var, (flag, default) in sorted(binary_has.items()):
        if var not in doc_has:
            problems.append("%s (%s) is missing from %s" % (var, flag, doc))
            continue
        dflag, ddefault = doc_has[var]
        if dflag != flag:
            problems.append("%s: --help says %s, %s says %s"
                            % (var, flag, doc, dflag))
        if not default.startswith("(") and ddefault != default:
            problems.append("%s: default %r in --help, %r in %s"
                            % (var, default, ddefault, doc))
    for var in sorted(set(doc_has) - set(binary_has)):
        problems.append("%s is in %s but not in poold --help" % (var, doc))
    for p in problems:
        print("config docs: " + p, file=sys.stderr)
    if not problems:
        print("config docs: %d settings, all in %s"
              % (len(binary_has), doc))
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
