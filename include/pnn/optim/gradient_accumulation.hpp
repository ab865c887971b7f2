// pnn/optim/gradient_accumulation.hpp: the gradients of an optimiser step taken in several passes.
//
// Gradient accumulation computes one optimiser step's batch in k passes (micro-steps) of fewer rows each,
// and updates once. Each pass is told which rows of the step's batch it holds (a BatchPart: rows
// [begin, begin + count) of `batch`), so the loss scales each row by 1 / batch and the layers sum over
// the pass's rows as the subtree of the step's canonical tree (core/batch_sum.hpp) that those rows form.
// GradientAccumulator adds the passes' gradients up in the binary-counter tree over the passes, in order
// (core/canonical_sum.hpp). When every pass is a run of whole chunks of the step's batch (k passes of B
// rows each with k dividing batch_chunks: 1, 2, 4 or 8), the passes are subtrees of the batch's tree and
// the sum is the gradient of one pass over all k B rows, bit for bit. Otherwise (other k, or passes of
// unequal size such as an epoch's short last batch) the sum has one fixed order of its own, equal to the
// whole batch's gradient up to rounding.
//
// It holds at most log2(k) + 1 copies of the gradient at once. The passes must come in order, each
// starting where the one before ended; a pass starting at row 0 begins a new step.
#pragma once

#include <utility>

#include "pnn/core/batch_sum.hpp"
#include "pnn/core/canonical_sum.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // the cpu's copy and sums; a device's come from its headers

namespace pnn {

template <class T, class D>
class GradientAccumulator {
 public:
  // Takes the gradients of the pass over rows `part`. Returns true when that pass ends the step's batch:
  // `gradients` then hold the sum over all of the step's passes (for a batch in one pass, they are left
  // as they are). On a pass out of order it throws, and the step's earlier passes are forgotten.
  bool add(const BatchPart& part, TensorView<T, 1, D> gradients) {
    if (part.begin == 0 && part.count == part.batch) {  // the whole batch in one pass: nothing to add
      if (batch_ != 0) clear();                         // a step left unfinished
      return true;
    }
    PNN_CHECK(part.batch > 0 && part.count > 0 && part.begin >= 0 && part.begin + part.count <= part.batch,
              ArgumentError, "gradient accumulation: a pass over rows [", part.begin, ", ", part.begin + part.count,
              ") of a batch of ", part.batch, " rows; a pass needs at least one row of the batch");
    if (part.begin == 0) {
      tree_ = Tree{};
      batch_ = part.batch;
      next_row_ = 0;
    }
    if (part.begin != next_row_ || part.batch != batch_) {
      const index expected = next_row_, batch = batch_;
      batch_ = 0;
      next_row_ = 0;
      throw ArgumentError(detail::concat("gradient accumulation: a pass over rows [", part.begin, ", ",
                                         part.begin + part.count, ") of a batch of ", part.batch,
                                         " rows, but the step's passes so far end at row ", expected, " of a batch of ",
                                         batch, "; passes must cover the batch in order, from row 0"));
    }
    next_row_ = part.begin + part.count;
    const bool last = next_row_ == part.batch;
    Tensor<T, 1, D> leaf(gradients.shape());
    copy(TensorView<const T, 1, D>(gradients), leaf.view());
    tree_.push(std::move(leaf));
    if (!last) return false;
    copy(TensorView<const T, 1, D>(tree_.total().view()), gradients);
    tree_ = Tree{};  // frees the partial sums
    batch_ = 0;
    next_row_ = 0;
    return true;
  }

  // Forgets a step whose passes have not all come (Optimizer::reset()).
  void clear() {
    tree_ = Tree{};
    batch_ = 0;
    next_row_ = 0;
  }

 private:
  // An inner node of the tree adds the right subtree's gradients into the left one's.
  struct AddInto {
    Tensor<T, 1, D> operator()(Tensor<T, 1, D> left, const Tensor<T, 1, D>& right) const {
      left.view() += right.view();
      return left;
    }
  };
  using Tree = BinaryCounterTree<Tensor<T, 1, D>, AddInto>;

  Tree tree_{};
  index batch_ = 0, next_row_ = 0;
};

}  // namespace pnn
