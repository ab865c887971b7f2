#!/usr/bin/env bash
# bench/gpu/run.sh: pnn against PyTorch on the GPU, everything in one run: builds pnn's GPU benchmarks
# (step_time, bandwidth, gemm) with nvcc, finds a Python whose torch sees the GPU, and runs
# bench/gpu/compare.py, which alternates pnn and PyTorch, prints the tables and writes docs/results/gpu_*.csv.
#
#   bash bench/gpu/run.sh                      # ~5 min on an H100: 3 repetitions, 200 steps
#   bash bench/gpu/run.sh --quick              # ~1-2 min: 1 repetition, 50 steps
#   bash bench/gpu/run.sh --build-only         # compile only (works without a GPU)
#   bash bench/gpu/run.sh --prebuilt build-gpu # run binaries built earlier (e.g. on a machine without a GPU)
#   Other arguments go to compare.py: --repetitions N --steps N --models mlp --batches 64 --tf32 --skip gemm
#   --results DIR (default docs/results)
#
# Builds straight with nvcc into $PNN_GPU_BUILD_DIR (default build-gpu), so it needs only nvcc, cuBLAS and
# Eigen's headers, not the whole Meson configuration (the GPU machines have no package registry). Eigen is
# looked for in $EIGEN3_INCLUDE_DIR, /usr/include/eigen3, /usr/local/include/eigen3 and .deps/eigen3 (a
# copy of /usr/include/eigen3 travels there when it is missing on the GPU machine). The flags are those of
# meson.build's cuda_args: sm_$PNN_GPU_ARCH (default 90, H100/H200) plus its PTX, and line information
# for compute-sanitizer's reports.
# The Python is $PNN_PYTHON, else the first of python3, /usr/bin/python3 whose torch sees a GPU; without
# one, PyTorch's side is skipped and said so. cuBLAS comes from the toolkit, else from that Python's pip
# wheels (bench/gpu/cuda_libraries.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

build=${PNN_GPU_BUILD_DIR:-build-gpu}
programs=(step_time bandwidth gemm)
prebuilt=""
build_only=0
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    *) pass+=("$1"); shift ;;
  esac
done

export PATH="$PATH:/usr/local/cuda/bin"
if [ -n "$prebuilt" ]; then
  bin=$prebuilt
  for p in "${programs[@]}"; do
    [ -x "$bin/$p" ] || { echo "run.sh: $bin/$p is missing; build with: bash bench/gpu/run.sh --build-only" >&2; exit 1; }
  done
else
  command -v nvcc >/dev/null || { echo "run.sh: nvcc not found (PATH, /usr/local/cuda/bin)" >&2; exit 1; }
  eigen=""
  for dir in "${EIGEN3_INCLUDE_DIR:-}" /usr/include/eigen3 /usr/local/include/eigen3 .deps/eigen3; do
    if [ -n "$dir" ] && [ -f "$dir/Eigen/Core" ]; then eigen=$dir; break; fi
  done
  if [ -z "$eigen" ] && command -v apt-get >/dev/null; then
    echo "run.sh: Eigen's headers are missing; trying apt-get install libeigen3-dev" >&2
    (timeout 600 bash scripts/install-deps.sh >&2) || true  # bounded: a GPU machine may have no registry
    [ -f /usr/include/eigen3/Eigen/Core ] && eigen=/usr/include/eigen3
  fi
  if [ -z "$eigen" ]; then
    echo "run.sh: Eigen's headers not found. Copy them next to the sources (cp -r /usr/include/eigen3 .deps/)," \
         "set EIGEN3_INCLUDE_DIR, or build elsewhere and pass --prebuilt DIR" >&2
    exit 1
  fi
  arch=${PNN_GPU_ARCH:-90}
  flags=(-std=c++20 -O3 -DNDEBUG -gencode "arch=compute_$arch,code=[sm_$arch,compute_$arch]" -lineinfo
         --expt-relaxed-constexpr -diag-suppress=20012,20013,20014,20015,186,1675 -Iinclude -isystem "$eigen")
  mkdir -p "$build"
  echo "run.sh: building ${programs[*]} into $build ($(nvcc --version | tail -1))" >&2
  pids=()
  for p in "${programs[@]}"; do
    nice nvcc "${flags[@]}" "bench/gpu/$p.cu" -o "$build/$p" -lcublas >"$build/$p.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for i in "${!programs[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "run.sh: building ${programs[$i]} failed:" >&2
      cat "$build/${programs[$i]}.log" >&2
      failed=1
    fi
  done
  [ $failed -eq 0 ] || exit 1
  bin=$build
fi
[ $build_only -eq 1 ] && { echo "run.sh: built into $bin" >&2; exit 0; }

# PyTorch runs with the library path it was started with, not the one set below for pnn's binaries
# (torch's own CUDA wheels must not be shadowed by the toolkit's libraries): cuda_libraries.sh keeps it.
torch_library_path=${PNN_LD_LIBRARY_PATH_BEFORE-${LD_LIBRARY_PATH:-}}
python=""
why_no_torch=""
for candidate in "${PNN_PYTHON:-}" python3 /usr/bin/python3; do
  [ -n "$candidate" ] || continue
  command -v "$candidate" >/dev/null || continue
  if why=$(LD_LIBRARY_PATH=$torch_library_path "$candidate" -c \
      'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "torch.cuda.is_available() is False")' 2>&1); then
    python=$(command -v "$candidate"); break
  fi
  why_no_torch+="  $candidate: $(printf '%s' "$why" | tail -n 1)"$'\n'
done
source bench/gpu/cuda_libraries.sh
use_cuda_libraries "${python:-python3}" "${programs[@]/#/$bin/}" || exit 1
driver=$(command -v python3 || echo /usr/bin/python3)
if [ -z "$python" ]; then
  echo "run.sh: no Python with a CUDA-enabled torch found (set PNN_PYTHON): PyTorch's side is skipped" >&2
  printf '%s' "$why_no_torch" >&2
else
  driver=$python
fi
status=0
"$driver" bench/gpu/compare.py --bin "$bin" --python "$python" "${pass[@]}" || status=$?
if [ -z "$python" ] && [ "${PNN_REQUIRE_TORCH:-0}" = 1 ]; then
  echo "run.sh: PNN_REQUIRE_TORCH=1 and PyTorch's side was skipped: failing" >&2
  exit 1
fi
exit $status
