#!/usr/bin/env bash
# scripts/gpu-check.sh: everything that only a GPU can show, from binaries built on a machine without one.
#
#   bash scripts/gpu-check.sh build               # here (no GPU needed): builds the CUDA tests, the GPU
#                                                 # example and the GPU benchmarks into build-gpu/, with a
#                                                 # copy of the data
#   bash scripts/gpu-check.sh tests               # on the GPU machine: the CUDA tests, then the CUDA example
#                                                 # for 300 steps
#   bash scripts/gpu-check.sh sanitize [TOOL...]  # on the GPU machine: both CUDA test programs under each
#                                                 # compute-sanitizer TOOL in turn (default: memcheck
#                                                 # synccheck initcheck racecheck)
#   bash scripts/gpu-check.sh bench [ARG...]      # on the GPU machine: bench/gpu/run.sh --prebuilt build-gpu
#                                                 # (the ARGs go to bench/gpu/compare.py, e.g. --quick)
#
# On a GPU machine whose commands may run 10 minutes, with ["build-gpu"] carried, one call each, in this
# order (the most telling first, as device time is short):
#   1. bash scripts/gpu-check.sh tests
#   2. bash scripts/gpu-check.sh sanitize memcheck
#   3. bash scripts/gpu-check.sh bench --quick
#   4. bash scripts/gpu-check.sh sanitize synccheck initcheck racecheck   (what it has no time for, it names;
#      racecheck, the slowest, last). A report from inside NCCL's or cuBLAS's kernels names the kernel:
#      read it before blaming pnn.
# A call stops starting steps once $PNN_CALL_BUDGET seconds (default 570) are spent, and stops a step that
# outlasts its own timeout ($PNN_STEP_TIMEOUT, default 270) or the budget left; either is reported, the
# script goes on with the next step and exits non-zero at the end.
#
# build-gpu/ is self-contained (about 40 MiB with the data): the GPU machine needs no Meson configuration,
# compiler or dataset package, only the CUDA driver and the shared libraries (cudart, cuBLAS, NCCL), taken
# from the toolkit or else from python3's pip wheels (bench/gpu/cuda_libraries.sh). The tests run with
# PNN_REQUIRE_GPU=1: on a machine whose GPU is unusable they fail instead of skipping every GPU case, and
# under compute-sanitizer with PNN_UNDER_SANITIZER=TOOL, which skips the checks of host-side timing that a
# tool's blocking launches would fail. bench runs with PNN_REQUIRE_TORCH=1: without PyTorch it fails.
# The test programs' output is line-buffered (tests/doctest_main.cpp), so a step stopped by its timeout
# still shows the last test case it reached.
# Results go to $PNN_RESULTS_DIR, else $OUT when that is set, else build-gpu/results: the whole output of
# a call in one log file there (tests.log, sanitize.log, bench.log; bench also writes its CSV and JSONL
# files: 6 files in all, within the 8 a GPU machine sends back).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

gpu=${PNN_GPU_BUILD_DIR:-build-gpu}
mode=${1:-}
shift || true

