// Shared by the canonical all-reduce tests (Local in-process, and Mpi under mpirun): values whose sum
// over the ranks depends on the order of the additions, generated from (rank, element) alone so every
// process can compute every rank's, and the reference each rank's result must equal bit for bit.
#pragma once

#include <cmath>
#include <cstring>
#include <pnn/core/canonical_sum.hpp>
#include <pnn/core/random.hpp>
#include <vector>

namespace pnn::testing {

// Element 0 cancels large values against each other (1e8, 1, -1e8, 3.3, ...: a sum in rank order loses
// the 1); the others are random of either sign with exponents over 2^-20 .. 2^20.
template <class T>
T canonical_input(int rank, index element) {
  if (element == 0) {
    constexpr T cancelling[] = {T(1e8), T(1), T(-1e8), T(3.3), T(-7.25e-3), T(2.5e7), T(-1), T(0.1)};
    return cancelling[rank % 8];
  }
  Generator random =
      Generator(2026).split(static_cast<std::uint64_t>(rank) * 1'000'003 + static_cast<std::uint64_t>(element));
  const T sign = random.uniform<T>() < T(0.5) ? T(-1) : T(1);
  const int exponent = static_cast<int>(random.below(41)) - 20;
  return sign * std::ldexp(T(1) + random.uniform<T>(), exponent);
}

template <class T>
std::vector<T> canonical_inputs(int rank, index count) {
  std::vector<T> values(static_cast<std::size_t>(count));
  for (index i = 0; i < count; ++i) values[static_cast<std::size_t>(i)] = canonical_input<T>(rank, i);
  return values;
}

// The binary-counter tree over ranks 0..ranks-1 of each element (core/canonical_sum.hpp), or, with
// `left_to_right`, ((v0 + v1) + v2) + ...: what an order-blind reduction might give instead.
template <class T>
std::vector<T> canonical_reference(int ranks, index count, bool left_to_right = false) {
  std::vector<std::vector<T>> inputs;
  std::vector<const T*> parts;
  for (int r = 0; r < ranks; ++r) inputs.push_back(canonical_inputs<T>(r, count));
  for (const auto& input : inputs) parts.push_back(input.data());
  std::vector<T> sum(static_cast<std::size_t>(count));
  if (!left_to_right) {
    tree_sum_elementwise(std::span<const T* const>(parts), sum.size(), sum.data());
    return sum;
  }
  for (const auto& input : inputs)
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += input[i];
  return sum;
}

// Bit-for-bit equality (== would call -0 and +0 equal).
template <class T>
bool same_bits(const std::vector<T>& a, const T* b) {
  return a.empty() || std::memcmp(a.data(), b, sizeof(T) * a.size()) == 0;
}

}  // namespace pnn::testing
