// pnn/core/canonical_sum.hpp: the one order in which pnn sums a row of partial results (the chunks of a
// batch, the ranks of a communicator), so that every way of computing a sum gives the same bits.
//
// The binary-counter tree over leaves 0..n-1: scan the leaves left to right keeping a stack of partial
// sums with their leaf counts; push each leaf with count 1; while the top two entries have equal counts,
// replace them by (lower + upper). At the end fold the stack from the top: (second + top) until one entry
// is left. For n a power of two this is the balanced tree ((v0 + v1) + (v2 + v3)) + ...; for n = 3 it is
// (v0 + v1) + v2 and for n = 6 ((v0 + v1) + (v2 + v3)) + (v4 + v5). A strategy that splits the leaves
// between workers along this tree's subtrees (a rank's chunks, a power-of-two group of ranks) can add the
// subtrees' sums later and still get the serial bits.
//
//   binary_counter_tree(n, leaf, add)   the tree over any value: leaf(i) gives leaf i, add(left, right) an
//                                       inner node. Values may be handles: with leaf(i) = i and an add that
//                                       accumulates slot[right] into slot[left] and returns left, it sums
//                                       vectors in place, on any device, and the total ends in slot[0].
//   tree_sum(values)                    the tree over scalars (0 for none)
//   tree_sum_elementwise(parts, n, out) out[i] = the tree over parts[0][i], parts[1][i], ...
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <utility>

#include "pnn/core/error.hpp"

namespace pnn {

template <class Leaf, class Add>
constexpr auto binary_counter_tree(std::size_t leaves, Leaf&& leaf, Add&& add) {
  using Value = decltype(leaf(std::size_t{0}));
  PNN_CHECK(leaves > 0, ArgumentError, "binary_counter_tree: a tree needs at least one leaf");
  // Counts on the stack are distinct powers of two, decreasing upwards: 64 entries cover any size_t.
  struct Entry {
    Value sum;
    std::size_t count;
  };
  std::array<Entry, 8 * sizeof(std::size_t)> stack;  // no zeroing: this runs once per element of a vector
  std::size_t depth = 0;
  for (std::size_t i = 0; i < leaves; ++i) {
    stack[depth++] = Entry{leaf(i), 1};
    while (depth >= 2 && stack[depth - 1].count == stack[depth - 2].count) {
      stack[depth - 2] =
          Entry{add(std::move(stack[depth - 2].sum), std::move(stack[depth - 1].sum)), 2 * stack[depth - 1].count};
      --depth;
    }
  }
  for (; depth >= 2; --depth)
    stack[depth - 2] = Entry{add(std::move(stack[depth - 2].sum), std::move(stack[depth - 1].sum)),
                             stack[depth - 2].count + stack[depth - 1].count};
  return std::move(stack[0].sum);
}

template <class T>
constexpr T tree_sum(std::span<const T> values) {
  if (values.empty()) return T(0);
  return binary_counter_tree(
      values.size(), [&](std::size_t i) { return values[i]; }, [](T left, T right) { return left + right; });
}

// `out` may be one of the parts: each element of every part is read before that element of out is written.
template <class T>
void tree_sum_elementwise(std::span<const T* const> parts, std::size_t count, T* out) {
  PNN_CHECK(!parts.empty(), ArgumentError, "tree_sum_elementwise: nothing to sum");
  for (std::size_t i = 0; i < count; ++i)
    out[i] = binary_counter_tree(
        parts.size(), [&](std::size_t leaf) { return parts[leaf][i]; }, [](T left, T right) { return left + right; });
}

}  // namespace pnn
