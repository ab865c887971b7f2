#!/usr/bin/env python3
"""Runs pnn's GPU benchmarks and PyTorch's side by side and writes the results; bench/gpu/run.sh calls it.

    python3 bench/gpu/compare.py --bin build-gpu [--python PYTHON] [--repetitions 3] [--steps 200] [--quick]

Step times: build-gpu/step_time (pnn: eager, uncaptured, graph) and bench/gpu/pytorch_gpu.py (PyTorch:
eager, graph) run alternately, --repetitions times, the order swapped every repetition; each reports the
median step time over --steps steps, and the table shows the median of those medians. Then
build-gpu/bandwidth and build-gpu/gemm run once. Writes, in docs/results/:

    gpu_step_times.csv   one row per (model, batch): every side's median step time and the ratios
    gpu_checks.csv       graph replays and the uncaptured path against model.train_step (weights after
                         a few steps from the same seed and batches)
    gpu_bandwidth.csv    GB/s of the fused element-wise kernels, against theoretical and cudaMemcpy peaks
    gpu_gemm.csv         pnn::gemm against cublasSgemm per product shape
    gpu_runs.jsonl       every JSON line every program printed, after a line describing the run

(--results DIR writes them elsewhere, e.g. into the folder a remote GPU machine sends back.)

and prints the tables. Goals (issue 4): pnn graph step <= 0.5 x PyTorch eager; fused element-wise kernels
>= 80% of the memory bandwidth; pnn::gemm within 5% of cuBLAS called directly. pnn's eager step returns
the loss to the host (a synchronisation every step) and PyTorch's eager loop does not: the like-for-like
eager ratio is pnn_uncaptured/pytorch_eager.

Each program run is stopped after --timeout seconds (240), so that runs fit the GPU machines' 10-minute
commands, and gpu_runs.jsonl grows line by line as the programs print: a run stopped from outside keeps
what it measured. Exits non-zero, after the tables, when a program failed or a correctness check did
not hold (graph replay or uncaptured weights off model.train_step's by more than --check-tolerance, or a
graph captured other than once), naming each.
"""

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(ROOT, "docs", "results")  # --results changes it


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


class Journal:
    """gpu_runs.jsonl, written line by line and flushed, so that a run stopped from outside keeps its lines."""

    def __init__(self, path):
        self.path = path
        self.stream = open(path, "w")

    def write(self, line):
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()


