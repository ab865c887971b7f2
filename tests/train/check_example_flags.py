#!/usr/bin/env python3
"""Every flag of an example program with a value out of range gets a one-line message naming the flag, and
exit code 2 (a usage error), before any data is read or any file is written.

usage: check_example_flags.py PROGRAM
"""
import subprocess
import sys
import tempfile
from pathlib import Path

program = str(Path(sys.argv[1]).resolve())
# (flags, text the one line must contain)
cases = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-2"], "--epochs"),
    (["--epochs", "1.5"], "--epochs"),
    (["--epochs", "many"], "--epochs"),
    (["--steps", "-1"], "--steps"),
    (["--steps", "nan"], "--steps"),
    (["--batch", "0"], "--batch"),
    (["--batch", "-64"], "--batch"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "0.1x"], "--lr"),
    (["--momentum", "-0.5"], "--momentum"),
    (["--momentum", "1"], "--momentum"),
    (["--momentum", "nan"], "--momentum"),
    (["--weight-decay", "-1e-4"], "--weight-decay"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--threads", "0"], "--threads"),
    (["--threads", "-1"], "--threads"),
    (["--workers", "0"], "--workers"),
    (["--workers", "-4"], "--workers"),
    (["--seed", "-1"], "--seed"),
    (["--checkpoint-every", "0", "--checkpoint", "unused.safetensors"], "--checkpoint-every"),
    (["--checkpoint-every", "5"], "--checkpoint"),
    (["--resume", "no-such-checkpoint.safetensors"], "--resume"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
    (["--timeout", "1e10"], "--timeout"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--lr-schedule", "exponential"], "--lr-schedule"),
    (["--lr-schedule", "step"], "--lr-step"),
    (["--lr-schedule", "step", "--lr-step", "0"], "--lr-step"),
    (["--lr-schedule", "step", "--lr-step", "-5"], "--lr-step"),
    (["--lr-schedule", "step", "--lr-step", "10", "--lr-gamma", "0"], "--lr-gamma"),
    (["--lr-schedule", "step", "--lr-step", "10", "--lr-gamma", "1.5"], "--lr-gamma"),
    (["--lr-schedule", "step", "--lr-step", "10", "--lr-gamma", "nan"], "--lr-gamma"),
    (["--lr-step", "10"], "--lr-step"),
    (["--lr-schedule", "cosine", "--lr-floor", "-0.01"], "--lr-floor"),
    (["--lr-schedule", "cosine", "--lr-floor", "1", "--lr", "0.1"], "--lr-floor"),
    (["--lr-floor", "0.001"], "--lr-floor"),
    (["--warmup-steps", "-1"], "--warmup-steps"),
    (["--warmup-steps", "2.5"], "--warmup-steps"),
    (["--clip-norm", "-1"], "--clip-norm"),
    (["--clip-norm", "inf"], "--clip-norm"),
    (["--clip-norm", "nan"], "--clip-norm"),
    (["--accumulate", "0"], "--accumulate"),
    (["--accumulate", "-2"], "--accumulate"),
    (["--eval-every", "-1"], "--eval-every"),
    (["--eval-every", "nan"], "--eval-every"),
    (["--data-format", "imagenet"], "--data-format"),
]

failures = 0
with tempfile.TemporaryDirectory() as directory:
    for flags, expected in cases:
        result = subprocess.run([program, *flags, "--data", "/nonexistent", "--save", "weights.safetensors"],
                                capture_output=True, text=True, cwd=directory, timeout=60)
        lines = (result.stdout + result.stderr).strip().splitlines()
        problems = []
        if result.returncode != 2:
            problems.append(f"exit code {result.returncode}, not 2")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines of output, not 1")
        elif expected not in lines[0]:
            problems.append(f"the message does not name {expected}")
        written = sorted(p.name for p in Path(directory).iterdir())
        if written:
            problems.append(f"files were written: {written}")
        shown = lines[0] if len(lines) == 1 else " | ".join(lines[:3])
        print(f"{'FAIL' if problems else 'ok'}: {' '.join(flags)} -> {shown}" + (f" ({'; '.join(problems)})"
                                                                                     if problems else ""))
        failures += bool(problems)
print(f"{len(cases) - failures} of {len(cases)} bad flags rejected as they should be")
sys.exit(1 if failures else 0)
