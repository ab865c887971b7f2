// pnn/layers/flatten.hpp: Flatten, which turns a (C, H, W) sample into a vector of C*H*W features.
//
// Activations are already stored as (batch, features) matrices, so Flatten only changes the compile-time
// shape; the copy it makes keeps every layer's output its own buffer.
#pragma once

#include <string>

#include "pnn/layers/layer.hpp"

namespace pnn {

struct Flatten {
  template <class T, class D, class In>
  class layer : public WithoutParameters {
   public:
    using value_type = T;
    using device = D;
    using input_shape = In;
    using output_shape = Shape<In::size>;
    struct State {};
    static std::string name() { return "Flatten"; }
    void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const { y = x; }
    void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                  TensorView<T, 2, D> dx, State&, const Context&) const {
      if (dx) dx = dy;
    }
  };
};

static_assert(Layer<Flatten::layer<float, cpu, Shape<16, 7, 7>>>);

}  // namespace pnn
