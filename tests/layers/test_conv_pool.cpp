// Conv2D, MaxPool2D and AvgPool2D: gradients against finite differences, values against a direct
// convolution written with plain loops and against hand-computed pooling, and the compile-time shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <pnn/cpu/kernels.hpp>
#include <pnn/layers/avg_pool2d.hpp>
#include <pnn/layers/conv2d.hpp>
#include <pnn/layers/max_pool2d.hpp>
#include <vector>

#include "support/gradient_check.hpp"

using namespace pnn;

// ---- compile-time shapes ------------------------------------------------------------------------------
template <class Spec, class In>
using OutputOf = typename Spec::template layer<float, cpu, In>::output_shape;

// The CNN of examples/train_cnn.cpp.
static_assert(std::is_same_v<OutputOf<Conv2D<16, 5, Pad<2>>, Shape<1, 28, 28>>, Shape<16, 28, 28>>);
static_assert(std::is_same_v<OutputOf<MaxPool2D<2>, Shape<16, 28, 28>>, Shape<16, 14, 14>>);
static_assert(std::is_same_v<OutputOf<Conv2D<32, 5, Pad<2>>, Shape<16, 14, 14>>, Shape<32, 14, 14>>);
static_assert(std::is_same_v<OutputOf<MaxPool2D<2>, Shape<32, 14, 14>>, Shape<32, 7, 7>>);
static_assert(std::is_same_v<BasicSequential<float, cpu, Input<1, 28, 28>, Conv2D<16, 5, Pad<2>>, ReLU, MaxPool2D<2>,
                                             Conv2D<32, 5, Pad<2>>, ReLU, MaxPool2D<2>, Flatten>::output_shape,
                             Shape<32 * 7 * 7>>);
// No padding, strides, options in either order, non-square inputs, rounding down.
static_assert(std::is_same_v<OutputOf<Conv2D<4, 5>, Shape<3, 28, 28>>, Shape<4, 24, 24>>);
static_assert(std::is_same_v<OutputOf<Conv2D<8, 3, Stride<2>>, Shape<3, 9, 7>>, Shape<8, 4, 3>>);
static_assert(std::is_same_v<OutputOf<Conv2D<8, 3, Pad<1>, Stride<2>>, Shape<3, 9, 8>>, Shape<8, 5, 4>>);
static_assert(std::is_same_v<OutputOf<Conv2D<8, 3, Stride<2>, Pad<1>>, Shape<3, 9, 8>>, Shape<8, 5, 4>>);
static_assert(std::is_same_v<OutputOf<Conv2D<2, 1>, Shape<5, 3, 4>>, Shape<2, 3, 4>>);
static_assert(std::is_same_v<OutputOf<Conv2D<2, 7, Pad<2>>, Shape<1, 3, 3>>, Shape<2, 1, 1>>);  // the kernel just fits
static_assert(std::is_same_v<OutputOf<MaxPool2D<3, 2>, Shape<4, 7, 7>>, Shape<4, 3, 3>>);
static_assert(std::is_same_v<OutputOf<MaxPool2D<2>, Shape<2, 5, 7>>, Shape<2, 2, 3>>);
static_assert(std::is_same_v<OutputOf<AvgPool2D<7>, Shape<64, 7, 7>>, Shape<64, 1, 1>>);
static_assert(std::is_same_v<OutputOf<AvgPool2D<2, 1>, Shape<3, 4, 5>>, Shape<3, 3, 4>>);

namespace {

// Fills a tensor with uniform values in [low, high).
template <class T, std::size_t R>
void fill_uniform(Tensor<T, R>& tensor, std::uint64_t seed, T low = T(-1), T high = T(1)) {
  Generator random(seed);
  for (pnn::index i = 0; i < tensor.size(); ++i) tensor[i] = random.uniform<T>(low, high);
}

// Plain loops over channels-last data: the definition a convolution layer must agree with.
struct DirectConvolution {
  pnn::index channels, height, width, filters, kernel, stride, padding;
  pnn::index output_height() const { return (height + 2 * padding - kernel) / stride + 1; }
  pnn::index output_width() const { return (width + 2 * padding - kernel) / stride + 1; }
  pnn::index input_offset(pnn::index n, pnn::index h, pnn::index w, pnn::index c) const {
    return ((n * height + h) * width + w) * channels + c;
  }
  pnn::index output_offset(pnn::index n, pnn::index oh, pnn::index ow, pnn::index f) const {
    return ((n * output_height() + oh) * output_width() + ow) * filters + f;
  }
  pnn::index weight_offset(pnn::index f, pnn::index kh, pnn::index kw, pnn::index c) const {
    return ((f * kernel + kh) * kernel + kw) * channels + c;
  }

