// pnn/core/window.hpp: the geometry of a window sliding over an image (convolution and pooling), and the
// argument checks of the window kernels (im2col, col2im, pooling, and the per-sample transpose Flatten
// uses), which every device's implementation
// shares so that a bad call gets the same message whatever the device. The kernels themselves are a
// device's: cpu/kernels.hpp, cuda/kernels.cuh (core/backend.hpp lists them).
//
// Images are stored channels-last: a batch row holds one sample's H*W*C values ordered (h, w, c).
#pragma once

#include <cstdint>
#include <limits>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"

namespace pnn {
// A square window (kernel) sliding over a (channels, height, width) sample with a stride, over an
// input padded with `padding` zeros on every side. Pooling uses it with padding 0.
struct ConvolutionGeometry {
  index channels = 0;
  index height = 0;
  index width = 0;
  index kernel = 1;
  index stride = 1;
  index padding = 0;
  index output_height = 0;
  index output_width = 0;

  // Derives the output size. A window larger than the padded input gives a geometry that does not fit().
  static constexpr ConvolutionGeometry make(index channels, index height, index width, index kernel, index stride = 1,
                                            index padding = 0) {
    ConvolutionGeometry g{channels, height, width, kernel, stride, padding, 0, 0};
    if (stride > 0 && kernel <= height + 2 * padding && kernel <= width + 2 * padding) {
      g.output_height = (height + 2 * padding - kernel) / stride + 1;
      g.output_width = (width + 2 * padding - kernel) / stride + 1;
    }
    return g;
  }

  constexpr bool fits() const {
    return channels > 0 && height > 0 && width > 0 && kernel > 0 && stride > 0 && padding >= 0 && output_height > 0 &&
           output_width > 0;
  }
  // Elements of one input sample, of one output channel plane, of one im2col row.
  constexpr index input_size() const { return height * width * channels; }
  constexpr index output_positions() const { return output_height * output_width; }
  constexpr index patch_size() const { return kernel * kernel * channels; }
  // Elements of one pooled sample (pooling keeps the channels).
  constexpr index pooled_size() const { return output_positions() * channels; }
};

// The geometry of a window over samples of the compile-time shape In = Shape<C, H, W>; for a shape of
// another rank, a geometry that does not fit(). Layers compute their output shape from it.
template <class In>
constexpr ConvolutionGeometry window_geometry(index kernel, index stride, index padding) {
  if constexpr (In::rank == 3)
    return ConvolutionGeometry::make(In::dims[0], In::dims[1], In::dims[2], kernel, stride, padding);
  else return ConvolutionGeometry{};
}

// Where max pooling found each maximum: an offset into the sample's input row. 32 bits halve the
// memory traffic of the index tensor; the pooling layers reject samples too large for it.
using SampleOffset = std::int32_t;

namespace detail {
inline void check_geometry(const ConvolutionGeometry& g, const char* kernel) {
  PNN_CHECK(g.fits(), ShapeError, kernel, ": the ", g.kernel, "x", g.kernel, " window with stride ", g.stride,
            " and padding ", g.padding, " does not fit a ", g.height, "x", g.width, "x", g.channels,
            " (H, W, C) sample");
}
template <class A, class B>
void check_rows(const A& images, index image_size, const B& windows, index window_rows, index window_size,
                const char* kernel) {
  PNN_CHECK(
      images.dim(1) == image_size && windows.dim(0) == images.dim(0) * window_rows && windows.dim(1) == window_size,
      ShapeError, kernel, ": a batch of shape ", format_extents<2>(images.shape()), " and ",
      format_extents<2>(windows.shape()), " do not fit the geometry (expected (batch, ", image_size, ") and (batch * ",
      window_rows, ", ", window_size, "))");
}

// The argument checks of each kernel, shared by every device's implementation (core here, cuda in
// include/pnn/cuda/kernels.cuh), so a bad call gets the same message whatever the device.
template <class Input, class Columns>
void check_im2col(const Input& input, const ConvolutionGeometry& geometry, const Columns& columns) {
  check_geometry(geometry, "im2col");
  check_rows(input, geometry.input_size(), columns, geometry.output_positions(), geometry.patch_size(), "im2col");
}
template <class Columns, class Input>
void check_col2im(const Columns& columns, const ConvolutionGeometry& geometry, const Input& input_gradient) {
  check_geometry(geometry, "col2im");
  check_rows(input_gradient, geometry.input_size(), columns, geometry.output_positions(), geometry.patch_size(),
             "col2im");
}
template <class Input, class Output>
void check_pool_forward(const Input& input, const ConvolutionGeometry& geometry, const Output& output,
                        const char* kernel) {
  check_geometry(geometry, kernel);
  PNN_CHECK(geometry.padding == 0, ShapeError, kernel, ": pooling windows are not padded");
  check_rows(input, geometry.input_size(), output, 1, geometry.pooled_size(), kernel);
}
template <class Gradient, class Input>
void check_pool_backward(const Gradient& output_gradient, const ConvolutionGeometry& geometry,
                         const Input& input_gradient, const char* kernel) {
  check_geometry(geometry, kernel);
  check_rows(input_gradient, geometry.input_size(), output_gradient, 1, geometry.pooled_size(), kernel);
}
template <class Input, class Output, class Argmax>
void check_max_pool_forward(const Input& input, const ConvolutionGeometry& geometry, const Output& output,
                            const Argmax& argmax) {
  check_pool_forward(input, geometry, output, "max_pool_forward");
  PNN_CHECK(argmax.shape() == output.shape(), ShapeError, "max_pool_forward: argmax has shape ",
            format_extents<2>(argmax.shape()), ", the output ", format_extents<2>(output.shape()));
  PNN_CHECK(geometry.input_size() <= std::numeric_limits<SampleOffset>::max(), ShapeError,
            "max_pool_forward: samples of ", geometry.input_size(),
            " elements are too large for 32-bit argmax offsets");
}
template <class Gradient, class Argmax, class Input>
void check_max_pool_backward(const Gradient& output_gradient, const Argmax& argmax, const ConvolutionGeometry& geometry,
                             const Input& input_gradient) {
  check_pool_backward(output_gradient, geometry, input_gradient, "max_pool_backward");
  PNN_CHECK(argmax.shape() == output_gradient.shape(), ShapeError, "max_pool_backward: argmax has shape ",
            format_extents<2>(argmax.shape()), ", the output gradient ", format_extents<2>(output_gradient.shape()));
}
// transpose_samples: each batch row holds a sample as a rows x cols matrix, row-major; the output row
// holds its transpose. Flatten turns channels-last images into PyTorch's (c, h, w) order with it.
template <class Input, class Output>
void check_transpose_samples(const Input& input, index rows, index cols, const Output& output) {
  PNN_CHECK(rows > 0 && cols > 0 && input.dim(1) == rows * cols && output.shape() == input.shape(), ShapeError,
            "transpose_samples: a batch of shape ", format_extents<2>(input.shape()), " into ",
            format_extents<2>(output.shape()), " does not hold ", rows, " x ", cols, " samples");
}
}  // namespace detail

}  // namespace pnn
