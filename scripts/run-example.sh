#!/usr/bin/env bash
# Installs what is missing, builds, and trains the example CNN on Fashion-MNIST, printing progress and the
# test accuracy. Extra arguments go to the training program (see --help), e.g. --epochs 3 --threads 2.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# The CUDA toolkit installs nvcc outside PATH; Meson finds it (and builds the CUDA targets) through PATH.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
build=${PNN_BUILD_DIR:-build}
[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release
meson compile -C "$build" examples/train_cnn
exec "$build/examples/train_cnn" "$@"
