// pnn/loss/mean_squared_error.hpp: MeanSquaredError, the mean over all elements of (output - target)^2.
//
// The mean is over every element, as in PyTorch's MSELoss, so the gradient is 2 (output - target) / size.
#pragma once

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/loss/loss.hpp"

namespace pnn {

struct MeanSquaredError {
  template <class T, class D>
  using target_type = TensorView<const T, 2, D>;

  template <class T, class D>
  T operator()(TensorView<const T, 2, D> output, TensorView<const T, 2, D> target, TensorView<T, 2, D> gradient) const {
    PNN_CHECK(output.shape() == target.shape(), ShapeError, "mean squared error: output ",
              format_extents<2>(output.shape()), " and target ", format_extents<2>(target.shape()), " differ");
    if (output.size() == 0) return T(0);
    const T scale = T(1) / static_cast<T>(output.size());
    if (gradient) gradient = (output - target) * (2 * scale);
    return sum(square(output - target)) * scale;
  }
};

static_assert(Loss<MeanSquaredError, float, cpu>);

}  // namespace pnn
