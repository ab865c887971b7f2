#!/usr/bin/env python3
"""scripts/plot_metrics.py draws two runs' metrics files into a PNG of the asked size, and refuses a missing,
empty or malformed file with one line naming the file (and the line), writing no PNG.

usage: check_plot_metrics.py PLOT_METRICS_SCRIPT
"""
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

script = str(Path(sys.argv[1]).resolve())

# Records as pnn/train/metrics.hpp's to_json writes them: a classifier's, and a regression model's (no
# test_accuracy).
CLASSIFIER = [
    '{"epoch": 1, "steps": 938, "train_loss": 0.5412, "test_loss": 0.4011, "test_accuracy": 0.8542, '
    '"seconds": 12.5, "samples_per_second": 4800}',
    '{"epoch": 2, "steps": 1876, "train_loss": 0.3518, "test_loss": 0.3502, "test_accuracy": 0.8731, '
    '"seconds": 12.1, "samples_per_second": 4958.7}',
    '{"epoch": 3, "steps": 2814, "train_loss": 0.3012, "test_loss": 0.3321, "test_accuracy": 0.8803, '
    '"seconds": 12.3, "samples_per_second": 4877}',
]
REGRESSION = [
    '{"epoch": 1, "steps": 10, "train_loss": 2.5, "test_loss": 2.25, "seconds": 0.5, "samples_per_second": 640}',
    '{"epoch": 2, "steps": 20, "train_loss": 1.25, "test_loss": 1.5, "seconds": 0.25, "samples_per_second": 1280}',
]

failures = []


def expect(condition, what, output=""):
    if not condition:
        failures.append(what + ("\n" + output if output else ""))


def run(*arguments):
    result = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def png_size(path):
    """(width, height) from a PNG's signature and IHDR chunk, or None if it is not a PNG."""
    data = Path(path).read_bytes()
    if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


with tempfile.TemporaryDirectory() as temporary:
    directory = Path(temporary)
    first, second = directory / "sgd.jsonl", directory / "adam.jsonl"
    first.write_text("\n".join(CLASSIFIER) + "\n")
    second.write_text("\n".join(CLASSIFIER[:2]) + "\n")
    regression = directory / "regression.jsonl"
    regression.write_text("\n".join(REGRESSION) + "\n")

    # Two runs on one plot, at the asked size; then with labels and a regression run; then a single point.
    for arguments, size in (([str(first), str(second)], (640, 480)),
                            ([str(first), str(regression), "--label", "a", "--label", "b"], (1000, 750)),
                            ([str(regression)], (1200, 900))):
        output = directory / "curves.png"
        output.unlink(missing_ok=True)
        size_flag = [] if size == (1200, 900) else ["--size", f"{size[0]}x{size[1]}"]
        code, text = run(*arguments, "-o", str(output), *size_flag)
        expect(code == 0, f"{arguments}: exit code {code}, not 0", text)
        expect(output.exists() and png_size(output) == size,
               f"{arguments}: no PNG of {size[0]} x {size[1]} pixels: {png_size(output) if output.exists() else None}",
               text)
        expect(not [p for p in directory.iterdir() if p.name.startswith(".curves.png")],
               f"{arguments}: a temporary file was left behind")

    # Bad files: (name, content or None for a missing file, text the one error line must hold).
    bad_cases = [
        ("missing.jsonl", None, "missing.jsonl: no such file"),
        ("empty.jsonl", "", "empty.jsonl: empty"),
        ("blank.jsonl", "\n\n", "blank.jsonl: empty"),
        ("garbled.jsonl", CLASSIFIER[0] + "\n" + CLASSIFIER[1][:40] + "\n", "garbled.jsonl:2: not a JSON object"),
        ("list.jsonl", "[1, 2]\n", "list.jsonl:1: not a JSON object but list"),
        ("no-steps.jsonl", CLASSIFIER[0] + "\n" + CLASSIFIER[1] + "\n" + '{"epoch": 3, "train_loss": 1}\n',
         'no-steps.jsonl:3: no "steps"'),
        ("string-loss.jsonl", CLASSIFIER[0].replace("0.5412", '"0.5412"') + "\n",
         'string-loss.jsonl:1: "train_loss" is "0.5412", not a finite number'),
        ("nan.jsonl", CLASSIFIER[0].replace("0.4011", "NaN") + "\n", 'nan.jsonl:1: "test_loss" is NaN'),
        ("joined.jsonl", CLASSIFIER[1] + "\n" + CLASSIFIER[0] + "\n", "joined.jsonl:2: steps go back"),
    ]
    for name, content, message in bad_cases:
        path = directory / name
        if content is not None:
            path.write_text(content)
        output = directory / "bad.png"
        code, text = run(str(first), str(path), "-o", str(output))
        lines = text.strip().splitlines()
        expect(code == 1 and len(lines) == 1 and message in text and str(path) in text,
               f"{name}: exit code {code} (not 1) or not one line naming {path} with '{message}'", text)
        expect(not output.exists(), f"{name}: a PNG was written anyway")

    # Usage errors: exit code 2, naming the flag.
    for arguments, flag in (([str(first), "--label", "only-one", "--label", "two", "--label", "three"], "--label"),
                            ([str(first), "--size", "12x9"], "--size"),
                            ([str(first), "--size", "big"], "--size")):
        output = directory / "usage.png"
        code, text = run(*arguments, "-o", str(output))
        expect(code == 2 and flag in text and not output.exists(),
               f"{arguments}: exit code {code} (not 2), or {flag} not named, or a PNG written", text)

for failure in failures:
    print("FAILED:", failure)
print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
