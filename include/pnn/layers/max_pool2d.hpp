// pnn/layers/max_pool2d.hpp: MaxPool2D<Window, Stride = Window>, the maximum over square windows.
//
// Input Shape<C, H, W>, output Shape<C, (H - Window) / Stride + 1, (W - Window) / Stride + 1>; no padding.
// Backward routes each gradient to the input element that was the maximum (the first one on ties),
// whose positions the forward pass keeps in its State.
#pragma once

#include <limits>
#include <string>

#include "pnn/core/kernels.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

template <index Window, index WindowStride = Window>
struct MaxPool2D {
  static_assert(Window > 0, "MaxPool2D<Window, Stride> needs Window > 0");
  static_assert(WindowStride > 0, "MaxPool2D<Window, Stride> needs Stride > 0");

  static std::string name() {
    std::string text = "MaxPool2D<" + std::to_string(Window);
    if (WindowStride != Window) text += ", " + std::to_string(WindowStride);
    return text + ">";
  }

  template <class T, class D, class In>
  class layer;
};

template <index Window, index WindowStride>
template <class T, class D, class In>
class MaxPool2D<Window, WindowStride>::layer : public WithoutParameters {
  static constexpr ConvolutionGeometry geometry = window_geometry<In>(Window, WindowStride, 0);
  // Naming input_fits below instantiates the check, which reports an input that does not fit as
  // layer_input_error<MaxPool2D<...>, In>; the output shape stays valid even then, so no further errors follow.
  static constexpr bool input_fits = check_layer_input<geometry.fits(), MaxPool2D, In>;
  static constexpr bool valid = geometry.fits() && input_fits;
  static_assert(In::size <= std::numeric_limits<SampleOffset>::max(),
                "MaxPool2D keeps 32-bit offsets of the maxima: samples must have fewer than 2^31 elements");

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape =
      Shape<valid ? geometry.channels : 1, valid ? geometry.output_height : 1, valid ? geometry.output_width : 1>;

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
