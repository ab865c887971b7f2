#!/usr/bin/env python3
"""Training across namespaced hosts saves serial training's bytes (docs/strategies.md, "Exactness").

On 2 hosts, one rank each: the MLP and the CNN data parallel and as 2-stage pipelines. On 4 hosts: the MLP
data parallel with 4 ranks (one per host) and 8 ranks (two per host, placed round-robin so every level of
the canonical all-reduce crosses hosts), and the CNN with 4. Each run's saved weights must equal, byte for
byte, the file the serial program saves for the same --seed, --batch and --steps. Skipped (exit code 77)
where network namespaces cannot be made.

usage: check_hosts_exact.py BUILD_EXAMPLES_DIR
"""
import os
import subprocess
import sys
import tempfile
import time

import namespaced_hosts

COMMON = ["--batch", "64", "--steps", "5", "--seed", "7", "--quiet"]


def run(command, limit=120):
    result = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    if result.returncode != 0:
        sys.exit(f"{namespaced_hosts.command_line(command)} failed with exit code {result.returncode}:\n"
                 f"{result.stdout}{result.stderr}")


def main():
    examples = sys.argv[1]
    reason = namespaced_hosts.why_skip()
    if reason:
        print("skipped:", reason)
        return namespaced_hosts.SKIP
    # hosts -> [(model, strategy, ranks, slots per host)]
    plan = {2: [("mlp", "data_parallel", 2, 1), ("cnn", "data_parallel", 2, 1), ("mlp", "pipeline", 2, 1),
                ("cnn", "pipeline", 2, 1)],
            4: [("mlp", "data_parallel", 4, 1), ("mlp", "data_parallel", 8, 2), ("cnn", "data_parallel", 4, 1)]}
    failures = []
    with tempfile.TemporaryDirectory() as directory:
        expected = {}
        for model in ("mlp", "cnn"):
            path = os.path.join(directory, f"{model}.safetensors")
            run([os.path.join(examples, f"train_{model}"), *COMMON, "--save", path])
            with open(path, "rb") as f:
                expected[model] = f.read()
        for count, runs in plan.items():
            with namespaced_hosts.Hosts(count) as hosts:
                hosts.check_spread(count)
                for model, strategy, ranks, slots in runs:
                    name = f"train_{model}_{strategy}_mpi, {ranks} ranks on {count} hosts"
                    path = os.path.join(directory, f"{model}-{strategy}-{ranks}-{count}.safetensors")
                    program = [os.path.join(examples, f"train_{model}_{strategy}_mpi"), *COMMON, "--save", path]
                    start = time.monotonic()
                    run(hosts.mpirun(ranks, program, slots=slots))
                    with open(path, "rb") as f:
                        same = f.read() == expected[model]
                    print(f"{'ok' if same else 'DIFFERENT'}: {name} ({time.monotonic() - start:.1f} s)", flush=True)
                    if not same:
                        failures.append(f"{name}: weights differ from serial training's")
                left = hosts.leftovers()
                if left:
                    failures.append("processes left running after the runs ended:\n  " + "\n  ".join(left))
    if failures:
        sys.exit("FAIL: " + "\n".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
