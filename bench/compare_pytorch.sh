#!/usr/bin/env bash
# bench/compare_pytorch.sh: pnn against PyTorch on the example MLP and CNN, side by side in one run.
#
#   bash bench/compare_pytorch.sh [--repetitions 3] [--threads 1,2] [--cnn-steps 0] [--mlp-steps 0]
#
# Installs what is missing (python3-torch, libopenblas0-pthread, ...), builds pnn's train_mlp and train_cnn
# in $PNN_BUILD_DIR (default build), then runs bench/compare_pytorch.py with the arguments given: pnn and
# PyTorch alternately, the same model, data, batch 64, SGD lr 0.05 momentum 0.9 and thread count, and
# prints the median seconds per epoch of each and their ratio; writes docs/results/cpu_vs_pytorch.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/prepare.sh examples/train_mlp examples/train_cnn
exec /usr/bin/python3 bench/compare_pytorch.py --build "${PNN_BUILD_DIR:-build}" "$@"
