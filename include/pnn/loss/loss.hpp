// pnn/loss/loss.hpp: the Loss concept.
//
// A loss maps the model's output and the batch's targets to a loss per sample and writes the gradient
// with respect to the output. Its one entry point is
//   double loss.sum(output, target, gradient, part)
// for rows [part.begin, part.begin + part.count) of a global batch of part.batch rows: it returns the sum
// of those rows' losses in the canonical tree of core/batch_sum.hpp (a rank's or micro-batch's subtree),
// and writes the gradient of the whole batch's mean loss, sum / part.batch, with respect to its rows (so
// every row is scaled by 1 / part.batch itself, never by a share of it: the bits do not depend on how
// the batch was split). The batch's mean loss is the canonical sum over all rows divided by part.batch,
// which mean_loss() gives for a batch held whole. The built-in losses also take (output, target,
// gradient), the mean over the rows given.
#pragma once

#include <concepts>
#include <vector>

#include "pnn/core/batch_sum.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // every loss runs on the CPU, the default device

namespace pnn {

template <class L, class T, class D>
concept Loss = requires(const L& loss, TensorView<const T, 2, D> output, typename L::template target_type<T, D> target,
                        TensorView<T, 2, D> gradient, const BatchPart& part) {
  { loss.sum(output, target, gradient, part) } -> std::convertible_to<double>;
};

// The mean loss of a batch held whole, and the gradient of that mean.
template <class L, class T, class D>
T mean_loss(const L& loss, TensorView<const T, 2, D> output, typename L::template target_type<T, D> target,
            TensorView<T, 2, D> gradient) {
  const index rows = output.dim(0);
  if (rows == 0) return T(0);
  return static_cast<T>(loss.sum(output, target, gradient, BatchPart::whole(rows)) / static_cast<double>(rows));
}

namespace detail {
// The canonical sum of a part's row losses (on the host): each piece sums its rows in order, and the
// pieces add up in the tree.
inline double canonical_row_sum(const double* row_losses, const BatchPart& part) {
  const BatchPieces pieces = batch_pieces(part);
  ScalarTreeSum<double> total;
  for (int piece = 0; piece < pieces.count; ++piece) {
    double sum = 0;
    for (index i = pieces.begin(piece); i < pieces.end(piece); ++i) sum += row_losses[i];
    total.push(sum);
  }
  return total.total();
}
}  // namespace detail

}  // namespace pnn
