#!/usr/bin/env python3
"""Runs one libFuzzer target for a bounded time from its committed seed corpus.

usage: run_fuzzer.py TARGET CORPUS_DIR [--seconds N]

New corpus entries go to a temporary directory (libFuzzer writes to the first corpus directory it is
given), so the committed corpus only changes by hand. An input that crashes, leaks, runs longer than 5 s,
uses more than 1 GB or asks for more than 64 MB at once (the inputs are a few KB: a reader that allocates
what a header claims does that) is kept next to TARGET in fuzz-artifacts/, and the run fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile

parser = argparse.ArgumentParser()
parser.add_argument("target")
parser.add_argument("corpus")
parser.add_argument("--seconds", type=int, default=30)
options = parser.parse_args()

artifacts = os.path.join(os.path.dirname(os.path.abspath(options.target)), "fuzz-artifacts")
os.makedirs(artifacts, exist_ok=True)
name = os.path.basename(options.target)
environment = dict(os.environ)
# Any sanitizer report ends the run with the input that caused it.
environment["ASAN_OPTIONS"] = "halt_on_error=1:abort_on_error=0:detect_leaks=1"
environment["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
with tempfile.TemporaryDirectory(prefix=f"pnn-{name}-") as new_entries:
    command = [options.target, f"-max_total_time={options.seconds}", "-timeout=5", "-rss_limit_mb=1024",
               "-malloc_limit_mb=64", "-print_final_stats=1", f"-artifact_prefix={artifacts}/{name}-",
               new_entries, options.corpus]
    print(" ".join(command), flush=True)
    result = subprocess.run(command, env=environment)
if result.returncode != 0:
    print(f"{name} FAILED (exit code {result.returncode}): the input is in {artifacts}; add it to "
          f"{options.corpus} and a regression test to the reader's doctest suite", flush=True)
# libFuzzer reports a failing input with exit code 77, which Meson reads as "skipped": any failure is 1.
sys.exit(1 if result.returncode != 0 else 0)
