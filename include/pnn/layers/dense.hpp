// pnn/layers/dense.hpp: Dense<Units>, the fully connected layer y = x W^T + b.
//
// W has shape (Units, inputs) and b shape (Units,), as in PyTorch's Linear. Any input shape is taken
// as a flat vector of its features.
#pragma once

#include <string>

#include "pnn/core/linalg.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

template <index Units, Init WeightInit = Init::he_normal>
struct Dense {
  static_assert(Units > 0, "Dense<Units> needs Units > 0");
  template <class T, class D, class In>
  class layer;
};

template <index Units, Init WeightInit>
template <class T, class D, class In>
class Dense<Units, WeightInit>::layer {
 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = Shape<Units>;
  static constexpr index inputs = In::size;
  struct State {
    BatchSum<T, D> weight_sum, bias_sum;  // the canonical trees of the gradients' sums over the batch
  };

  static std::string name() { return "Dense<" + std::to_string(Units) + ">"; }

  static void declare(ParameterDeclarations& declarations) {
    declarations.parameter("weight", {Units, inputs}, WeightInit, inputs, Units);
    declarations.parameter("bias", {Units}, Init::zeros, inputs, Units);
  }
  void bind(ParameterCursor<T, D>& cursor) {
    cursor.take(weight_, weight_gradient_, Extents<2>{Units, inputs});
    cursor.take(bias_, bias_gradient_, Extents<1>{Units});
  }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const {
    y = bias_;  // b in every row, then accumulate x W^T on top
    gemm<T>(x, weight_, y, {.transpose_b = true, .beta = 1});
  }

  void backward(TensorView<const T, 2, D> x, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State& state, const Context& context) const {
    const BatchPieces pieces = batch_pieces(context.part(x.dim(0)));
    add_batch_product<T>(dy, x, weight_gradient_, pieces, 1, state.weight_sum);  // dW += dy^T x
    add_batch_column_sums<T>(dy, bias_gradient_, pieces, 1, state.bias_sum);     // db += sum over the batch of dy
    if (dx) gemm<T>(dy, weight_, dx, {});                                        // dx = dy W
  }

 private:
  TensorView<T, 2, D> weight_, weight_gradient_;
  TensorView<T, 1, D> bias_, bias_gradient_;
};

static_assert(Layer<Dense<10>::layer<float, cpu, Shape<784>>>);

}  // namespace pnn
