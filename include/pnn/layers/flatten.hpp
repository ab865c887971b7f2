// pnn/layers/flatten.hpp: Flatten, which turns a (C, H, W) sample into a vector of C*H*W features in
// PyTorch's order: feature c*H*W + h*W + w is channel c at (h, w), as torch.nn.Flatten gives. So a Dense
// after Flatten has PyTorch's weight layout, and its weights load into torch.nn.Linear as they are.
//
// Images are stored channels-last ((h, w, c) per sample, core/window.hpp), so Flatten transposes each
// sample from (H*W, C) to (C, H*W), and its backward pass transposes the gradient back. A sample of
// another shape, or with one channel or one position, is already in that order and is copied.
#pragma once

#include <string>

#include "pnn/core/window.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

struct Flatten {
  template <class T, class D, class In>
  class layer : public WithoutParameters {
    static constexpr index channels = In::rank == 3 ? In::dims[0] : 1;
    static constexpr index positions = In::size / channels;  // H*W for an image
    static constexpr bool transposes = channels > 1 && positions > 1;

   public:
    using value_type = T;
    using device = D;
    using input_shape = In;
    using output_shape = Shape<In::size>;
    struct State {};
    static std::string name() { return "Flatten"; }
    void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const {
      if constexpr (transposes) transpose_samples<T>(x, positions, channels, y);
      else y = x;
    }
    void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                  TensorView<T, 2, D> dx, State&, const Context&) const {
      if (!dx) return;
      if constexpr (transposes) transpose_samples<T>(dy, channels, positions, dx);
      else dx = dy;
    }
  };
};

static_assert(Layer<Flatten::layer<float, cpu, Shape<16, 7, 7>>>);

}  // namespace pnn
