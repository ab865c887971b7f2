"""Helpers shared by the benchmark drivers (compare_pytorch.py, strategies.py): running a program that
prints JSON, the environment of a PyTorch run, medians, and a description of the machine."""

import datetime
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = "/usr/bin/python3"  # Debian's python with python3-torch (a pyenv python on PATH may lack torch)
PYTORCH_MODELS = os.path.join(HERE, "pytorch_models.py")
RESULTS = os.path.join(ROOT, "docs", "results")


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def thread_environment(threads):
    """The environment for a run with `threads` threads: OpenMP, OpenBLAS and Eigen all read these."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_json(command, env=None, timeout=1800):
    """Runs `command` and returns the JSON object on the last line of its output."""
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr.strip()}")
    lines = [line for line in completed.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(command)} printed no JSON:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(lines[-1])


def median(values):
    return statistics.median(values) if values else float("nan")


def cpu_description():
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2+FMA" if "avx2" in flags and "fma" in flags else "SSE/other"
    return f"{model}, {os.cpu_count()} cores, {isa}"


def machine():
    return {
        "cpu": cpu_description(),
        "load_average": os.getloadavg()[0],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def ensure_results_directory():
    os.makedirs(RESULTS, exist_ok=True)
    return RESULTS
