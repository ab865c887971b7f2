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

# The bitwise promises (docs/strategies.md, "Exactness") must not depend on how pnn is compiled: the
# exactness suites run again in a debugoptimized build (-O2, GCC's default floating-point contraction
# rules as a user's build gets them), without CUDA, examples or benchmarks.
exact=${PNN_EXACT_BUILD_DIR:-build-debugoptimized}
if [ ! -f "$exact/build.ninja" ]; then
  meson setup "$exact" --buildtype=debugoptimized -Dcuda=disabled -Dexamples=false -Dbench=disabled || exit 1
fi
exact_tests=(model dist)
exact_targets=(tests/test_model tests/test_dist)
if meson introspect "$exact" --tests | grep -q '"dist_mpi_np2"'; then
  exact_tests+=(dist_mpi_np2 dist_mpi_np4)
  exact_targets+=(tests/dist/test_dist_mpi)
fi
meson compile -C "$exact" "${exact_targets[@]}" || exit 1
rm -f "$exact/meson-logs/testlog.json"
meson test -C "$exact" --no-rebuild --num-processes "$(nproc)" --print-errorlogs "${exact_tests[@]}"

# The in-process communicator and the strategies over it under ThreadSanitizer: any report (a race, a use
# after free) makes the program exit non-zero. No suppressions are needed.
tsan=${PNN_TSAN_BUILD_DIR:-build-tsan}
if [ ! -f "$tsan/build.ninja" ]; then
  meson setup "$tsan" --buildtype=debugoptimized -Db_sanitize=thread -Dcuda=disabled -Dexamples=false \
    -Dbench=disabled -Dmpi=disabled || exit 1
fi
meson compile -C "$tsan" tests/test_dist || exit 1
rm -f "$tsan/meson-logs/testlog.json"
meson test -C "$tsan" --no-rebuild --print-errorlogs dist

python3 scripts/summarize-tests.py "$build/meson-logs/testlog.json" "$exact/meson-logs/testlog.json" \
  "$tsan/meson-logs/testlog.json"