  // Calls visit(input offset, output offset, weight offset) for every multiply of the convolution.
  template <class Visit>
  void for_each_term(pnn::index batch, Visit&& visit) const {
    for (pnn::index n = 0; n < batch; ++n)
      for (pnn::index oh = 0; oh < output_height(); ++oh)
        for (pnn::index ow = 0; ow < output_width(); ++ow)
          for (pnn::index f = 0; f < filters; ++f)
            for (pnn::index kh = 0; kh < kernel; ++kh)
              for (pnn::index kw = 0; kw < kernel; ++kw) {
                const pnn::index h = oh * stride - padding + kh, w = ow * stride - padding + kw;
                if (h < 0 || h >= height || w < 0 || w >= width) continue;
                for (pnn::index c = 0; c < channels; ++c)
                  visit(input_offset(n, h, w, c), output_offset(n, oh, ow, f), weight_offset(f, kh, kw, c));
              }
  }

  template <class T>
  std::vector<double> forward(const Tensor<T, 2>& x, TensorView<const T, 1> weight, TensorView<const T, 1> bias) const {
    const pnn::index batch = x.dim(0);
    std::vector<double> y(batch * output_height() * output_width() * filters);
    for (pnn::index i = 0; i < pnn::index(y.size()); ++i) y[i] = bias[i % filters];
    for_each_term(batch,
                  [&](pnn::index in, pnn::index out, pnn::index w) { y[out] += double(x[in]) * double(weight[w]); });
    return y;
  }
};

// Checks a Conv2D model's forward pass, parameter gradients and input gradient against DirectConvolution.
template <class T, class Net>
void check_against_direct(const DirectConvolution& direct, pnn::index batch, double tolerance) {
  Net net(3);
  REQUIRE(net.parameters().size() == 2);
  const auto weight = TensorView<const T, 1>(net.parameters()[0].value);
  const auto bias = TensorView<const T, 1>(net.parameters()[1].value);
  Generator random(11);
  for (pnn::index i = 0; i < bias.size(); ++i) net.parameters()[1].value[i] = random.uniform<T>(-1, 1);  // not all zero

  Tensor<T, 2> x(batch, Net::input_shape::size);
  fill_uniform(x, 5);
  typename Net::Trace trace;
  const auto y = net.forward(x.view(), trace);
  const std::vector<double> expected = direct.forward(x, weight, bias);
  REQUIRE(static_cast<std::size_t>(y.size()) == expected.size());
  for (pnn::index i = 0; i < y.size(); ++i) REQUIRE_MESSAGE(std::abs(y[i] - expected[i]) <= tolerance, "output " << i);

  // Backward: dW = sum dy x, db = sum dy, dx = sum dy W, on top of zeroed gradients.
  Tensor<T, 2> dy(y.shape()), dx(x.shape());
  fill_uniform(dy, 6);
  net.zero_grad();
  net.backward(dy.view(), dx.view(), trace);
  std::vector<double> weight_gradient(weight.size()), input_gradient(x.size()), bias_gradient(bias.size());
  direct.for_each_term(batch, [&](pnn::index in, pnn::index out, pnn::index w) {
    weight_gradient[w] += double(dy[out]) * double(x[in]);
    input_gradient[in] += double(dy[out]) * double(weight[w]);
  });
  for (pnn::index i = 0; i < dy.size(); ++i) bias_gradient[i % direct.filters] += dy[i];
  const auto& w = net.parameters()[0];
  const auto& b = net.parameters()[1];
  for (pnn::index i = 0; i < w.gradient.size(); ++i)
    REQUIRE_MESSAGE(std::abs(w.gradient[i] - weight_gradient[i]) <= tolerance * batch * 10, "weight gradient " << i);
  for (pnn::index i = 0; i < b.gradient.size(); ++i)
    REQUIRE_MESSAGE(std::abs(b.gradient[i] - bias_gradient[i]) <= tolerance * batch * 10, "bias gradient " << i);
  for (pnn::index i = 0; i < dx.size(); ++i)
    REQUIRE_MESSAGE(std::abs(dx[i] - input_gradient[i]) <= tolerance * 10, "input gradient " << i);
}

}  // namespace

