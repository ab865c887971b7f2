// pnn/layers/max_pool2d.hpp: MaxPool2D<Window, Stride = Window>, the maximum over square windows.
//
// Input Shape<C, H, W>, output Shape<C, (H - Window) / Stride + 1, (W - Window) / Stride + 1>; no padding.
// Backward routes each gradient to the input element that was the maximum (the first one on ties),
// whose positions the forward pass keeps in its State.
#pragma once

#include <limits>
#include <string>

#include "pnn/core/window.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/layers/pooling.hpp"

namespace pnn {

template <index Window, index WindowStride = Window>
struct MaxPool2D : PoolingWindow<Window, WindowStride> {
  static std::string name() { return MaxPool2D::name_of("MaxPool2D"); }

  template <class T, class D, class In>
  class layer;
};

template <index Window, index WindowStride>
template <class T, class D, class In>
class MaxPool2D<Window, WindowStride>::layer : public WithoutParameters, public PoolingShapes<MaxPool2D, In> {
  static constexpr ConvolutionGeometry geometry = PoolingShapes<MaxPool2D, In>::geometry;
  static_assert(In::size <= std::numeric_limits<SampleOffset>::max(),
                "MaxPool2D keeps 32-bit offsets of the maxima: samples must have fewer than 2^31 elements");

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using typename PoolingShapes<MaxPool2D, In>::output_shape;

  // Where each maximum of this pass was: an offset into its sample's input row.
  struct State {
    Tensor<SampleOffset, 2, D> argmax;
  };

  static std::string name() { return MaxPool2D::name(); }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State& state, const Context&) const {
    state.argmax.resize(y.shape());
    max_pool_forward<T>(x, geometry, y, state.argmax.view());
  }

  void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State& state, const Context&) const {
    if (dx) max_pool_backward<T>(dy, state.argmax.view(), geometry, dx);
  }
};

static_assert(Layer<MaxPool2D<2>::layer<float, cpu, Shape<16, 28, 28>>>);

}  // namespace pnn
