// pnn/core/batch_sum.hpp: the one order in which every sum over a batch is added up.
//
// Floating-point addition is not associative, so a sum over the batch (a weight gradient, a bias
// gradient, BatchNorm's statistics, the loss) changes in its last bits with the order of its terms, and
// ReLU and max-pooling turn last bits into different paths. pnn therefore fixes the order, whatever
// computes the sum:
//   - a global batch of B rows is cut into batch_chunks = 8 chunks, chunk c holding rows
//     [B c / 8, B (c + 1) / 8) (the formula of batch_share, so some chunks may be empty when B < 8);
//   - a chunk's own terms are summed by the device's kernel, which depends on the chunk's rows alone;
//   - the chunks' sums are combined by the binary-counter tree of core/canonical_sum.hpp, a balanced binary
//     tree over the 8.
// A data-parallel rank of p ranks (p dividing 8) holds 8 / p whole chunks, an aligned subtree, and computes
// that subtree; the communicators' all_reduce_canonical adds the ranks' subtrees in the same tree's upper
// levels. A pipeline's micro-batches (m dividing 8) are subtrees too, accumulated by the same tree. So
// serial training, any of these layouts and any combination give the same bits. Other world sizes cut
// chunks into pieces: still one deterministic order, but not serial training's.
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "pnn/core/canonical_sum.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"

namespace pnn {

// The number of chunks of every global batch: the data-parallel world sizes and pipeline micro-batch
// counts that reproduce serial training bit for bit are its divisors, 1, 2, 4 and 8.
inline constexpr index batch_chunks = 8;

// Which rows of which global batch a pass computes: rows [begin, begin + count) of a batch of `batch`.
struct BatchPart {
  index batch = 0;
  index begin = 0;
  index count = 0;

  // A whole batch of `rows` rows.
  static constexpr BatchPart whole(index rows) { return {rows, 0, rows}; }
};

// First row of chunk c of a batch of `batch` rows.
constexpr index chunk_begin(index batch, index chunk) { return batch * chunk / batch_chunks; }

// The leaves of a part's canonical tree, as row offsets within the part: piece i is rows
// [ends[i - 1], ends[i]) (from 0 for i = 0). A part that is a run of whole chunks has one piece per chunk,
// empty chunks included, so that its tree is the same subtree serial training builds; a part that
// starts inside a chunk begins with the rest of that chunk.
struct BatchPieces {
  int count = 0;
  std::array<index, batch_chunks + 1> ends{};

  index begin(int piece) const { return piece == 0 ? 0 : ends[static_cast<std::size_t>(piece - 1)]; }
  index end(int piece) const { return ends[static_cast<std::size_t>(piece)]; }
};

inline BatchPieces batch_pieces(const BatchPart& part) {
  PNN_CHECK(part.batch >= 0 && part.begin >= 0 && part.count >= 0 && part.begin + part.count <= part.batch,
            ArgumentError, "batch_pieces: rows [", part.begin, ", ", part.begin + part.count, ") of a batch of ",
            part.batch);
  BatchPieces pieces;
  const index end = part.begin + part.count;
  auto add = [&](index piece_end) { pieces.ends[static_cast<std::size_t>(pieces.count++)] = piece_end - part.begin; };
  for (index c = 0; c < batch_chunks; ++c) {
    const index first = chunk_begin(part.batch, c), last = chunk_begin(part.batch, c + 1);
    if (first < part.begin && last > part.begin) add(std::min(last, end));  // the part starts inside chunk c
    else if (first >= part.begin && first < end) add(std::min(last, end));
  }
  return pieces;
}

// Adds vectors of one size on device D in the canonical tree (core/canonical_sum.hpp), as they come: write
// a leaf into leaf(), then push(). The tree's entries live in slots, entry i in slot i, so a merge adds
// slot i + 1 into slot i and at most one slot per bit of the leaf count is alive. add_to(destination)
// adds the total to a tensor (a gradient that starts at zero, so every layout adds 0 + total alike).
// (The tree's add refers to its BatchSum, so a copied BatchSum is usable only after its own start().)
template <class T, class D>
class BatchSum {
 public:
  // Starts a sum of leaves of `size` elements. The slots are kept between sums.
  void start(index size) {
    size_ = size;
    tree_ = Tree(AddSlot{this});
  }
  TensorView<T, 1, D> leaf() { return slot(tree_.depth()).view(); }
  // A leaf of zeros, for kernels that add into it.
  TensorView<T, 1, D> zeroed_leaf() {
    Tensor<T, 1, D>& leaf = slot(tree_.depth());
    leaf.fill_zero();
    return leaf.view();
  }
  void push() { tree_.push(tree_.depth()); }
  // The total (zero without leaves). Valid until the next start().
  TensorView<const T, 1, D> total() {
    if (tree_.depth() == 0) {
      zeroed_leaf();
      push();
    }
    return slots_[tree_.total()].view();
  }
  void add_to(TensorView<T, 1, D> destination) {
    const auto sum = total();
    destination += sum;
  }

 private:
  struct AddSlot {
    BatchSum* sum;
    std::size_t operator()(std::size_t left, std::size_t right) const {
      sum->slots_[left].view() += sum->slots_[right].view();
      return left;
    }
  };
  using Tree = BinaryCounterTree<std::size_t, AddSlot>;

  Tensor<T, 1, D>& slot(std::size_t i) {
    if (slots_.size() <= i) slots_.resize(i + 1);
    slots_[i].resize(Extents<1>{size_});
    return slots_[i];
  }

  index size_ = 0;
  std::vector<Tensor<T, 1, D>> slots_;
  Tree tree_{AddSlot{this}};
};

}  // namespace pnn