TEST_CASE("conv2d.gradients") {
  testing::check_layer<Conv2D<2, 1>, Shape<3, 4, 4>>();             // 1x1 kernel
  testing::check_layer<Conv2D<3, 3, Pad<1>>, Shape<2, 5, 5>>();     // "same" padding
  testing::check_layer<Conv2D<4, 5, Pad<2>>, Shape<3, 6, 6>>();     // several channels in and out
  testing::check_layer<Conv2D<5, 5, Pad<2>>, Shape<1, 5, 5>>();     // one channel: the CNN's first layer
  testing::check_layer<Conv2D<2, 3, Stride<2>>, Shape<2, 7, 7>>();  // stride without padding
  testing::check_layer<Conv2D<3, 3, Stride<2>, Pad<1>>, Shape<2, 6, 6>>();
  testing::check_layer<Conv2D<3, 3, Pad<1>>, Shape<2, 5, 7>>();  // non-square input
  testing::check_layer<Conv2D<2, 2, Pad<1>, Stride<3>>, Shape<5, 4, 7>>({.batch = 2});
}

TEST_CASE("conv2d.forward_and_backward_match_direct_convolution") {
  // double, one chunk per sample or less (the columns of one sample exceed the layer's budget)
  check_against_direct<double, BasicSequential<double, cpu, Input<4, 24, 24>, Conv2D<3, 5, Pad<2>>>>(
      {4, 24, 24, 3, 5, 1, 2}, 3, 1e-10);
  // float, the CNN's layers: one channel, and 16 channels (whole vectors) on a 7x7 map
  check_against_direct<float, BasicSequential<float, cpu, Input<1, 12, 12>, Conv2D<16, 5, Pad<2>>>>(
      {1, 12, 12, 16, 5, 1, 2}, 4, 1e-4);
  check_against_direct<float, BasicSequential<float, cpu, Input<16, 7, 7>, Conv2D<8, 5, Pad<2>>>>(
      {16, 7, 7, 8, 5, 1, 2}, 3, 1e-4);
  // float, several samples per chunk with a partial last chunk (7 + 3)
  check_against_direct<float, BasicSequential<float, cpu, Input<4, 16, 16>, Conv2D<4, 3, Pad<1>>>>(
      {4, 16, 16, 4, 3, 1, 1}, 10, 1e-4);
  // strides, non-square, odd channel counts (vector and scalar tails)
  check_against_direct<float, BasicSequential<float, cpu, Input<9, 11, 8>, Conv2D<5, 3, Stride<2>, Pad<1>>>>(
      {9, 11, 8, 5, 3, 2, 1}, 2, 1e-4);
  check_against_direct<double, BasicSequential<double, cpu, Input<3, 9, 10>, Conv2D<2, 4, Stride<3>>>>(
      {3, 9, 10, 2, 4, 3, 0}, 2, 1e-10);
}

