// Dense, the convolutions, the poolings, the element-wise activations and Flatten on cuda against the cpu:
// forward, input gradient and parameter gradients.
#include "layer_parity.cuh"

using namespace pnn;
using testing::check_layer_parity;
using testing::needs_gpu;

TEST_CASE("cuda.layers.dense" * needs_gpu()) {
  check_layer_parity<Dense<7>, Shape<5>>();
  check_layer_parity<Dense<3>, Shape<2, 3, 3>>({.batch = 1});  // an image taken as a vector
  check_layer_parity<Dense<130>, Shape<70>>({.batch = 300});   // bias gradient over several row chunks
}

TEST_CASE("cuda.layers.conv2d" * needs_gpu()) {
  SUBCASE("3x3, no padding") { check_layer_parity<Conv2D<4, 3>, Shape<3, 7, 6>>(); }
  SUBCASE("stride 2 and padding 1") { check_layer_parity<Conv2D<5, 3, Pad<1>, Stride<2>>, Shape<2, 9, 7>>(); }
  SUBCASE("5x5 with padding 2 on one channel, as in the example CNN") {
    check_layer_parity<Conv2D<3, 5, Pad<2>>, Shape<1, 8, 8>>({.batch = 9});
  }
  SUBCASE("stride larger than the kernel") { check_layer_parity<Conv2D<2, 2, Stride<3>>, Shape<3, 8, 8>>(); }
  SUBCASE("many channels, the batch in several chunks of samples") {
    // 32x32 positions x 576 columns x 4 bytes = 2.25 MiB of columns per sample: 28 samples fill the 64 MiB
    // a chunk may take on the GPU, so 60 samples go in three chunks (the last one short). The weight
    // gradient sums 61440 products per element, so float rounding order shows above 1e-5.
    check_layer_parity<Conv2D<8, 3, Pad<1>>, Shape<64, 32, 32>>({.batch = 60, .tolerance = 1e-4});
  }
  SUBCASE("1x1") { check_layer_parity<Conv2D<6, 1>, Shape<4, 3, 3>>(); }
}

TEST_CASE("cuda.layers.max_pool2d" * needs_gpu()) {
  check_layer_parity<MaxPool2D<2>, Shape<3, 8, 8>>();
  check_layer_parity<MaxPool2D<3, 2>, Shape<2, 7, 7>>();  // overlapping windows: gradients accumulate
  check_layer_parity<MaxPool2D<2, 3>, Shape<2, 8, 8>>();  // gaps between windows get no gradient
  check_layer_parity<MaxPool2D<2>, Shape<3, 5, 5>>();     // the last row and column fall outside every window
}

TEST_CASE("cuda.layers.avg_pool2d" * needs_gpu()) {
  check_layer_parity<AvgPool2D<2>, Shape<3, 8, 8>>();
  check_layer_parity<AvgPool2D<3, 2>, Shape<2, 7, 7>>();
  check_layer_parity<AvgPool2D<2, 3>, Shape<2, 8, 8>>();
}

TEST_CASE("cuda.layers.activations_and_flatten" * needs_gpu()) {
  check_layer_parity<ReLU, Shape<37>>();
  check_layer_parity<Tanh, Shape<37>>();
  check_layer_parity<Sigmoid, Shape<37>>();
  check_layer_parity<ReLU, Shape<2, 5, 5>>({.batch = 3});
  check_layer_parity<Flatten, Shape<2, 3, 4>>();
}
