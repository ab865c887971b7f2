#!/usr/bin/env python3
"""Draws the metrics files the examples write with --metrics as PNG curves.

usage: plot_metrics.py RUN.jsonl [RUN2.jsonl ...] -o curves.png [--label NAME ...] [--size 1200x900]

A metrics file holds one JSON object per line, one per epoch (pnn/train/metrics.hpp): epoch, steps (optimiser
steps so far), train_loss, test_loss, test_accuracy (classifiers only), seconds (the epoch's own duration)
and samples_per_second. The plot has the losses (train solid, test dashed) and the test accuracy against
optimiser steps on the left and against training seconds (the epochs' durations added up) on the right;
each file is one run, in one colour, labelled with --label or its file name. A file of regression runs (no
test_accuracy) has no accuracy curve; when no file has one, the plot has only the loss row.

Every file is read and checked before anything is drawn: a missing, empty or malformed file is named, with
the line, and no PNG is written. The PNG is written under a temporary name and renamed into place, so a
reader never sees half of it. Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

REQUIRED = ("steps", "seconds", "train_loss", "test_loss")
OPTIONAL = ("test_accuracy",)


class MetricsError(Exception):
    pass


def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_run(path):
    """The records of one metrics file, checked: a list of dicts with every REQUIRED key a finite number."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricsError(f"{path}: no such file")
    except IsADirectoryError:
        raise MetricsError(f"{path}: is a directory, not a metrics file")
    except (OSError, UnicodeDecodeError) as error:
        raise MetricsError(f"{path}: cannot read it: {error}")
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise MetricsError(f"{where}: not a JSON object ({error.msg} at column {error.colno})")
        if not isinstance(record, dict):
            raise MetricsError(f"{where}: not a JSON object but {type(record).__name__}")
        for key in REQUIRED:
            if key not in record:
                raise MetricsError(f"{where}: no \"{key}\" (a metrics record has {', '.join(REQUIRED)})")
        for key in REQUIRED + OPTIONAL:
            if key in record and not number(record[key]):
                raise MetricsError(f"{where}: \"{key}\" is {json.dumps(record[key])}, not a finite number")
        if records and record["steps"] < records[-1]["steps"]:
            raise MetricsError(f"{where}: steps go back from {records[-1]['steps']} to {record['steps']} "
                               "(one run per file: were two files joined?)")
        records.append(record)
    if not records:
        raise MetricsError(f"{path}: empty, no metrics records (was the run stopped before its first epoch ended?)")
    return records


def parse_size(text):
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT in pixels, e.g. 1200x900, got {text}")
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise argparse.ArgumentTypeError(f"each side must be 100 to 10000 pixels, got {text}")
    return width, height


def labels_for(paths, given):
    if given:
        return given
    names = [Path(p).name for p in paths]
    # Two runs' files of the same name (run1/metrics.jsonl, run2/metrics.jsonl): their paths tell them apart.
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def draw(runs, labels, output, size):
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    with_accuracy = any("test_accuracy" in r for records in runs for r in records)
    rows = 2 if with_accuracy else 1
    dpi = 100
    figure, axes = plt.subplots(rows, 2, figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, squeeze=False)
    for index, (records, label) in enumerate(zip(runs, labels)):
        colour = f"C{index % 10}"
        steps = [r["steps"] for r in records]
        seconds, total = [], 0.0
        for r in records:
            total += r["seconds"]
            seconds.append(total)
        for column, x in enumerate((steps, seconds)):
            loss = axes[0][column]
            loss.plot(x, [r["train_loss"] for r in records], color=colour, marker="o", label=f"{label} train")
            loss.plot(x, [r["test_loss"] for r in records], color=colour, marker="s", linestyle="--",
                      label=f"{label} test")
            if with_accuracy:
                points = [(xi, 100 * r["test_accuracy"]) for xi, r in zip(x, records) if "test_accuracy" in r]
                if points:
                    axes[1][column].plot(*zip(*points), color=colour, marker="o", label=label)
    for column, x_label in enumerate(("optimiser steps", "training seconds")):
        axes[0][column].set_title(f"loss against {x_label}")
        axes[0][column].set_ylabel("loss")
        axes[rows - 1][column].set_xlabel(x_label)
        if with_accuracy:
            axes[1][column].set_title(f"test accuracy against {x_label}")
            axes[1][column].set_ylabel("test accuracy (%)")
        for row in range(rows):
            axes[row][column].grid(True, alpha=0.3)
            axes[row][column].legend(fontsize="small")
    figure.tight_layout()
    output = Path(output)
    # A temporary file beside the output, renamed over it once complete.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".png", dir=output.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # the permissions a plain open() gives, not mkstemp's 0600
    try:
        with os.fdopen(descriptor, "wb") as stream:
            figure.savefig(stream, format="png", dpi=dpi)
        os.replace(temporary, output)
    except BaseException:
        os.unlink(temporary)
        raise
    finally:
        plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description="Draw pnn metrics files (--metrics) as PNG curves.")
    parser.add_argument("runs", nargs="+", metavar="RUN.jsonl", help="metrics files, one per run")
    parser.add_argument("-o", "--output", required=True, metavar="PNG", help="the PNG file to write")
    parser.add_argument("--label", action="append", default=[], metavar="NAME",
                        help="the name of a run in the legend, once per file in their order (default: file names)")
    parser.add_argument("--size", type=parse_size, default=(1200, 900), metavar="WxH",
                        help="the image's size in pixels (default 1200x900)")
    options = parser.parse_args()
    if options.label and len(options.label) != len(options.runs):
        parser.error(f"--label: given {len(options.label)} times for {len(options.runs)} files; give it once per "
                     "file or not at all")
    output_directory = Path(options.output).parent
    if not output_directory.is_dir():
        parser.error(f"-o: the directory {output_directory} does not exist")
    try:
        runs = [read_run(path) for path in options.runs]
    except MetricsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        import matplotlib  # noqa: F401  (checked here, so a missing package is named, not a traceback)
    except ImportError:
        print("error: matplotlib is missing: apt-get install python3-matplotlib (or pip install matplotlib)",
              file=sys.stderr)
        return 1
    draw(runs, labels_for(options.runs, options.label), options.output, options.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