TEST_CASE("conv2d.parameters") {
  using Net = BasicSequential<float, cpu, Input<16, 8, 8>, Conv2D<64, 3, Pad<1>>>;
  CHECK(Conv2D<16, 5, Pad<2>>::name() == "Conv2D<16, 5, Pad<2>>");
  CHECK(Conv2D<8, 3, Stride<2>, Pad<1>>::name() == "Conv2D<8, 3, Pad<1>, Stride<2>>");
  CHECK(Conv2D<8, 1>::name() == "Conv2D<8, 1>");
  Net net(9);
  const auto parameters = net.parameters();
  REQUIRE(parameters.size() == 2);
  CHECK(parameters[0].name() == "0.weight");
  // PyTorch's (filters, C, K, K), which memory holds as (filters, K, K, C)
  CHECK(parameters[0].declaration.shape == std::vector<pnn::index>{64, 16, 3, 3});
  CHECK(parameters[0].declaration.file.memory_axes == std::vector<int>{0, 2, 3, 1});
  CHECK(parameters[0].declaration.fan_in == 16 * 9);
  CHECK(parameters[0].declaration.fan_out == 64 * 9);
  CHECK(parameters[1].declaration.shape == std::vector<pnn::index>{64});
  // He initialisation: standard deviation sqrt(2 / fan_in), zero bias.
  double sum_of_squares = 0;
  for (pnn::index i = 0; i < parameters[0].value.size(); ++i) sum_of_squares += std::pow(parameters[0].value[i], 2);
  const double deviation = std::sqrt(sum_of_squares / double(parameters[0].value.size()));
  CHECK(deviation == doctest::Approx(std::sqrt(2.0 / 144)).epsilon(0.05));
  for (pnn::index i = 0; i < parameters[1].value.size(); ++i) CHECK(parameters[1].value[i] == 0);
}

TEST_CASE("max_pool2d.gradients") {
  testing::check_layer<MaxPool2D<2>, Shape<3, 4, 4>>();
  testing::check_layer<MaxPool2D<3, 2>, Shape<2, 7, 7>>();  // overlapping windows
  testing::check_layer<MaxPool2D<2>, Shape<5, 5, 7>>();     // odd sizes: the last row and column are dropped
  testing::check_layer<MaxPool2D<2, 3>, Shape<2, 7, 8>>();  // stride larger than the window
}

TEST_CASE("avg_pool2d.gradients") {
  testing::check_layer<AvgPool2D<2>, Shape<3, 4, 4>>();
  testing::check_layer<AvgPool2D<3, 2>, Shape<2, 7, 7>>();
  testing::check_layer<AvgPool2D<2>, Shape<5, 5, 7>>();
  testing::check_layer<AvgPool2D<4>, Shape<6, 4, 4>>();  // global average pooling
}

TEST_CASE("max_pool2d.values") {
  // Two channels, 4x4, channels-last: channel 0 holds v, channel 1 holds -v, with v = 0..15 row by row.
  BasicSequential<double, cpu, Input<2, 4, 4>, MaxPool2D<2>> net;
  Tensor<double, 2> x(1, 32);
  for (pnn::index v = 0; v < 16; ++v) {
    x[2 * v] = double(v);
    x[2 * v + 1] = -double(v);
  }
  typename decltype(net)::Trace trace;
  const auto y = net.forward(x.view(), trace);
  // Output (oh, ow, c): channel 0 takes each window's bottom-right value, channel 1 its top-left (-value).
  const double expected[] = {5, -0, 7, -2, 13, -8, 15, -10};
  for (pnn::index i = 0; i < 8; ++i) CHECK(y[i] == expected[i]);

  // The gradient goes to the maximum and nowhere else.
  Tensor<double, 2> dy({1, 8}, {1, 2, 3, 4, 5, 6, 7, 8}), dx(1, 32);
  net.backward(dy.view(), dx.view(), trace);
  Tensor<double, 2> expected_dx(1, 32);
  expected_dx[2 * 5] = 1;      // value 5 at (1, 1), channel 0
  expected_dx[2 * 0 + 1] = 2;  // -0 at (0, 0), channel 1
  expected_dx[2 * 7] = 3;
  expected_dx[2 * 2 + 1] = 4;
  expected_dx[2 * 13] = 5;
  expected_dx[2 * 8 + 1] = 6;
  expected_dx[2 * 15] = 7;
  expected_dx[2 * 10 + 1] = 8;
  for (pnn::index i = 0; i < 32; ++i) CHECK_MESSAGE(dx[i] == expected_dx[i], "dx[" << i << "]");
}

