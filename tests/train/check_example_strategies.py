#!/usr/bin/env python3
"""The example programs save, under data parallelism, the bytes serial training saves: for the same
--seed, --batch and --steps, `train_cnn_data_parallel --workers 2` and `--workers 4`, `mpirun -np 2
train_cnn_data_parallel_mpi`, and `train_resnet_data_parallel --workers 2` and `--workers 4` (whose
BatchNorm statistics are synchronised over the workers) write weights files identical to `train_cnn`'s
and `train_resnet`'s (docs/strategies.md, "Exactness"). The CNN does so again with a learning-rate
schedule, a warm-up, clipping by global norm and gradient accumulation over 2 batches.

usage: check_example_strategies.py BUILD_EXAMPLES_DIR [MPIRUN]
"""
import os
import subprocess
import sys
import tempfile

SKIP = 77  # meson's exit code for a skipped test


def run(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stdout}{result.stderr}")


def main():
    examples = sys.argv[1]
    mpirun = sys.argv[2] if len(sys.argv) > 2 else None
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("PNN_DATA"):
        print("skipped: no Fashion-MNIST (install fashion-mnist or set PNN_DATA)")
        return SKIP
    common = ["--batch", "60", "--steps", "5", "--seed", "7", "--quiet"]
    features = ["--batch", "30", "--accumulate", "2", "--lr-schedule", "cosine", "--warmup-steps", "2",
                "--clip-norm", "0.5", "--steps", "5", "--seed", "7", "--quiet"]
    failures = []
    with tempfile.TemporaryDirectory() as directory:
        for model, flags, label in [("cnn", common, ""), ("resnet", common, ""),
                                    ("cnn", features, " (schedule, clipping, accumulation)")]:
            serial = os.path.join(directory, f"{model}{label}.safetensors")
            run([os.path.join(examples, f"train_{model}"), *flags, "--save", serial])
            with open(serial, "rb") as f:
                expected = f.read()
            runs = {f"--workers {n}": [os.path.join(examples, f"train_{model}_data_parallel"), *flags,
                                       "--workers", str(n)] for n in (2, 4)}
            mpi_program = os.path.join(examples, f"train_{model}_data_parallel_mpi")
            if mpirun and model == "cnn" and os.path.exists(mpi_program):
                runs["mpirun -np 2"] = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", mpi_program,
                                        *flags]
            for name, command in runs.items():
                path = os.path.join(directory, f"{model}{label} {name}.safetensors")
                run([*command, "--save", path])
                with open(path, "rb") as f:
                    same = f.read() == expected
                print(f"{'ok' if same else 'DIFFERENT'}: train_{model}{label} data parallel, {name}")
                if not same:
                    failures.append(f"train_{model}{label} data parallel, {name}")
    if failures:
        sys.exit("weights differ from serial training's: " + ", ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
