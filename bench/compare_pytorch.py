#!/usr/bin/python3
"""pnn against PyTorch on the example MLP, CNN and ResNet, side by side (bench/compare_pytorch.sh builds and calls this).

For each model and thread count, runs pnn's example program, bench/pytorch_models.py under the current PyPI
PyTorch (--pypi-python) and under Debian's (/usr/bin/python3) in turn, --repetitions times each, the order of
the sides rotated every repetition, with the same data (Fashion-MNIST), batch 64, SGD lr 0.05 momentum 0.9 and
thread count (pnn's --threads; torch.set_num_threads, OMP_NUM_THREADS, MKL_NUM_THREADS and
OPENBLAS_NUM_THREADS for PyTorch). Both time the training loop including batching and excluding evaluation:
pnn's fit() writes it as `seconds` in its metrics file, pytorch_models.py times the same loop. --mlp-steps,
--cnn-steps and --resnet-steps N time N steps and scale them to an epoch (938 steps); 0 is a whole epoch.
PyTorch takes --warmup untimed steps first; pnn's time includes its first steps.

Prints a table (median seconds per epoch, and the ratios PyTorch / pnn: above 1 means pnn is faster) and
writes docs/results/cpu_vs_pytorch.csv, which names each PyTorch's version, BLAS, oneDNN and vector
instructions, and the CPU.
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


def run_pytorch(python, model, threads, steps, warmup):
    command = [python, common.PYTORCH_MODELS, "--model", model, "--threads", str(threads), "--warmup", str(warmup)]
    if steps:
        command += ["--steps", str(steps)]
    return common.run_json(command, env=common.thread_environment(threads))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.environ.get("PNN_BUILD_DIR", "build"), help="pnn build directory")
    parser.add_argument("--pypi-python", default=os.path.join(common.ROOT, ".bench-venv", "bin", "python3"),
                        help="the Python of the virtual environment holding PyPI's torch")
    parser.add_argument("--sides", default="pnn,pypi,debian",
                        help="which sides run: pnn, pypi (PyPI's torch), debian (Debian's python3-torch)")
    parser.add_argument("--repetitions", type=int, default=5, help="runs of each side per model and thread count")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--models", default="mlp,cnn,resnet")
    parser.add_argument("--mlp-steps", type=int, default=0, help="timed steps of the MLP (0: one epoch)")
    parser.add_argument("--cnn-steps", type=int, default=300, help="timed steps of the CNN (0: one epoch)")
    parser.add_argument("--resnet-steps", type=int, default=100, help="timed steps of the ResNet (0: one epoch)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed PyTorch steps before the timed ones")
    parser.add_argument("--output", default=os.path.join(common.RESULTS, "cpu_vs_pytorch.csv"))
    args = parser.parse_args()
    build = os.path.join(common.ROOT, args.build) if not os.path.isabs(args.build) else args.build
    sides = args.sides.split(",")
    unknown = [side for side in sides if side not in ("pnn", "pypi", "debian")]
    if unknown or "pnn" not in sides:
        parser.error(f"--sides takes pnn (always) and pypi and/or debian, not {args.sides}")
    pythons = {"pypi": args.pypi_python, "debian": common.PYTHON}

    machine = common.machine()
    common.log(f"machine: {machine['cpu']}; load average {machine['load_average']:.2f}")
    rows = []
    for model in args.models.split(","):
        steps = {"mlp": args.mlp_steps, "cnn": args.cnn_steps, "resnet": args.resnet_steps}[model]
        for threads in [int(t) for t in args.threads.split(",")]:
            runs = {side: [] for side in sides}
            for repetition in range(args.repetitions):
                # Rotate the order, so a change in the machine's load hits every side alike.
                order = sides[repetition % len(sides):] + sides[:repetition % len(sides)]
                for side in order:
                    if side == "pnn":
                        runs[side].append(run_pnn(build, model, threads, steps))
                    else:
                        runs[side].append(run_pytorch(pythons[side], model, threads, steps, args.warmup))
                common.log(f"{model} threads={threads} run {repetition + 1}/{args.repetitions}: " + ", ".join(
                    f"{side} {runs[side][-1]['seconds_per_epoch']:.2f} s/epoch" for side in sides))
            medians = {side: common.median([r["seconds_per_epoch"] for r in runs[side]]) for side in sides}
            row = {"model": model, "threads": threads, "steps_timed": runs["pnn"][0]["steps"],
                   "repetitions": args.repetitions, "pnn_seconds_per_epoch": round(medians["pnn"], 4),
                   "pnn_ms_per_step": round(1000 * medians["pnn"] / STEPS_PER_EPOCH, 3),
                   "pnn_test_accuracy": round(common.median([r["test_accuracy"] for r in runs["pnn"]]), 4),
                   "pnn_runs": " ".join(f"{r['seconds_per_epoch']:.3f}" for r in runs["pnn"])}
            for side in sides:
                if side == "pnn":
                    continue
                row.update({
                    f"{side}_seconds_per_epoch": round(medians[side], 4),
                    f"{side}_ms_per_step": round(1000 * medians[side] / STEPS_PER_EPOCH, 3),
                    f"{side}_over_pnn": round(medians[side] / medians["pnn"], 3),
                    f"{side}_test_accuracy": round(common.median([r["test_accuracy"] for r in runs[side]]), 4),
                    f"{side}_runs": " ".join(f"{r['seconds_per_epoch']:.3f}" for r in runs[side]),
                    f"{side}_torch": runs[side][0]["torch"],
                    f"{side}_backends": runs[side][0]["blas"],
                })
            row.update({"cpu": machine["cpu"], "date": machine["date"]})
            rows.append(row)

    others = [side for side in sides if side != "pnn"]
    names = {"pypi": "PyPI torch", "debian": "Debian torch"}
    header = f"{'model':<7} {'threads':>7} {'steps':>6} {'pnn s/epoch':>12}" + "".join(
        f" {names[s] + ' s/epoch':>20} {names[s] + '/pnn':>16}" for s in others)
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:<7} {row['threads']:>7} {row['steps_timed']:>6} {row['pnn_seconds_per_epoch']:>12.3f}" +
              "".join(f" {row[s + '_seconds_per_epoch']:>20.3f} {row[s + '_over_pnn']:>16.2f}" for s in others))
    print(f"(medians of {args.repetitions} runs of each side, in rotating order; ratio > 1: pnn is faster; "
          f"{machine['cpu']})")
    for side in others:
        print(f"{names[side]}: torch {rows[0][side + '_torch']}, {rows[0][side + '_backends']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {os.path.relpath(args.output, common.ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
