#!/usr/bin/env bash
# bench/exact_cost.sh [BASE]: what the canonical order of batch sums (core/batch_sum.hpp) costs. Builds
# bench/step_time.cpp twice with the same flags, against this tree's include/ and against BASE's (a
# commit; default 1b2cec7, the last one before the canonical sums), then times one training step of the
# example MLP and CNN (batch 64, one thread per worker), serial and data parallel with 2 workers,
# alternating the two builds ROUNDS times (default 7). Prints the CPU, the median step time of each
# side and their ratio (this tree / base).
set -euo pipefail
base=${1:-1b2cec7}
rounds=${ROUNDS:-7}
steps=${STEPS:-100}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/base"
git -C "$root" archive "$base" include | tar -x -C "$work/base"
flags=(-std=c++20 -O3 -march=native -fopenmp -DNDEBUG -DEIGEN_DONT_PARALLELIZE $(pkg-config --cflags eigen3))
g++ "${flags[@]}" -I"$work/base/include" "$root/bench/step_time.cpp" -o "$work/step_base" -pthread &
g++ "${flags[@]}" -I"$root/include" "$root/bench/step_time.cpp" -o "$work/step_new" -pthread
wait

isa=$(grep -qw avx512f /proc/cpuinfo && echo "AVX-512" || (grep -qw avx2 /proc/cpuinfo && echo "AVX2, no AVX-512" || echo "no AVX2"))
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $isa"
echo "base $base against $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo ' (with local changes)'); $rounds rounds of $steps steps"
printf '%-6s %-14s %8s %8s %8s\n' model strategy base_ms new_ms new/base
for model in mlp cnn; do
  for setup in "serial 1" "data_parallel 2"; do
    read -r strategy workers <<<"$setup"
    base_times=() new_times=()
    for ((r = 0; r < rounds; ++r)); do
      # Alternate which side runs first, so drift in the machine's speed falls on both.
      if ((r % 2 == 0)); then
        base_times+=("$("$work/step_base" "$model" "$strategy" "$workers" "$steps")")
        new_times+=("$("$work/step_new" "$model" "$strategy" "$workers" "$steps")")
      else
        new_times+=("$("$work/step_new" "$model" "$strategy" "$workers" "$steps")")
        base_times+=("$("$work/step_base" "$model" "$strategy" "$workers" "$steps")")
      fi
    done
    python3 - "$model" "$strategy" "${base_times[*]}" "${new_times[*]}" <<'PY'
import statistics, sys
model, strategy, base, new = sys.argv[1], sys.argv[2], list(map(float, sys.argv[3].split())), list(map(float, sys.argv[4].split()))
b, n = statistics.median(base), statistics.median(new)
print(f"{model:<6} {strategy:<14} {b:8.3f} {n:8.3f} {n / b:8.3f}")
PY
  done
done
