#!/usr/bin/python3
"""pnn against PyTorch on the example MLP and CNN, side by side (bench/compare_pytorch.sh builds and calls this).

For each model and thread count, runs pnn's example program and bench/pytorch_models.py alternately
(--mlp-repetitions / --repetitions times each), with the same data (Fashion-MNIST), batch 64, SGD lr 0.05
momentum 0.9 and thread count. Both time the training loop including batching and excluding evaluation: pnn's fit() writes
it as `seconds` in its metrics file, pytorch_models.py times the same loop. --cnn-steps / --mlp-steps N
times N steps and scales to an epoch (938 steps) instead of a whole epoch.

Prints a table (median seconds per epoch, and the ratio PyTorch / pnn: above 1 means pnn is faster) and
writes docs/results/cpu_vs_pytorch.csv.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

import common

STEPS_PER_EPOCH = 938  # 60000 Fashion-MNIST images in batches of 64


def run_pnn(build, model, threads, steps):
    with tempfile.TemporaryDirectory() as scratch:
        metrics = os.path.join(scratch, "metrics.jsonl")
        command = [os.path.join(build, "examples", f"train_{model}"), "--epochs", "1", "--threads", str(threads),
                   "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--batch", "64",
                   "--metrics", metrics, "--quiet"]
        if steps:
            command += ["--steps", str(steps)]
        completed = subprocess.run(command, env=common.thread_environment(threads), capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
        with open(metrics) as stream:
            last = json.loads(stream.read().strip().splitlines()[-1])
    return {"seconds": last["seconds"], "steps": last["steps"],
            "seconds_per_epoch": last["seconds"] / last["steps"] * STEPS_PER_EPOCH,
            "test_accuracy": last["test_accuracy"]}


def run_pytorch(model, threads, steps):
    command = [common.PYTHON, common.PYTORCH_MODELS, "--model", model, "--threads", str(threads)]
    if steps:
        command += ["--steps", str(steps)]
    return common.run_json(command, env=common.thread_environment(threads))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.environ.get("PNN_BUILD_DIR", "build"), help="pnn build directory")
    parser.add_argument("--repetitions", type=int, default=3, help="runs of each side for the CNN")
    parser.add_argument("--mlp-repetitions", type=int, default=5, help="runs of each side for the MLP (short)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--mlp-steps", type=int, default=0, help="timed steps of the MLP (0: one epoch)")
    parser.add_argument("--cnn-steps", type=int, default=0, help="timed steps of the CNN (0: one epoch)")
    parser.add_argument("--output", default=os.path.join(common.RESULTS, "cpu_vs_pytorch.csv"))
    args = parser.parse_args()
    build = os.path.join(common.ROOT, args.build) if not os.path.isabs(args.build) else args.build

    machine = common.machine()
    common.log(f"machine: {machine['cpu']}; load average {machine['load_average']:.2f}")
    rows = []
    for model in args.models.split(","):
        steps = args.mlp_steps if model == "mlp" else args.cnn_steps
        for threads in [int(t) for t in args.threads.split(",")]:
            pnn_runs, torch_runs = [], []
            repetitions = args.mlp_repetitions if model == "mlp" else args.repetitions
            for repetition in range(repetitions):
                # Alternate, so a change in the machine's load hits both sides alike.
                pnn_runs.append(run_pnn(build, model, threads, steps))
                torch_runs.append(run_pytorch(model, threads, steps))
                common.log(f"{model} threads={threads} run {repetition + 1}/{repetitions}: "
                           f"pnn {pnn_runs[-1]['seconds_per_epoch']:.2f} s/epoch, "
                           f"pytorch {torch_runs[-1]['seconds_per_epoch']:.2f} s/epoch")
            pnn_median = common.median([r["seconds_per_epoch"] for r in pnn_runs])
            torch_median = common.median([r["seconds_per_epoch"] for r in torch_runs])
            rows.append({
                "model": model, "threads": threads, "steps_timed": pnn_runs[0]["steps"],
                "repetitions": repetitions,
                "pnn_seconds_per_epoch": round(pnn_median, 4),
                "pytorch_seconds_per_epoch": round(torch_median, 4),
                "ratio_pytorch_over_pnn": round(torch_median / pnn_median, 3),
                "pnn_ms_per_step": round(1000 * pnn_median / STEPS_PER_EPOCH, 3),
                "pytorch_ms_per_step": round(1000 * torch_median / STEPS_PER_EPOCH, 3),
                "pnn_test_accuracy": round(common.median([r["test_accuracy"] for r in pnn_runs]), 4),
                "pytorch_test_accuracy": round(common.median([r["test_accuracy"] for r in torch_runs]), 4),
                "pnn_runs": " ".join(f"{r['seconds_per_epoch']:.3f}" for r in pnn_runs),
                "pytorch_runs": " ".join(f"{r['seconds_per_epoch']:.3f}" for r in torch_runs),
                "torch_version": torch_runs[0]["torch"], "openblas_coretype": torch_runs[0]["openblas_coretype"],
                "pytorch_blas": torch_runs[0]["blas"],
                "cpu": machine["cpu"], "date": machine["date"],
            })

    header = f"{'model':<6} {'threads':>7} {'steps':>6} {'pnn s/epoch':>12} {'PyTorch s/epoch':>16} {'PyTorch/pnn':>12}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:<6} {row['threads']:>7} {row['steps_timed']:>6} {row['pnn_seconds_per_epoch']:>12.3f} "
              f"{row['pytorch_seconds_per_epoch']:>16.3f} {row['ratio_pytorch_over_pnn']:>12.2f}")
    print(f"(medians of alternating runs, {args.mlp_repetitions} for the MLP and {args.repetitions} for the CNN; "
          f"ratio > 1: pnn is faster; {machine['cpu']})")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {os.path.relpath(args.output, common.ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
