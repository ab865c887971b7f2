// pnn/layers/pooling.hpp: what MaxPool2D and AvgPool2D share: the checks and name of their spec, and the
// window geometry and output shape of their bound layer. A pooling window is square and never padded.
#pragma once

#include <string>

#include "pnn/core/shape.hpp"
#include "pnn/core/window.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

// The spec's compile-time parameters, checked once for every pooling layer.
template <index Window, index WindowStride>
struct PoolingWindow {
  static_assert(Window > 0, "a pooling layer <Window, Stride> needs Window > 0");
  static_assert(WindowStride > 0, "a pooling layer <Window, Stride> needs Stride > 0");
  static constexpr index window = Window;
  static constexpr index stride = WindowStride;

  // "MaxPool2D<2>", or "MaxPool2D<3, 2>" when the stride differs from the window.
  static std::string name_of(const char* layer) {
    std::string text = std::string(layer) + "<" + std::to_string(Window);
    if (WindowStride != Window) text += ", " + std::to_string(WindowStride);
    return text + ">";
  }
};

// The geometry of Spec's window over In and the output shape. Naming input_fits instantiates the check,
// which reports an input that does not fit as layer_input_error<Spec, In>; the output shape stays valid
// even then, so no further errors follow.
template <class Spec, class In>
struct PoolingShapes {
  static constexpr ConvolutionGeometry geometry = window_geometry<In>(Spec::window, Spec::stride, 0);
  static constexpr bool input_fits = check_layer_input<geometry.fits(), Spec, In>;
  static constexpr bool valid = geometry.fits() && input_fits;
  using output_shape =
      Shape<valid ? geometry.channels : 1, valid ? geometry.output_height : 1, valid ? geometry.output_width : 1>;
};

}  // namespace pnn
