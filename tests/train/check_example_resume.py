#!/usr/bin/env python3
"""An example program resumed from its checkpoint saves the weights an uninterrupted run saves, byte for
byte: `--steps 6` against `--steps 3 --checkpoint F` then `--steps 6 --resume F`. Also checks that bad
checkpoint flags end the program with a one-line message and exit code 2, and that another run's
checkpoint is refused.

usage: check_example_resume.py PROGRAM
"""
import os
import subprocess
import sys
import tempfile

SKIP = 77  # meson's exit code for a skipped test


def run(program, *arguments, expect_success=True):
    result = subprocess.run([program, *arguments], capture_output=True, text=True, timeout=300)
    if expect_success and result.returncode != 0:
        sys.exit(f"{' '.join([program, *arguments])} failed with exit code {result.returncode}:\n"
                 f"{result.stdout}{result.stderr}")
    return result


def main():
    program = sys.argv[1]
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("PNN_DATA"):
        print("skipped: no Fashion-MNIST (install fashion-mnist or set PNN_DATA)")
        return SKIP
    common = ["--batch", "16", "--quiet"]
    with tempfile.TemporaryDirectory() as directory:
        straight = os.path.join(directory, "straight.safetensors")
        resumed = os.path.join(directory, "resumed.safetensors")
        checkpoint = os.path.join(directory, "run.checkpoint")
        run(program, *common, "--seed", "3", "--steps", "6", "--save", straight)
        run(program, *common, "--seed", "3", "--steps", "3", "--checkpoint", checkpoint)
        output = run(program, "--batch", "16", "--seed", "3", "--steps", "6", "--resume", checkpoint, "--save",
                     resumed).stdout
        if f"resuming {checkpoint} at step 3 (epoch 1, batch 3 of 3750)" not in output:
            sys.exit(f"the resumed run did not say it resumed at step 3:\n{output}")
        with open(straight, "rb") as a, open(resumed, "rb") as b:
            if a.read() != b.read():
                sys.exit(f"the resumed run's weights differ from the uninterrupted run's ({straight}, {resumed})")
        print("ok: resumed weights are byte-identical to the uninterrupted run's")

        # Bad values: a one-line message naming the flag and exit code 2, before any data loads.
        bad = {
            ("--checkpoint-every", "2"): "--checkpoint-every requires --checkpoint",
            ("--checkpoint", checkpoint, "--checkpoint-every", "0"): "--checkpoint-every",
            ("--checkpoint", checkpoint, "--checkpoint-every", "x"): "--checkpoint-every",
            ("--resume", os.path.join(directory, "absent")): "--resume",
        }
        for arguments, expected in bad.items():
            result = run(program, *common, *arguments, expect_success=False)
            message = result.stderr.strip().splitlines()
            if result.returncode != 2 or len(message) != 1 or expected not in message[0]:
                sys.exit(f"{' '.join(arguments)}: expected one line mentioning '{expected}' and exit code 2, got "
                         f"{result.returncode} and {result.stderr!r}")
            print(f"ok: {' '.join(arguments)} -> exit code {result.returncode}: {message[0]}")
        # Another run's checkpoint (another seed) is refused when training starts, naming the file.
        other = os.path.join(directory, "other.checkpoint")
        run(program, *common, "--seed", "4", "--steps", "1", "--checkpoint", other)
        result = run(program, *common, "--seed", "3", "--steps", "2", "--resume", other, expect_success=False)
        if result.returncode != 1 or other not in result.stderr or "seed 4" not in result.stderr:
            sys.exit(f"resuming another seed's checkpoint: expected an error naming {other}, got {result.stderr!r}")
        print(f"ok: {result.stderr.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