def run_lines(command, timeout, journal=None, **fields):
    """Runs a program that prints JSON lines, stopping it after `timeout` seconds; returns the lines parsed,
    each with `fields` added and written to `journal` as it arrives (a failure becomes an error line)."""
    log("$", " ".join(command))
    program = os.path.basename(command[1] if command[1:] and command[1].endswith(".py") else command[0])
    lines = []

    def keep(line):
        line.update(fields)
        lines.append(line)
        if journal:
            journal.write(line)

    # The program's stderr goes straight to ours; its stdout is read as it prints. PyTorch gets the library
    # path from before pnn's CUDA libraries were put on it (bench/gpu/cuda_libraries.sh), so that it loads
    # its own wheels' cuBLAS and NCCL.
    environment = os.environ.copy()
    if command[1:] and command[1].endswith(".py") and "PNN_LD_LIBRARY_PATH_BEFORE" in environment:
        environment["LD_LIBRARY_PATH"] = environment["PNN_LD_LIBRARY_PATH_BEFORE"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
    expired = threading.Event()

    def stop():
        expired.set()
        process.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        for text in process.stdout:
            text = text.strip()
            if text.startswith("{"):
                try:
                    keep(json.loads(text))
                except json.JSONDecodeError:
                    log("unparsable line:", text)
    finally:
        timer.cancel()
    status = process.wait()
    if expired.is_set():
        keep({"program": program, "error": f"timed out after {timeout:g} s"})
    elif status != 0 and not any("error" in line for line in lines):
        keep({"program": program, "error": f"exit status {status}"})
    return lines


def failed_checks(step_lines, tolerance):
    """The correctness checks in step_time's lines that did not hold, one sentence each."""
    failures = []
    for line in step_lines:
        where = f"{line.get('model')} batch {line.get('batch')}"
        if line.get("check") == "graph_vs_eager" and "error" not in line:
            for key in ("max_abs_difference_graph", "max_abs_difference_uncaptured"):
                difference = line.get(key)  # None: not finite (a NaN or an infinity in the weights)
                if difference is None:
                    failures.append(f"{where}: {key} is not finite")
                elif difference > tolerance:
                    failures.append(f"{where}: {key} is {difference:.3g}, above the tolerance {tolerance:g}")
            if line.get("graph_captures") != 1:
                failures.append(f"{where}: the check's graph was captured {line.get('graph_captures')} times, not once")
        elif line.get("framework") == "pnn" and line.get("mode") == "graph" and line.get("captures", 1) != 1:
            failures.append(f"{where}, repetition {line.get('repetition')}: the timed graph was captured "
                            f"{line['captures']} times, not once")
    return failures


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        # Small numbers (weight differences) in scientific notation, so that they do not print as 0.000.
        return f"{value:.{digits}f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"
    return str(value)


def print_table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(fmt(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(fmt(v).rjust(w) for v, w in zip(row, widths)))


def write_csv(name, header, rows):
    if not rows:
        return
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    log("wrote", path)


def main():
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="folder holding step_time, bandwidth and gemm")
    parser.add_argument("--python", default="", help="a python whose torch sees the GPU ('' skips PyTorch)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--batches", default="64,512")
    parser.add_argument("--tf32", action="store_true", help="TF32 products on both sides")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 50 steps, fewer gemm samples")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: steps, bandwidth, gemm")
    parser.add_argument("--results", default=RESULTS, help="folder for the CSV and JSONL files (docs/results)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds each program run may take (240)")
    # Graph replay and model.train_step launch the same kernels in the same order, so their weights differ
    # by float rounding at most (cuBLAS may choose another algorithm inside a capture); a replay that misses
    # an update or reads a stale buffer is off by a learning rate times a gradient (0.05 x 1e-2 and more).
    # 1e-4 lies between, with room for TF32 products.
    parser.add_argument("--check-tolerance", type=float, default=1e-4,
                        help="largest weight difference between graph replay (or uncaptured) and train_step (1e-4)")
    args = parser.parse_args()
    RESULTS = os.path.abspath(args.results)
    if args.quick:
        args.repetitions, args.steps, args.warmup = 1, 50, 10
    skip = set(filter(None, args.skip.split(",")))
    tf32 = ["--tf32"] if args.tf32 else []
    common = ["--models", args.models, "--batches", args.batches, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    runs = [{"run": "bench/gpu/compare.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
             "arguments": vars(args)}]

    # ----- step times, alternating the two frameworks -----
    probe = run_lines([os.path.join(args.bin, "step_time"), "--models", "mlp", "--batches", "8", "--modes", "eager",
                       "--steps", "1", "--warmup", "0", "--check-steps", "0"], timeout=args.timeout)
    if any("no CUDA device" in line.get("error", "") for line in probe):
        log("compare.py: no GPU here:", probe[0]["error"], "- nothing measured, no results written")
        return 2
    os.makedirs(RESULTS, exist_ok=True)
    journal = Journal(os.path.join(RESULTS, "gpu_runs.jsonl"))
    journal.write(runs[0])
    step_lines = []
    if "steps" not in skip:
        for repetition in range(args.repetitions):
            pnn_command = [os.path.join(args.bin, "step_time"), *common, *tf32,
                           "--check-steps", "5" if repetition == 0 else "0"]
            torch_command = [args.python, os.path.join(HERE, "pytorch_gpu.py"), *common, *tf32] if args.python else None
            order = [pnn_command, torch_command] if repetition % 2 == 0 else [torch_command, pnn_command]
            for command in order:
                if command is None:
                    continue
                step_lines += run_lines(command, args.timeout, journal, repetition=repetition)
        runs += step_lines

    # ----- bandwidth and gemm -----
    bandwidth_lines = (run_lines([os.path.join(args.bin, "bandwidth")], args.timeout, journal)
                       if "bandwidth" not in skip else [])
    gemm_extra = ["--samples", "5", "--repeats", "20"] if args.quick else []
    gemm_lines = (run_lines([os.path.join(args.bin, "gemm"), "--batches", args.batches, *gemm_extra, *tf32],
                            args.timeout, journal)
                  if "gemm" not in skip else [])
    runs += bandwidth_lines + gemm_lines

    measured = [line for line in runs if "median_ms" in line or "pnn_graph_ms" in line]
    if not measured:
        for line in runs:
            log(json.dumps(line))
        log(f"compare.py: nothing was measured; what the programs printed is in {journal.path}")
        return 1

    errors = [line for line in runs if "error" in line]
    for line in errors:
        log("ERROR:", json.dumps(line))
    headers = [line for line in runs if "device" in line and "program" in line]
    for line in headers:
        print(json.dumps(line))

    # ----- step-time table -----
    if step_lines:
        times, walls, nodes, losses = {}, {}, {}, {}
        for line in step_lines:
            if "median_ms" not in line:
                continue
            key = (line["model"], line["batch"], line["framework"], line["mode"])
            times.setdefault(key, []).append(line["median_ms"])
            walls.setdefault(key, []).append(line["wall_ms"])
            if "graph_nodes" in line and line["mode"] == "graph":
                nodes[(line["model"], line["batch"])] = line["graph_nodes"]
            losses.setdefault(key, []).append(line.get("final_loss"))
        sides = [("pnn", "eager"), ("pnn", "uncaptured"), ("pnn", "graph"), ("pytorch", "eager"), ("pytorch", "graph")]
        header = ["model", "batch"] + [f"{f}_{m}_ms" for f, m in sides] + [
            "pnn_graph/pytorch_eager", "pnn_uncaptured/pytorch_eager", "pnn_eager/pytorch_eager",
            "pnn_graph/pytorch_graph", "graph_nodes"]
        rows, csv_rows = [], []
        configs = sorted({(k[0], k[1]) for k in times})
        for model, batch in configs:
            value = {s: median(times.get((model, batch, *s), [])) for s in sides}
            wall = {s: median(walls.get((model, batch, *s), [])) for s in sides}
            ratios = [ratio(value[("pnn", "graph")], value[("pytorch", "eager")]),
                      ratio(value[("pnn", "uncaptured")], value[("pytorch", "eager")]),
                      ratio(value[("pnn", "eager")], value[("pytorch", "eager")]),
                      ratio(value[("pnn", "graph")], value[("pytorch", "graph")])]
            rows.append([model, batch] + [value[s] for s in sides] + ratios + [nodes.get((model, batch))])
            csv_rows.append([model, batch] + [value[s] for s in sides] + [wall[s] for s in sides] + ratios +
                            [nodes.get((model, batch)), args.repetitions, args.steps, args.tf32])
        if rows:
            print_table("Training step, median ms per step (CUDA events; median over repetitions). "
                        "Goal: pnn_graph/pytorch_eager <= 0.5. Eager like for like: pnn_uncaptured/pytorch_eager "
                        "(pnn_eager also returns the loss to the host every step)", header, rows)
        write_csv("gpu_step_times.csv",
                  ["model", "batch"] + [f"{f}_{m}_ms" for f, m in sides] + [f"{f}_{m}_wall_ms" for f, m in sides] +
                  ["pnn_graph_over_pytorch_eager", "pnn_uncaptured_over_pytorch_eager", "pnn_eager_over_pytorch_eager",
                   "pnn_graph_over_pytorch_graph",
                   "pnn_graph_nodes", "repetitions", "steps", "tf32"], csv_rows)

        checks = [line for line in step_lines if line.get("check") == "graph_vs_eager" and "error" not in line]
        if checks:
            check_header = ["model", "batch", "steps", "loss_eager", "loss_graph", "max_abs_difference_graph",
                            "max_abs_difference_uncaptured", "graph_nodes", "graph_captures"]
            check_rows = [[c.get(h) for h in check_header] for c in checks]
            print_table("Graph replay and uncaptured step against model.train_step (weights after N steps)",
                        check_header, check_rows)
            write_csv("gpu_checks.csv", check_header, check_rows)

    # ----- bandwidth -----
    kernels = [line for line in bandwidth_lines if line.get("benchmark") == "bandwidth"]
    if kernels:
        header = ["kernel", "bytes_per_element", "median_ms", "gbps", "fraction_of_theoretical", "fraction_of_memcpy",
                  "theoretical_gbps", "memcpy_gbps", "elements"]
        rows = [[k.get(h) for h in header] for k in kernels]
        print_table("Element-wise kernels on large tensors. Goal: >= 0.8 of the memory bandwidth", header, rows)
        write_csv("gpu_bandwidth.csv", header, rows)

    # ----- gemm -----
    products = [line for line in gemm_lines if line.get("benchmark") == "gemm" and "error" not in line]
    if products:
        header = ["shape", "m", "n", "k", "transpose_a", "transpose_b", "pnn_launch_ms", "sgemm_launch_ms",
                  "gemm_ex_launch_ms", "ratio_launch", "pnn_graph_ms", "sgemm_graph_ms", "gemm_ex_graph_ms",
                  "ratio_graph", "pnn_graph_tflops"]
        rows = [[p.get(h) for h in header] for p in products]
        print_table("pnn::gemm against cublasSgemm (ratio = pnn / sgemm; goal <= 1.05). launch: back-to-back calls "
                    "from the host; graph: the same calls replayed from a CUDA graph (GPU time alone)",
                    [h for h in header if h not in ("transpose_a", "transpose_b")],
                    [[v for h, v in zip(header, r) if h not in ("transpose_a", "transpose_b")] for r in rows])
        write_csv("gpu_gemm.csv", header, rows)

    failures = failed_checks(step_lines, args.check_tolerance)
    for failure in failures:
        print(f"FAILED CHECK: {failure}")
    if errors:
        print(f"\n{len(errors)} error line(s); see stderr and {journal.path}")
    return 1 if errors or failures else 0


if __name__ == "__main__":
    sys.exit(main())