TEST_CASE("max_pool2d.ties_and_overlap") {
  // All equal (as after a ReLU that zeroed a region): each window's gradient goes to its first element.
  // Nine float channels: eight take the vector path, the last the scalar one.
  constexpr pnn::index channels = 9;
  BasicSequential<float, cpu, Input<channels, 4, 4>, MaxPool2D<2>> tied;
  Tensor<float, 2> zeros(1, 16 * channels), dy(1, 4 * channels), dx(1, 16 * channels);
  for (pnn::index i = 0; i < dy.size(); ++i) dy[i] = float(i + 1);
  typename decltype(tied)::Trace trace;
  tied.forward(zeros.view(), trace);
  tied.backward(dy.view(), dx.view(), trace);
  for (pnn::index pixel = 0; pixel < 16; ++pixel)
    for (pnn::index c = 0; c < channels; ++c) {
      const pnn::index window = pixel == 0 ? 0 : pixel == 2 ? 1 : pixel == 8 ? 2 : pixel == 10 ? 3 : -1;
      const float expected = window < 0 ? 0.0f : dy[window * channels + c];
      CHECK_MESSAGE(dx[pixel * channels + c] == expected, "pixel " << pixel << ", channel " << c);
    }

  // Overlapping 3x3 windows with stride 2 on 5x5: the centre is every window's maximum, so its
  // gradient is the sum of all four.
  BasicSequential<double, cpu, Input<1, 5, 5>, MaxPool2D<3, 2>> overlapping;
  Tensor<double, 2> x(1, 25), dy4({1, 4}, {1, 10, 100, 1000}), dx25(1, 25);
  fill_uniform(x, 3);
  x[12] = 5;
  typename decltype(overlapping)::Trace overlap_trace;
  const auto y = overlapping.forward(x.view(), overlap_trace);
  for (pnn::index i = 0; i < 4; ++i) CHECK(y[i] == 5);
  overlapping.backward(dy4.view(), dx25.view(), overlap_trace);
  for (pnn::index i = 0; i < 25; ++i) CHECK(dx25[i] == (i == 12 ? 1111 : 0));
}

TEST_CASE("max_pool2d.float_vector_path_matches_scalar_definition") {
  // 19 channels: two whole float vectors and a scalar tail; overlapping windows on a non-square map.
  constexpr pnn::index channels = 19, height = 9, width = 6, window = 3, stride = 2;
  constexpr pnn::index out_h = (height - window) / stride + 1, out_w = (width - window) / stride + 1;
  BasicSequential<float, cpu, Input<channels, height, width>, MaxPool2D<window, stride>> net;
  Tensor<float, 2> x(2, channels * height * width);
  fill_uniform(x, 8);
  const auto y = net.forward(x.view());
  for (pnn::index n = 0; n < 2; ++n)
    for (pnn::index oh = 0; oh < out_h; ++oh)
      for (pnn::index ow = 0; ow < out_w; ++ow)
        for (pnn::index c = 0; c < channels; ++c) {
          float best = -1e30f;
          for (pnn::index kh = 0; kh < window; ++kh)
            for (pnn::index kw = 0; kw < window; ++kw)
              best = std::max(best, x(n, ((oh * stride + kh) * width + ow * stride + kw) * channels + c));
          REQUIRE(y(n, (oh * out_w + ow) * channels + c) == best);
        }
}

TEST_CASE("avg_pool2d.values") {
  BasicSequential<double, cpu, Input<1, 4, 4>, AvgPool2D<2>> net;
  Tensor<double, 2> x(1, 16);
  for (pnn::index v = 0; v < 16; ++v) x[v] = double(v);
  typename decltype(net)::Trace trace;
  const auto y = net.forward(x.view(), trace);
  const double expected[] = {2.5, 4.5, 10.5, 12.5};
  for (pnn::index i = 0; i < 4; ++i) CHECK(y[i] == doctest::Approx(expected[i]));
  Tensor<double, 2> dy({1, 4}, {4, 8, 12, 16}), dx(1, 16);
  net.backward(dy.view(), dx.view(), trace);
  for (pnn::index h = 0; h < 4; ++h)
    for (pnn::index w = 0; w < 4; ++w) CHECK(dx[h * 4 + w] == doctest::Approx(dy[(h / 2) * 2 + w / 2] / 4));

  // Overlapping windows add up: with stride 1, the centre of a 3x3 map is in all four 2x2 windows.
  BasicSequential<double, cpu, Input<1, 3, 3>, AvgPool2D<2, 1>> overlapping;
  Tensor<double, 2> ones(1, 9), dy4({1, 4}, {1, 1, 1, 1}), dx9(1, 9);
  typename decltype(overlapping)::Trace overlap_trace;
  overlapping.forward(ones.view(), overlap_trace);
  overlapping.backward(dy4.view(), dx9.view(), overlap_trace);
  const double coverage[] = {1, 2, 1, 2, 4, 2, 1, 2, 1};
  for (pnn::index i = 0; i < 9; ++i) CHECK(dx9[i] == doctest::Approx(coverage[i] / 4));
}

