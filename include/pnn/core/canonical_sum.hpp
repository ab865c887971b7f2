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
//   BinaryCounterTree<Value, Add>       the tree fed one leaf at a time: push(leaf), total();
//                                       ScalarTreeSum<T> over scalars
//   binary_counter_tree(n, leaf, add)   the tree over any value: leaf(i) gives leaf i, add(left, right) an
//                                       inner node. Values may be handles: with leaf(i) = i and an add that
//                                       accumulates slot[right] into slot[left] and returns left, it sums
//                                       vectors in place, on any device, and the total ends in slot[0].
//   tree_sum(values)                    the tree over scalars (0 for none)
//   tree_sum_elementwise(parts, n, out) out[i] = the tree over parts[0][i], parts[1][i], ...
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <functional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "pnn/core/error.hpp"

namespace pnn {

// The tree fed one leaf at a time, for sums whose leaves are computed one after another (the pieces of a
// batch in a layer's backward pass, a pipeline's micro-batches): at most one stack entry per bit of the
// leaf count is alive. depth() is the number of entries, which a sum over slots uses to place the next leaf.
template <class Value, class Add>
class BinaryCounterTree {
 public:
  constexpr BinaryCounterTree()
    requires std::is_default_constructible_v<Add>
  = default;
  constexpr explicit BinaryCounterTree(Add add) : add_(std::move(add)) {}

  constexpr void push(Value leaf) {
    stack_[depth_++] = Entry{std::move(leaf), 1};
    while (depth_ >= 2 && stack_[depth_ - 1].count == stack_[depth_ - 2].count) merge_top();
  }
  constexpr std::size_t depth() const { return depth_; }
  // The total, folding the stack from the top; at least one leaf must have been pushed.
  constexpr Value total() {
    PNN_CHECK(depth_ > 0, ArgumentError, "binary_counter_tree: a tree needs at least one leaf");
    while (depth_ >= 2) merge_top();
    return stack_[0].sum;
  }

 private:
  struct Entry {
    Value sum;
    std::size_t count;
  };
  constexpr void merge_top() {
    stack_[depth_ - 2] = Entry{add_(std::move(stack_[depth_ - 2].sum), std::move(stack_[depth_ - 1].sum)),
                               stack_[depth_ - 2].count + stack_[depth_ - 1].count};
    --depth_;
  }

  Add add_;
  // Counts on the stack are distinct powers of two, decreasing upwards: 64 entries cover any size_t.
  std::array<Entry, 8 * sizeof(std::size_t)> stack_;  // no zeroing: this runs once per element of a vector
  std::size_t depth_ = 0;
};

// The tree over scalars, fed one at a time.
template <class T>
using ScalarTreeSum = BinaryCounterTree<T, std::plus<T>>;

template <class Leaf, class Add>
constexpr auto binary_counter_tree(std::size_t leaves, Leaf&& leaf, Add&& add) {
  using Value = decltype(leaf(std::size_t{0}));
  PNN_CHECK(leaves > 0, ArgumentError, "binary_counter_tree: a tree needs at least one leaf");
  BinaryCounterTree<Value, std::decay_t<Add>> tree(std::forward<Add>(add));
  for (std::size_t i = 0; i < leaves; ++i) tree.push(leaf(i));
  return tree.total();
}

template <class T>
constexpr T tree_sum(std::span<const T> values) {
  if (values.empty()) return T(0);
  return binary_counter_tree(
      values.size(), [&](std::size_t i) { return values[i]; }, [](T left, T right) { return left + right; });
}

// `out` may be one of the parts: each element of every part is read before that element of out is written.
// Blocks of elements go through the tree together, each stack entry a block of scratch, so the additions
// are loops over contiguous values (the tree per element would cost a stack per element).
template <class T>
void tree_sum_elementwise(std::span<const T* const> parts, std::size_t count, T* out) {
  PNN_CHECK(!parts.empty(), ArgumentError, "tree_sum_elementwise: nothing to sum");
  constexpr std::size_t block = 1024;
  std::size_t levels = 1;  // the most entries a binary counter of parts.size() leaves holds at once
  while ((std::size_t{1} << (levels - 1)) < parts.size()) ++levels;
  std::vector<T> scratch(levels * block);
  for (std::size_t first = 0; first < count; first += block) {
    const std::size_t n = std::min(block, count - first);
    auto add = [&](std::size_t left, std::size_t right) {
      T* into = scratch.data() + left * block;
      const T* from = scratch.data() + right * block;
      for (std::size_t i = 0; i < n; ++i) into[i] = into[i] + from[i];
      return left;
    };
    BinaryCounterTree<std::size_t, decltype(add)> tree(add);
    for (const T* part : parts) {
      std::copy(part + first, part + first + n, scratch.data() + tree.depth() * block);
      tree.push(tree.depth());
    }
    const std::size_t total = tree.total();
    std::copy(scratch.data() + total * block, scratch.data() + total * block + n, out + first);
  }
}

}  // namespace pnn
