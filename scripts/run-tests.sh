#!/usr/bin/env bash
# Installs what is missing, builds, runs the whole test suite, and ends with the line "N passed, N failed"
# (N counts test cases across every test program). Exits non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || exit 1
# The CUDA toolkit installs nvcc outside PATH; Meson finds it (and builds the CUDA targets) through PATH.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
build=${PNN_BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release || exit 1
fi
meson compile -C "$build" || exit 1
rm -f "$build/meson-logs/testlog.json"
meson test -C "$build" --num-processes "$(nproc)" --print-errorlogs
python3 scripts/summarize-tests.py "$build/meson-logs/testlog.json"
