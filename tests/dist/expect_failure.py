#!/usr/bin/env python3
"""Runs a command that must fail: checks it exits non-zero within a time limit and prints the expected text.

usage: expect_failure.py SECONDS EXPECTED_TEXT -- COMMAND...
"""
import subprocess
import sys
import time

limit, expected = float(sys.argv[1]), sys.argv[2]
command = sys.argv[sys.argv.index("--") + 1:]
start = time.monotonic()
try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=limit)
except subprocess.TimeoutExpired:
    print(f"FAIL: still running after {limit} s (a hang): {' '.join(command)}")
    sys.exit(1)
elapsed = time.monotonic() - start
output = result.stdout + result.stderr
print(output.strip()[:2000])
if result.returncode == 0:
    print("FAIL: the command succeeded but should have failed")
    sys.exit(1)
if expected not in output:
    print(f"FAIL: the output does not contain {expected!r}")
    sys.exit(1)
print(f"ok: failed as expected in {elapsed:.1f} s with exit code {result.returncode}")
