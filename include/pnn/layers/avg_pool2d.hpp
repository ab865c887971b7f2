// pnn/layers/avg_pool2d.hpp: AvgPool2D<Window, Stride = Window>, the mean over square windows.
//
// Input Shape<C, H, W>, output Shape<C, (H - Window) / Stride + 1, (W - Window) / Stride + 1>; no padding,
// so every window averages Window * Window inputs. AvgPool2D<7> over a 7x7 map is global average pooling.
#pragma once

#include <string>

#include "pnn/core/kernels.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

template <index Window, index WindowStride = Window>
struct AvgPool2D {
  static_assert(Window > 0, "AvgPool2D<Window, Stride> needs Window > 0");
  static_assert(WindowStride > 0, "AvgPool2D<Window, Stride> needs Stride > 0");

  static std::string name() {
    std::string text = "AvgPool2D<" + std::to_string(Window);
    if (WindowStride != Window) text += ", " + std::to_string(WindowStride);
    return text + ">";
  }

  template <class T, class D, class In>
  class layer;
};

template <index Window, index WindowStride>
template <class T, class D, class In>
class AvgPool2D<Window, WindowStride>::layer : public WithoutParameters {
  static constexpr ConvolutionGeometry geometry = window_geometry<In>(Window, WindowStride, 0);
  // Naming input_fits below instantiates the check, which reports an input that does not fit as
  // layer_input_error<AvgPool2D<...>, In>; the output shape stays valid even then, so no further errors follow.
  static constexpr bool input_fits = check_layer_input<geometry.fits(), AvgPool2D, In>;
  static constexpr bool valid = geometry.fits() && input_fits;

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape =
      Shape<valid ? geometry.channels : 1, valid ? geometry.output_height : 1, valid ? geometry.output_width : 1>;
  struct State {};

  static std::string name() { return AvgPool2D::name(); }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const {
    avg_pool_forward<T>(x, geometry, y);
  }

  void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State&, const Context&) const {
    if (dx) avg_pool_backward<T>(dy, geometry, dx);
  }
};

static_assert(Layer<AvgPool2D<7>::layer<float, cpu, Shape<64, 7, 7>>>);

}  // namespace pnn
