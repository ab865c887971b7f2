// pnn/layers/activation.hpp: the layer shared by the element-wise activations (ReLU, Tanh, Sigmoid).
//
// An activation only supplies its function and its derivative as expressions; this class turns them into
// a layer whose forward and backward are each one fused pass.
#pragma once

#include <string>

#include "pnn/layers/layer.hpp"

namespace pnn {

template <class Function, class T, class D, class In>
class ElementwiseActivation : public WithoutParameters {
 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = In;
  struct State {};

  static std::string name() { return Function::name(); }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const {
    y = Function::function(x);
  }
  // The derivative is written in terms of the output y, so x need not be kept.
  void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D> y, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State&, const Context&) const {
    if (dx) dx = Function::derivative_times(y, dy);
  }
};

}  // namespace pnn
