#!/usr/bin/env python3
"""Checks the layering rules of docs/architecture.md against the #include lines under include/pnn/.

    check_layering.py INCLUDE_DIR        exit 1, naming every file and include that breaks a rule
    check_layering.py --self-test        plants forbidden includes in a copy of the rules' folders and
                                         checks that each one is reported (so the check itself can fail)

The rules say which folder may include which (always downwards: from the user's end to the ground), and
which system headers only one folder may name: a device's headers only its backend, <mpi.h> only dist/.
"""
import os
import re
import sys
import tempfile

# Folder -> the folders of include/pnn/ its headers may include. Keep in step with docs/architecture.md.
ALLOWED = {
    "core": {"core"},
    "cpu": {"core", "cpu"},
    "layers": {"core", "cpu", "layers"},
    "loss": {"core", "cpu", "loss"},
    "optim": {"core", "cpu", "optim"},
    "data": {"core", "cpu", "data"},
    "io": {"core", "cpu", "io"},
    "model": {"core", "cpu", "layers", "model"},
    "train": {"core", "cpu", "data", "io", "layers", "loss", "model", "optim", "train"},
    "dist": {"core", "cpu", "io", "layers", "loss", "model", "optim", "dist"},
    # The CUDA backend is a device like cpu/ (and runs the losses' per-row functions); three of its
    # headers sit higher because only nvcc may compile them: the captured training step and the NCCL
    # communicators.
    "cuda": {"core", "cpu", "cuda", "loss"},
    "cuda/graph.cuh": {"core", "cpu", "cuda", "layers", "loss", "model", "optim", "train"},
    "cuda/nccl.cuh": {"core", "cpu", "cuda", "dist"},
    "cuda/nccl_mpi.cuh": {"core", "cpu", "cuda", "dist"},
    # Umbrella headers: everything below them.
    "pnn.hpp": {"core", "cpu", "layers", "loss", "optim", "data", "io", "model", "train"},
    "dist.hpp": {"dist"},
    "cuda/cuda.hpp": {"core", "cpu", "cuda", "pnn.hpp"},
}

# System headers only one folder may include.
SYSTEM_OWNERS = [
    (re.compile(r"^(cuda|cuda_runtime|cuda_runtime_api|cublas|cublas_v2|cublasLt|nccl|curand)(\.h|_.*\.h)$"), "cuda"),
    (re.compile(r"^mpi\.h$"), "dist"),
    (re.compile(r"^(Eigen|unsupported/Eigen)/"), "cpu"),
    (re.compile(r"^(immintrin|omp)\.h$"), "cpu"),
]

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def rule_key(relative):
    """The ALLOWED key of a header: a file with its own rule, else its folder (or itself at the top)."""
    if relative in ALLOWED:
        return relative
    return relative.split("/", 1)[0] if "/" in relative else relative


def target_of(name):
    """What a pnn include names, as ALLOWED speaks of it: a folder, or a top-level umbrella header."""
    path = name[len("pnn/"):]
    return path.split("/", 1)[0] if "/" in path else path


def check(root):
    problems = []
    for directory, _, files in os.walk(root):
        for file in sorted(files):
            if not file.endswith((".hpp", ".cuh", ".h")):
                continue
            path = os.path.join(directory, file)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            key = rule_key(relative)
            folder = relative.split("/", 1)[0] if "/" in relative else ""
            if key not in ALLOWED:
                problems.append(f"{relative}: no layering rule covers this file; add its folder to "
                                f"tests/layering/check_layering.py and docs/architecture.md")
                continue
            with open(path, encoding="utf-8") as text:
                for number, line in enumerate(text, 1):
                    match = INCLUDE.match(line)
                    if not match:
                        continue
                    name = match.group(2)
                    if name.startswith("pnn/"):
                        target = target_of(name)
                        if target not in ALLOWED[key]:
                            allowed = ", ".join(sorted(f"{a}/" if "." not in a else a for a in ALLOWED[key]))
                            problems.append(f"{relative}:{number}: includes {name}, but {key} may include only "
                                            f"{allowed} (docs/architecture.md, 'Layering')")
                    else:
                        for pattern, owner in SYSTEM_OWNERS:
                            if pattern.search(name) and folder != owner:
                                problems.append(f"{relative}:{number}: includes <{name}>, which only {owner}/ may "
                                                f"include (docs/architecture.md, 'Layering')")
    return problems


def self_test():
    """Each planted include must be reported, and a tree that keeps the rules must pass."""
    planted = [
        ("layers/residual.hpp", '#include "pnn/model/sequential.hpp"'),
        ("core/tensor.hpp", '#include "pnn/cpu/cpu.hpp"'),
        ("model/sequential.hpp", '#include "pnn/io/safetensors.hpp"'),
        ("cpu/kernels.hpp", '#include "pnn/layers/layer.hpp"'),
        ("optim/sgd.hpp", "#include <mpi.h>"),
        ("layers/dense.hpp", "#include <cuda_runtime.h>"),
        ("loss/loss.hpp", "#include <Eigen/Core>"),
        ("newfolder/thing.hpp", '#include "pnn/core/tensor.hpp"'),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as root:
        def write(relative, text):
            os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
            with open(os.path.join(root, relative), "w", encoding="utf-8") as out:
                out.write(text + "\n")
        write("core/shape.hpp", '#include "pnn/core/config.hpp"\n#include <array>')
        write("layers/dense.hpp", '#include "pnn/core/tensor.hpp"\n#include "pnn/cpu/cpu.hpp"')
        if check(root):
            print("self-test: a tree that keeps the rules was reported:", check(root))
            failures += 1
        for relative, line in planted:
            write(relative, line)
            reported = [p for p in check(root) if p.startswith(relative)]
            if not reported:
                print(f"self-test: {relative} with '{line}' was not reported")
                failures += 1
            os.remove(os.path.join(root, relative))
    print(f"self-test: {len(planted)} planted includes, {failures} missed")
    return failures == 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(0 if self_test() else 1)
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    problems = check(sys.argv[1])
    for problem in problems:
        print(problem)
    print(f"layering: {len(problems)} forbidden includes")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
