#!/usr/bin/env python3
"""Counts test cases across all test programs from meson's testlog.json files (one per build directory)
and prints 'N passed, N failed'.

doctest programs report their own counts; any other test (a compile-failure check, an MPI launcher)
counts as one case. A doctest program that crashed or hung before reporting counts as one failure more.
Exits 1 when anything failed.
"""
import json
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed\s*\|\s*(\d+) skipped")

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as log:
        lines = [line.strip() for line in log if line.strip()]
    for line in lines:
        test = json.loads(line)
        ok = test["result"] in ("OK", "EXPECTEDFAIL")
        counts = SUMMARY.findall(ANSI.sub("", test.get("stdout") or ""))
        if counts:
            # An MPI test prints one summary per rank: take the worst rank.
            total, good, bad, skip = max((tuple(map(int, c)) for c in counts), key=lambda c: (c[2], -c[1]))
            passed += good
            failed += bad
            skipped += skip
            if not ok and bad == 0:
                failed += 1
        elif test["result"] == "SKIP":
            skipped += 1
        elif ok:
            passed += 1
        else:
            failed += 1
        if not ok:
            print(f"FAILED: {test['name']} ({test['result']}) in {path}")

if skipped:
    print(f"{skipped} skipped")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
