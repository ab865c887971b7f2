#!/usr/bin/env python3
"""train_resnet_cifar10 trains on a CIFAR-10 directory (a tiny one written here in the binary format) and
writes its metrics; a program whose model takes other images refuses the data with one line naming both
shapes; a bad file and a missing --data are named.

usage: check_example_cifar10.py TRAIN_RESNET_CIFAR10 TRAIN_RESNET
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

cifar_program = str(Path(sys.argv[1]).resolve())
mnist_program = str(Path(sys.argv[2]).resolve())


def record(label, seed):
    """One record: the label byte, then 3072 pixel bytes (the red, green and blue planes)."""
    return bytes([label]) + bytes((seed * 13 + i * 7) % 256 for i in range(3072))


def write_cifar10(directory, records_per_file=3):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for f, name in enumerate(names):
        records = [record((f + r) % 10, 10 * f + r) for r in range(records_per_file)]
        (directory / name).write_bytes(b"".join(records))


def run(program, *flags, env=None):
    result = subprocess.run([program, *flags], capture_output=True, text=True, timeout=240, env=env)
    return result.returncode, result.stdout, result.stderr


failures = []


def expect(condition, what, output=""):
    if not condition:
        failures.append(what + ("\n" + output if output else ""))


with tempfile.TemporaryDirectory() as temporary:
    data = Path(temporary) / "cifar-10-batches-bin"
    data.mkdir()
    write_cifar10(data)
    metrics = Path(temporary) / "metrics.jsonl"

    # Two steps of 4 samples on the 15 training records (the format is the program's default; the flag too).
    for flags in ([], ["--data-format", "cifar10"]):
        metrics.unlink(missing_ok=True)
        code, out, err = run(cifar_program, *flags, "--data", str(data), "--steps", "2", "--batch", "4",
                             "--metrics", str(metrics))
        expect(code == 0, f"train_resnet_cifar10 {flags}: exit code {code}, not 0", out + err)
        expect("-> (16, 32, 32)" in out, f"train_resnet_cifar10 {flags}: the stem does not run on 32 x 32 images",
               out)
        expect("after 2 steps" in out, f"train_resnet_cifar10 {flags}: did not report 2 steps", out)
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            expect(len(lines) == 1 and json.loads(lines[0])["steps"] == 2,
                   f"train_resnet_cifar10 {flags}: metrics file does not record one epoch of 2 steps", str(lines))
        else:
            expect(False, f"train_resnet_cifar10 {flags}: no metrics file")

    # The Fashion-MNIST ResNet refuses CIFAR-10 data: one line naming both shapes, before training.
    code, out, err = run(mnist_program, "--data-format", "cifar10", "--data", str(data), "--steps", "1",
                         "--quiet")
    lines = err.strip().splitlines()
    expect(code == 1, f"train_resnet on CIFAR-10: exit code {code}, not 1", out + err)
    expect(len(lines) == 1 and "(3, 32, 32)" in err and "(1, 28, 28)" in err and "train_resnet_cifar10" in err,
           "train_resnet on CIFAR-10: not one line naming both shapes and train_resnet_cifar10", err)
    expect("test accuracy" not in out, "train_resnet on CIFAR-10 trained anyway", out)

    # A label byte of 12 in the third training file: the file, the record and the label are named.
    bad = bytearray((data / "data_batch_3.bin").read_bytes())
    bad[3073] = 12
    (data / "data_batch_3.bin").write_bytes(bytes(bad))
    code, out, err = run(cifar_program, "--data", str(data), "--steps", "1", "--quiet")
    expect(code == 1 and "data_batch_3.bin" in err and "record 1 has label 12" in err,
           f"a label of 12: exit code {code} and not the file, record and label named", err)

    # CIFAR-10 has no default directory: without --data (and PNN_DATA) the flag is asked for.
    env = {k: v for k, v in os.environ.items() if k != "PNN_DATA"}
    code, out, err = run(cifar_program, "--steps", "1", env=env)
    expect(code == 2 and "--data" in err and len(err.strip().splitlines()) == 1,
           f"no --data: exit code {code}, not 2 with one line naming --data", err)

for failure in failures:
    print("FAILED:", failure)
print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
