#!/usr/bin/python3
"""pnn's parallel strategies on this machine, next to PyTorch DDP: epoch time, speedup, efficiency,
communication, overlap and pipeline bubble.

    /usr/bin/python3 bench/strategies.py [--repetitions 3] [--cnn-steps 150] [--quick]

Installs what is missing and builds bench/strategies (bench/prepare.sh) in $PNN_BUILD_DIR (default build),
then runs, round-robin so that a change in the machine's load hits every configuration alike:

  pnn (bench/strategies, ranks are threads of one process, 1 matrix-product thread each)
    serial 1 thread (the reference), serial 2 threads, data parallel 1 and 2 workers (with overlap, and
    2 workers without), model parallel and pipeline (8 micro-batches, 1F1B) on 2 workers, for the
    example MLP and CNN; the pipeline cut is the examples' (MLP before layer 2, CNN before layer 3);
  PyTorch (bench/pytorch_models.py), 1 thread per process
    a plain single process, and DistributedDataParallel (gloo) with 1 and 2 processes, global batch 64;
  the bubble sweep: a pipeline of two equal stages (the "balanced" MLP 784-512-512 | 512-512-10 of
    bench/strategies_balanced.cpp) with m = 1, 2, 4, 8 micro-batches, against (p - 1) / (m + p - 1).

Every run does 10 untimed warm-up steps, then times N steps (the MLP: a whole epoch; the CNN and the
balanced MLP: --cnn-steps / --balanced-steps) and scales them to an epoch of 938 steps. Speedup is the
framework's own serial 1-thread time over the configuration's; efficiency is speedup / workers.

Writes docs/results/strategies.csv, docs/results/strategies.json (every run) and docs/results/strategies.png.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import common

PNN_CONFIGURATIONS = [
    # (label, strategy, workers, threads, extra flags)
    ("serial", "serial", 1, 1, []),
    ("serial, 2 threads", "serial", 1, 2, []),
    ("data parallel", "data_parallel", 1, 1, []),
    ("data parallel", "data_parallel", 2, 1, []),
    ("data parallel, no overlap", "data_parallel", 2, 1, ["--no-overlap"]),
    ("model parallel", "model_parallel", 2, 1, []),
    ("pipeline m=8 1F1B", "pipeline", 2, 1, ["--microbatches", "8"]),
]
PYTORCH_CONFIGURATIONS = [
    # (label, processes)
    ("PyTorch serial", 0),
    ("PyTorch DDP", 1),
    ("PyTorch DDP", 2),
]
BUBBLE_MICROBATCHES = [1, 2, 4, 8]


def pnn_command(binary, model, strategy, workers, threads, steps, extra):
    command = [binary, "--model", model, "--strategy", strategy, "--workers", str(workers), "--threads",
               str(threads), "--warmup", "10"] + extra
    if steps:
        command += ["--steps", str(steps)]
    return command


def pytorch_command(model, processes, steps):
    command = [common.PYTHON, common.PYTORCH_MODELS, "--model", model, "--threads", "1", "--warmup", "10",
               "--processes", str(processes)]
    if steps:
        command += ["--steps", str(steps)]
    return command


def build_jobs(args, binary):
    """Every run of one round: (key, command, threads)."""
    jobs = []
    for model in args.models:
        steps = args.mlp_steps if model == "mlp" else args.cnn_steps
        for label, strategy, workers, threads, extra in PNN_CONFIGURATIONS:
            key = ("pnn", model, label, workers)
            jobs.append((key, pnn_command(binary, model, strategy, workers, threads, steps, extra), threads))
        if not args.no_pytorch:
            for label, processes in PYTORCH_CONFIGURATIONS:
                key = ("pytorch", model, label, max(processes, 1))
                jobs.append((key, pytorch_command(model, processes, steps), 1))
    if not args.no_bubble:
        jobs.append((("pnn", "balanced", "serial", 1),
                     pnn_command(binary, "balanced", "serial", 1, 1, args.balanced_steps, []), 1))
        for m in BUBBLE_MICROBATCHES:
            jobs.append((("pnn", "balanced", f"pipeline m={m} 1F1B", 2),
                         pnn_command(binary, "balanced", "pipeline", 2, 1, args.balanced_steps,
                                     ["--microbatches", str(m)]), 1))
    return jobs


def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def summarise(key, runs):
    """One row of the table from the repetitions of one configuration (medians over repetitions)."""
    framework, model, label, workers = key
    first = runs[0]
    row = {
        "framework": framework, "model": model, "strategy": label, "workers": workers,
        "threads_per_worker": first.get("threads", 1), "steps_timed": first["steps"], "repetitions": len(runs),
        "seconds_per_epoch": common.median([r["seconds_per_epoch"] for r in runs]),
        "ms_per_step": 1000 * common.median([r["seconds_per_step"] for r in runs]),
        "runs_seconds_per_epoch": " ".join(f"{r['seconds_per_epoch']:.3f}" for r in runs),
    }
    if "ranks" in first:
        def per_step(field):  # milliseconds per step, mean over ranks, median over repetitions
            return 1000 * common.median([mean(rank[field] / rank["steps"] for rank in r["ranks"]) for r in runs])
        row["compute_ms_per_step"] = per_step("compute_seconds")
        row["communication_ms_per_step"] = per_step("communication_seconds")
        if "overlap" in first:
            row["exposed_ms_per_step"] = per_step("exposed_seconds")
            # The part of all-reduce time hidden behind backward, over all ranks' reductions.
            row["hidden_fraction"] = common.median([
                1 - sum(rank["exposed_seconds"] for rank in r["ranks"]) /
                max(sum(rank["communication_seconds"] for rank in r["ranks"]), 1e-12) for r in runs])
            row["buckets"] = first["buckets"]
        if "microbatches" in first:
            row["microbatches"] = first["microbatches"]
            row["bubble_measured"] = common.median([mean(rank["bubble_fraction"] for rank in r["ranks"]) for r in runs])
            for rank in range(len(first["ranks"])):
                row[f"bubble_rank{rank}"] = common.median([r["ranks"][rank]["bubble_fraction"] for r in runs])
            row["bubble_theory"] = first["bubble_theory"]
    return row


def add_speedups(rows):
    """Speedup over the same framework's serial 1-thread run of the same model, and efficiency."""
    reference = {}
    for row in rows:
        if row["strategy"] in ("serial", "PyTorch serial") and row["threads_per_worker"] == 1:
            reference[(row["framework"], row["model"])] = row["seconds_per_epoch"]
    for row in rows:
        base = reference.get((row["framework"], row["model"]))
        if base:
            row["speedup"] = base / row["seconds_per_epoch"]
            cores = row["workers"] * row["threads_per_worker"]
            row["efficiency"] = row["speedup"] / cores
    return rows


