#!/usr/bin/env bash
# bench/compare_pytorch.sh: pnn against PyTorch on the example MLP, CNN and ResNet, side by side in one run.
#
#   bash bench/compare_pytorch.sh [--repetitions 5] [--threads 1,2] [--models mlp,cnn,resnet] [--cnn-steps 300] ...
#
# Installs what is missing: Debian's python3-torch (1.13, OpenBLAS) and, into a virtual environment of its
# own ($PNN_BENCH_VENV, default .bench-venv: the wheel and its libraries are about 5 GB), the current PyTorch
# wheel from PyPI (MKL and oneDNN), which is what a user installs today. Builds pnn's train_mlp, train_cnn
# and train_resnet in $PNN_BUILD_DIR (default build), then runs bench/compare_pytorch.py with the arguments
# given: pnn, PyPI's PyTorch and Debian's alternately, the same model, data, batch 64, SGD lr 0.05 momentum
# 0.9 and thread count; prints the median seconds per epoch of each and the ratios; writes
# docs/results/cpu_vs_pytorch.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/prepare.sh examples/train_mlp examples/train_cnn examples/train_resnet
venv=${PNN_BENCH_VENV:-.bench-venv}
if ! "$venv/bin/python3" -c 'import torch, numpy' 2>/dev/null; then
  echo "Installing PyTorch from PyPI into $venv (about 5 GB)" >&2
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch numpy >&2
fi
exec /usr/bin/python3 bench/compare_pytorch.py --build "${PNN_BUILD_DIR:-build}" --pypi-python "$venv/bin/python3" "$@"