TEST_CASE("conv_pool.states_are_per_pass") {
  // Two passes in flight through the same layers (as pipeline micro-batches are): each backward must use
  // its own pass's maxima and columns, not the latest forward's.
  using Net = BasicSequential<double, cpu, Input<2, 6, 6>, Conv2D<3, 3, Pad<1>>, MaxPool2D<2>>;
  Net net(4);
  Tensor<double, 2> first(2, 72), second(2, 72), dy(2, 27), dx_interleaved(2, 72), dx_alone(2, 72);
  fill_uniform(first, 1);
  fill_uniform(second, 2);
  fill_uniform(dy, 3);
  Net::Trace trace_first, trace_second;
  net.forward(first.view(), trace_first);
  net.forward(second.view(), trace_second);
  net.zero_grad();
  net.backward(dy.view(), dx_interleaved.view(), trace_first);
  Tensor<double, 1> gradients_interleaved = net.parameter_gradients();

  Net::Trace trace_alone;
  net.forward(first.view(), trace_alone);
  net.zero_grad();
  net.backward(dy.view(), dx_alone.view(), trace_alone);
  for (pnn::index i = 0; i < dx_alone.size(); ++i) REQUIRE(dx_interleaved[i] == dx_alone[i]);
  for (pnn::index i = 0; i < gradients_interleaved.size(); ++i)
    REQUIRE(gradients_interleaved[i] == net.parameter_gradients()[i]);
}

TEST_CASE("kernels.reject_mismatched_shapes") {
  const auto geometry = ConvolutionGeometry::make(2, 5, 5, 3, 1, 1);
  CHECK(geometry.fits());
  CHECK(geometry.output_height == 5);
  CHECK_FALSE(ConvolutionGeometry::make(2, 5, 5, 8, 1, 1).fits());  // kernel larger than the padded input
  Tensor<float, 2> input(2, 50), columns(2 * 25, 18), too_few_rows(25, 18), wrong_input(2, 49);
  CHECK_NOTHROW(im2col<float>(input.view(), geometry, columns.view()));
  CHECK_THROWS_AS(im2col<float>(input.view(), geometry, too_few_rows.view()), ShapeError);
  CHECK_THROWS_AS(im2col<float>(wrong_input.view(), geometry, columns.view()), ShapeError);
  CHECK_THROWS_AS(col2im<float>(columns.view(), geometry, wrong_input.view()), ShapeError);
  CHECK_THROWS_AS(im2col<float>(input.view(), ConvolutionGeometry::make(2, 5, 5, 8, 1, 1), columns.view()), ShapeError);
  const auto pooling = ConvolutionGeometry::make(2, 5, 5, 2, 2, 0);
  Tensor<float, 2> pooled(2, 8);
  Tensor<SampleOffset, 2> argmax(2, 8), wrong_argmax(2, 7);
  CHECK_NOTHROW(max_pool_forward<float>(input.view(), pooling, pooled.view(), argmax.view()));
  CHECK_THROWS_AS(max_pool_forward<float>(input.view(), pooling, pooled.view(), wrong_argmax.view()), ShapeError);
  CHECK_THROWS_AS(avg_pool_forward<float>(input.view(), geometry, columns.view()), ShapeError);  // padded pooling
}