case "$mode" in
build)
  build=${PNN_BUILD_DIR:-build}
  export PATH="$PATH:/usr/local/cuda/bin"
  if [ ! -f "$build/build.ninja" ]; then
    bash scripts/install-deps.sh || exit 1
    meson setup "$build" --buildtype=release || exit 1
  fi
  # The CUDA targets exist only when meson found nvcc, cuBLAS and NCCL (the summary's "CUDA backend: True").
  targets=$(meson introspect "$build" --targets)
  [[ $targets == *'"name": "test_cuda"'* ]] ||
    { echo "gpu-check.sh: $build has no CUDA targets (nvcc, cuBLAS or NCCL not found by meson)" >&2; exit 1; }
  # Meson 1.0 gives ninja no header dependencies for .cu files: rebuild the CUDA objects from scratch.
  find "$build" -name '*.cu.o' -delete
  meson compile -C "$build" tests/cuda/test_cuda tests/cuda/test_cuda_dist examples/train_cnn_cuda || exit 1
  PNN_GPU_BUILD_DIR=$gpu bash bench/gpu/run.sh --build-only || exit 1
  cp "$build/tests/cuda/test_cuda" "$build/tests/cuda/test_cuda_dist" "$build/examples/train_cnn_cuda" "$gpu/"
  data=${PNN_DATA:-/usr/share/datasets/fashion-mnist}
  if [ -f "$data/train-images-idx3-ubyte.gz" ] || [ -f "$data/train-images-idx3-ubyte" ]; then
    mkdir -p "$gpu/data" && cp "$data"/*-ubyte* "$gpu/data/"
  else
    echo "gpu-check.sh: no Fashion-MNIST in $data; the example step will be skipped on the GPU machine" >&2
  fi
  git rev-parse HEAD > "$gpu/commit"
  echo "gpu-check.sh: $gpu holds $(du -sh "$gpu" | cut -f1) built from $(cat "$gpu/commit")$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "  on the GPU machine, carry [\"$gpu\"] and run the calls listed in the header of scripts/gpu-check.sh"
  exit 0 ;;
tests)
  [ $# -eq 0 ] || { echo "gpu-check.sh: tests takes no arguments (results go to \$PNN_RESULTS_DIR)" >&2; exit 2; } ;;
sanitize|bench) ;;
*) sed -n 2,37p "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

results=${PNN_RESULTS_DIR:-${OUT:-$gpu/results}}
mkdir -p "$results"
log=$results/$mode.log
budget=${PNN_CALL_BUDGET:-570}
step_timeout=${PNN_STEP_TIMEOUT:-270}

failures=()
step() {  # step NAME COMMAND...: runs COMMAND within its timeout and the call's budget left
  local name=$1; shift
  local left=$((budget - SECONDS))
  local limit=$((left < step_timeout ? left : step_timeout))
  if [ "$limit" -lt 30 ]; then
    echo "=== $name: not started, $left s of the call's $budget s left (run it in another call)"
    failures+=("$name (not started)")
    return
  fi
  echo "=== $name: $* (at most $limit s)"
  local start=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  [ "$rc" -eq 124 ] && echo "=== $name: stopped after $limit s"
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failures+=("$name (exit $rc)")
}

run_mode() {
  for binary in test_cuda test_cuda_dist train_cnn_cuda step_time bandwidth gemm; do
    [ -x "$gpu/$binary" ] ||
      { echo "gpu-check.sh: $gpu/$binary is missing; run 'bash scripts/gpu-check.sh build' first"; return 1; }
  done
  [ -f "$gpu/commit" ] &&
    echo "gpu-check.sh: binaries built from $(cat "$gpu/commit"), tree at $(git rev-parse HEAD 2>/dev/null || echo '?')"
  export PATH="$PATH:/usr/local/cuda/bin"
  chmod +x "$gpu"/{test_cuda,test_cuda_dist,train_cnn_cuda,step_time,bandwidth,gemm} 2>/dev/null
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}  # why NCCL failed to start, should it
  export PYTHONUNBUFFERED=1
  source bench/gpu/cuda_libraries.sh
  use_cuda_libraries "$(command -v python3)" "$gpu"/{test_cuda,test_cuda_dist,train_cnn_cuda,step_time} || return 1
  echo "gpu-check.sh: LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  export PNN_REQUIRE_GPU=1  # the test programs fail, rather than skip, without a usable GPU

  case "$mode" in
  tests)
    step test_cuda "$gpu/test_cuda" --duration=true
    step test_cuda_dist "$gpu/test_cuda_dist" --duration=true
    if [ -d "$gpu/data" ]; then
      step example_train_cnn_cuda "$gpu/train_cnn_cuda" --data "$gpu/data" --steps 300 --batch 64
    else
      echo "gpu-check.sh: no data in $gpu/data: the example step is skipped"
    fi ;;
  sanitize)
    command -v compute-sanitizer >/dev/null || { echo "gpu-check.sh: compute-sanitizer not found"; return 1; }
    # --error-exitcode turns a report into a failed step. The tests make failing CUDA calls on purpose
    # (cudaSetDevice(-1) in test_executor_memory.cu), which are not the sanitizer's findings.
    local tools=("$@")
    [ ${#tools[@]} -gt 0 ] || tools=(memcheck synccheck initcheck racecheck)
    for tool in "${tools[@]}"; do
      for binary in test_cuda test_cuda_dist; do
        PNN_UNDER_SANITIZER=$tool step "sanitizer_${tool}_$binary" compute-sanitizer --tool "$tool" \
          --error-exitcode 99 --print-limit 20 --report-api-errors no "$gpu/$binary" --duration=true
      done
    done ;;
  bench)
    PNN_REQUIRE_TORCH=1 step_timeout=$budget step bench bash bench/gpu/run.sh --prebuilt "$gpu" --results "$results" "$@" ;;
  esac

  if [ ${#failures[@]} -gt 0 ]; then
    echo "gpu-check.sh: FAILED: ${failures[*]}"
    return 1
  fi
  echo "gpu-check.sh: every step passed"
}

# The whole output into the one log file, as well as the console.
run_mode "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
