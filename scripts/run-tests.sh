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

# The CPU test suite again under AddressSanitizer and UndefinedBehaviorSanitizer, where any report fails the
# program (UBSan does not recover). -O1 without debug information: the sanitizers make -O2 -g compiles
# about ten times slower than release ones, which would take CI past 30 minutes on 2 cores (frames still
# carry function names; rebuild with -g for lines). Not test_dist, which runs under ThreadSanitizer at -O2
# below; nor the MPI programs (their ASan builds took 6 of CI's minutes on 2 cores; they were clean when
# last run, and `meson test -C build-sanitize --suite pnn dist_mpi_np2` runs them), nor the failure matrix
# (processes killed and stopped: nothing a sanitizer watches), the CUDA,
# compile-failure or benchmark targets, nor the source checks (format, layering), nor the packaging check
# (it builds its own projects, without sanitizers), nor the PyTorch interchange (PyTorch's own libraries are
# not instrumented; test_io covers the same conversions).
# tests/sanitizers/suppressions.txt says which leaks are not pnn's (OpenMPI's); they are told by the full
# stack of each allocation, which the slow unwinder records (OpenMPI has no frame pointers).
san=${PNN_SANITIZE_BUILD_DIR:-build-sanitize}
if [ ! -f "$san/build.ninja" ]; then
  meson setup "$san" --buildtype=plain -Doptimization=1 -Db_sanitize=address,undefined \
    -Dcpp_args=-fno-sanitize-recover=undefined -Dcuda=disabled -Dexamples=false -Dbench=disabled || exit 1
fi
# The chosen tests, and the programs they run (their paths in the build folder, which ninja takes).
san_choice=$(python3 - "$san" <<'PYTHON'
import json, os, subprocess, sys
build = os.path.realpath(sys.argv[1])
def introspect(what):
    return json.loads(subprocess.run(["meson", "introspect", build, what], capture_output=True, check=True).stdout)
tests = [t for t in introspect("--tests") if "pnn:compile_fail" not in t["suite"] and t["name"] not in
         ("format", "layering", "layering_self_test", "dist", "packaging",
                         "pytorch_interop") and not t["name"].startswith("dist_mpi_")]
wanted = {target for t in tests for target in t["depends"]}
print(" ".join(sorted(os.path.relpath(f, build) for target in introspect("--targets") if target["id"] in wanted
                      for f in target["filename"])))
print(" ".join(t["name"] for t in tests))
PYTHON
) || exit 1
ninja -C "$san" $(sed -n 1p <<<"$san_choice") || exit 1
rm -f "$san/meson-logs/testlog.json"
ASAN_OPTIONS=fast_unwind_on_malloc=0:halt_on_error=1 \
  LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/suppressions.txt:print_suppressions=0" \
  meson test -C "$san" --no-rebuild --num-processes "$(nproc)" --print-errorlogs $(sed -n 2p <<<"$san_choice")

# The in-process communicator and the strategies over it under ThreadSanitizer, in a debugoptimized build:
# any report (a race, a use after free) makes the program exit non-zero. -O2 with GCC's default
# floating-point contraction is what a user's build gets, and test_dist holds the bitwise promises
# (docs/strategies.md, "Exactness"): they must not depend on how pnn is compiled. No suppressions are needed (ThreadSanitizer refuses a file
# with LeakSanitizer's "leak:" lines, so one would need a list of its own next to tests/sanitizers/).
tsan=${PNN_TSAN_BUILD_DIR:-build-tsan}
if [ ! -f "$tsan/build.ninja" ]; then
  meson setup "$tsan" --buildtype=debugoptimized -Db_sanitize=thread -Dcuda=disabled -Dexamples=false \
    -Dbench=disabled -Dmpi=disabled || exit 1
fi
meson compile -C "$tsan" tests/test_dist || exit 1
rm -f "$tsan/meson-logs/testlog.json"
meson test -C "$tsan" --no-rebuild --print-errorlogs dist

# pnn's file readers under libFuzzer with ASan and UBSan (tests/fuzz/meson.build, built with clang): each
# target runs 15 s from its committed corpus; a crash, leak, timeout or huge allocation fails it.
fuzz=${PNN_FUZZ_BUILD_DIR:-build-fuzz}
if [ ! -f "$fuzz/build.ninja" ]; then
  CXX=clang++ meson setup "$fuzz" tests/fuzz || exit 1
fi
meson compile -C "$fuzz" || exit 1
rm -f "$fuzz/meson-logs/testlog.json"
meson test -C "$fuzz" --no-rebuild --num-processes "$(nproc)" --print-errorlogs

python3 scripts/summarize-tests.py "$build/meson-logs/testlog.json" "$san/meson-logs/testlog.json" \
  "$tsan/meson-logs/testlog.json" "$fuzz/meson-logs/testlog.json"
