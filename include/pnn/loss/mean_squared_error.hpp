// pnn/loss/mean_squared_error.hpp: MeanSquaredError, the mean over all elements of (output - target)^2.
//
// The mean is over every element, as in PyTorch's MSELoss, so the gradient is 2 (output - target) / size.
// Its arithmetic is written once, as the two expressions below: expressions are evaluated per element by
// every device's executor (Eigen's vectorised loops on the CPU, one fused kernel on CUDA), so the eager
// loss on any device and CudaGraphStep's captured loss (include/pnn/cuda/loss.cuh) all run these.
#pragma once

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/loss/loss.hpp"

namespace pnn {

struct MeanSquaredError {
  template <class T, class D>
  using target_type = TensorView<const T, 2, D>;

  // The gradient of the mean: (output - target) * 2 scale, with scale = 1 / size.
  template <class Output, class Target, class T>
  static auto gradient_expression(const Output& output, const Target& target, T scale) {
    return (output - target) * (2 * scale);
  }
  // The squared errors, whose sum times scale is the loss.
  template <class Output, class Target>
  static auto squared_errors(const Output& output, const Target& target) {
    return square(output - target);
  }
  template <class Output, class Target>
  static void check(const Output& output, const Target& target) {
    PNN_CHECK(output.shape() == target.shape(), ShapeError, "mean squared error: output ",
              format_extents<2>(output.shape()), " and target ", format_extents<2>(target.shape()), " differ");
  }

  // Rows [part.begin, part.begin + part.count) of a global batch of part.batch rows: a row's loss is the
  // mean of its squared errors, so the batch's is the mean over all elements; each piece of the batch
  // sums its squared errors in the device's order, and the pieces add up in the canonical tree.
  template <class T, class D>
  double sum(TensorView<const T, 2, D> output, TensorView<const T, 2, D> target, TensorView<T, 2, D> gradient,
             const BatchPart& part) const {
    check(output, target);
    PNN_CHECK(part.count == output.dim(0), ShapeError, "mean squared error: ", output.dim(0), " rows of output as ",
              part.count, " rows of a batch");
    if (output.size() == 0) return 0;
    const index features = output.dim(1);
    const T scale = T(1) / static_cast<T>(part.batch * features);
    if (gradient) gradient = gradient_expression(output, target, scale);
    const BatchPieces pieces = batch_pieces(part);
    ScalarTreeSum<double> total;
    for (int piece = 0; piece < pieces.count; ++piece) {
      const index begin = pieces.begin(piece), rows = pieces.end(piece) - begin;
      total.push(rows == 0 ? 0.0
                           : static_cast<double>(
                                 pnn::sum(squared_errors(output.rows(begin, rows), target.rows(begin, rows)))));
    }
    return total.total() / static_cast<double>(features);
  }
  template <class T, class D>
  T operator()(TensorView<const T, 2, D> output, TensorView<const T, 2, D> target, TensorView<T, 2, D> gradient) const {
    return mean_loss(*this, output, target, gradient);
  }
};

static_assert(Loss<MeanSquaredError, float, cpu>);

}  // namespace pnn
