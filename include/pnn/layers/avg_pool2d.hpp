// pnn/layers/avg_pool2d.hpp: AvgPool2D<Window, Stride = Window>, the mean over square windows.
//
// Input Shape<C, H, W>, output Shape<C, (H - Window) / Stride + 1, (W - Window) / Stride + 1>; no padding,
// so every window averages Window * Window inputs. AvgPool2D<7> over a 7x7 map is global average pooling.
#pragma once

#include <string>

#include "pnn/core/window.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/layers/pooling.hpp"

namespace pnn {

template <index Window, index WindowStride = Window>
struct AvgPool2D : PoolingWindow<Window, WindowStride> {
  static std::string name() { return AvgPool2D::name_of("AvgPool2D"); }

  template <class T, class D, class In>
  class layer;
};

template <index Window, index WindowStride>
template <class T, class D, class In>
class AvgPool2D<Window, WindowStride>::layer : public WithoutParameters, public PoolingShapes<AvgPool2D, In> {
  static constexpr ConvolutionGeometry geometry = PoolingShapes<AvgPool2D, In>::geometry;

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using typename PoolingShapes<AvgPool2D, In>::output_shape;
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