def find(rows, framework, model, strategy, workers):
    for row in rows:
        if (row["framework"], row["model"], row["strategy"], row["workers"]) == (framework, model, strategy, workers):
            return row
    return None


def print_tables(rows, machine):
    def value(row, field, form="{:.2f}"):
        return form.format(row[field]) if field in row else "-"

    print(f"\nStrategies on {machine['cpu']} (load average at start {machine['load_average']:.2f}); "
          "medians over repetitions; workers have 1 thread each")
    header = (f"{'framework':<8} {'model':<5} {'strategy':<26} {'workers':>7} {'s/epoch':>8} {'ms/step':>8} "
              f"{'speedup':>7} {'effic.':>6} {'comm ms':>8} {'exposed':>8} {'hidden':>6} {'bubble':>6} {'theory':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row["model"] == "balanced":
            continue
        print(f"{row['framework']:<8} {row['model']:<5} {row['strategy']:<26} {row['workers']:>7} "
              f"{row['seconds_per_epoch']:>8.2f} {row['ms_per_step']:>8.2f} {value(row, 'speedup'):>7} "
              f"{value(row, 'efficiency'):>6} {value(row, 'communication_ms_per_step'):>8} "
              f"{value(row, 'exposed_ms_per_step'):>8} {value(row, 'hidden_fraction'):>6} "
              f"{value(row, 'bubble_measured'):>6} {value(row, 'bubble_theory'):>6}")

    balanced = [row for row in rows if row["model"] == "balanced"]
    if balanced:
        print("\nPipeline bubble, balanced MLP 784-512-512 | 512-512-10 on 2 stages, 1F1B "
              "(bubble = idle part of each rank's step, mean of the ranks)")
        header = (f"{'configuration':<20} {'ms/step':>8} {'speedup':>7} {'bubble':>7} {'rank 0':>7} {'rank 1':>7} "
                  f"{'theory':>7}")
        print(header)
        print("-" * len(header))
        for row in balanced:
            print(f"{row['strategy']:<20} {row['ms_per_step']:>8.2f} {value(row, 'speedup'):>7} "
                  f"{value(row, 'bubble_measured'):>7} {value(row, 'bubble_rank0'):>7} {value(row, 'bubble_rank1'):>7} "
                  f"{value(row, 'bubble_theory'):>7}")

    print("\nHeadline: data parallel, 2 workers against 1 worker (goals: CNN >= 1.8x, MLP > 1x)")
    for model, goal in (("cnn", 1.8), ("mlp", 1.0)):
        one, two = find(rows, "pnn", model, "data parallel", 1), find(rows, "pnn", model, "data parallel", 2)
        if one and two:
            ratio = one["seconds_per_epoch"] / two["seconds_per_epoch"]
            met = ratio >= goal if model == "cnn" else ratio > goal
            line = f"  pnn {model}: {ratio:.2f}x ({'met' if met else 'NOT met'})"
            t1, t2 = find(rows, "pytorch", model, "PyTorch DDP", 1), find(rows, "pytorch", model, "PyTorch DDP", 2)
            if t1 and t2:
                line += f"; PyTorch DDP 2 processes against 1: {t1['seconds_per_epoch'] / t2['seconds_per_epoch']:.2f}x"
            print(line)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [  # (label, framework, strategy, workers)
        ("pnn serial\n2 threads", "pnn", "serial, 2 threads", 1),
        ("pnn data par.\n1 worker", "pnn", "data parallel", 1),
        ("pnn data par.\n2 workers", "pnn", "data parallel", 2),
        ("pnn data par.\nno overlap", "pnn", "data parallel, no overlap", 2),
        ("pnn model par.\n2 workers", "pnn", "model parallel", 2),
        ("pnn pipeline\nm=8, 2 workers", "pnn", "pipeline m=8 1F1B", 2),
        ("PyTorch DDP\n1 process", "pytorch", "PyTorch DDP", 1),
        ("PyTorch DDP\n2 processes", "pytorch", "PyTorch DDP", 2),
    ]
    models = [m for m in ("mlp", "cnn") if any(row["model"] == m for row in rows)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [2.3, 1]})
    width = 0.8 / max(len(models), 1)
    colours = {"mlp": "#4c72b0", "cnn": "#dd8452"}
    for index, model in enumerate(models):
        xs, heights = [], []
        for position, (_, framework, strategy, workers) in enumerate(bars):
            row = find(rows, framework, model, strategy, workers)
            if row and "speedup" in row:
                xs.append(position + (index - (len(models) - 1) / 2) * width)
                heights.append(row["speedup"])
        drawn = left.bar(xs, heights, width, label=model.upper(), color=colours[model])
        left.bar_label(drawn, fmt="%.2f", fontsize=8, padding=2)
    left.axhline(1, color="black", linewidth=0.8)
    left.axhline(2, color="grey", linewidth=0.8, linestyle="--", label="ideal for 2 cores")
    left.axvspan(5.5, len(bars) - 0.5, color="#eeeeee", zorder=0)
    left.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    left.set_ylabel("speedup over the framework's serial 1-thread run")
    left.set_title("Speedup per strategy (2 cores, 1 thread per worker; grey: PyTorch)")
    left.legend(fontsize=8, loc="upper left")
    left.set_ylim(0, max(2.3, left.get_ylim()[1]))

    pipeline = sorted((row for row in rows if row["model"] == "balanced" and "microbatches" in row),
                      key=lambda row: row["microbatches"])
    if pipeline:
        ms = [row["microbatches"] for row in pipeline]
        right.plot(ms, [row["bubble_theory"] for row in pipeline], "k--o", label="theory (p-1)/(m+p-1)")
        right.plot(ms, [row["bubble_measured"] for row in pipeline], "-o", color="#c44e52", label="measured, mean of ranks")
        for rank, marker in ((0, "^"), (1, "v")):
            key = f"bubble_rank{rank}"
            right.plot(ms, [row[key] for row in pipeline], marker, color="#c44e52", alpha=0.5,
                       label=f"measured, stage {rank}")
        right.set_xscale("log", base=2)
        right.set_xticks(ms, [str(m) for m in ms])
        right.set_ylim(0, 1)
        right.set_xlabel("micro-batches m (batch 64)")
        right.set_ylabel("bubble: idle fraction of a step")
        right.set_title("Pipeline bubble, 2 balanced stages, 1F1B")
        right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.environ.get("PNN_BUILD_DIR", "build"), help="pnn build directory")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn", type=lambda text: text.split(","))
    parser.add_argument("--mlp-steps", type=int, default=0, help="timed MLP steps (0: one epoch)")
    parser.add_argument("--cnn-steps", type=int, default=150, help="timed CNN steps (0: one epoch)")
    parser.add_argument("--balanced-steps", type=int, default=200, help="timed steps of the bubble sweep")
    parser.add_argument("--no-pytorch", action="store_true", help="skip the PyTorch runs")
    parser.add_argument("--no-bubble", action="store_true", help="skip the pipeline bubble sweep")
    parser.add_argument("--no-build", action="store_true", help="use the built binary as it is")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 300 MLP / 50 CNN / 100 balanced steps")
    parser.add_argument("--output", default=common.RESULTS, help="folder for strategies.{csv,json,png}")
    args = parser.parse_args()
    if args.quick:
        args.repetitions, args.mlp_steps, args.cnn_steps, args.balanced_steps = 1, 300, 50, 100

    if not args.no_build:
        subprocess.run(["bash", os.path.join(common.HERE, "prepare.sh"), "bench/strategies"],
                       env=dict(os.environ, PNN_BUILD_DIR=args.build), check=True, cwd=common.ROOT)
    build = args.build if os.path.isabs(args.build) else os.path.join(common.ROOT, args.build)
    binary = os.path.join(build, "bench", "strategies")
    if not os.path.exists(binary):
        sys.exit(f"strategies.py: {binary} is missing: build it with `meson compile -C {args.build} bench/strategies` "
                 "(it needs Google Benchmark's package to be found, libbenchmark-dev)")

    machine = common.machine()
    jobs = build_jobs(args, binary)
    common.log(f"{len(jobs)} runs x {args.repetitions} repetitions on {machine['cpu']}, "
               f"load average {machine['load_average']:.2f}")
    results = {job[0]: [] for job in jobs}
    started = time.time()
    for repetition in range(args.repetitions):
        for key, command, threads in jobs:
            result = common.run_json(command, env=common.thread_environment(threads))
            results[key].append(result)
            common.log(f"[{time.time() - started:6.0f} s] round {repetition + 1}: {' / '.join(map(str, key))}: "
                       f"{result['seconds_per_step'] * 1000:.2f} ms/step")

    rows = add_speedups([summarise(key, runs) for key, runs in results.items()])
    print_tables(rows, machine)

    os.makedirs(args.output, exist_ok=True)
    fields = []
    for row in rows:
        fields += [field for field in row if field not in fields]
    with open(os.path.join(args.output, "strategies.csv"), "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    with open(os.path.join(args.output, "strategies.json"), "w") as stream:
        json.dump({"machine": machine, "runs": [{"key": list(k), "results": v} for k, v in results.items()]},
                  stream, indent=1)
    plot(rows, os.path.join(args.output, "strategies.png"))
    print(f"\nwrote {os.path.relpath(args.output, common.ROOT)}/strategies.csv, strategies.json, strategies.png "
          f"in {time.time() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
