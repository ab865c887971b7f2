#!/usr/bin/env bash
# bench/prepare.sh: installs what the benchmarks need if it is missing (pnn's build dependencies, and for
# the PyTorch side Debian's python3-torch with OpenBLAS, which then replaces the slow reference BLAS
# through update-alternatives), configures the build directory and builds the named targets.
#
#   bash bench/prepare.sh TARGET...      e.g. examples/train_cnn bench/strategies
#
# The build directory is $PNN_BUILD_DIR (default build). Build output goes to stderr, so the benchmark
# drivers that call this keep their stdout for results.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh python3-torch python3-numpy python3-matplotlib libopenblas0-pthread >&2
build=${PNN_BUILD_DIR:-build}
[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >&2
if [ $# -gt 0 ]; then
  # Two jobs at most: the benchmarks run on small shared machines.
  ninja -C "$build" -j 2 "$@" >&2
fi
