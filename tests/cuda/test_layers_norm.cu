// Dropout, BatchNorm and Residual on cuda against the cpu: forward, input gradient, parameter gradients
// and running statistics, in training and in inference.
#include "layer_parity.cuh"

using namespace pnn;
using testing::check_layer_parity;
using testing::needs_gpu;

TEST_CASE("cuda.layers.dropout" * needs_gpu()) {
  // Both models draw their masks on the host from the same seed: the same units are dropped.
  check_layer_parity<Dropout<30>, Shape<50>>({.batch = 4, .tolerance = 0});
  check_layer_parity<Dropout<50>, Shape<3, 4, 4>>({.batch = 2, .tolerance = 0});
  check_layer_parity<Dropout<30>, Shape<50>>({.batch = 4, .training = false, .tolerance = 0});
}

// The statistics are sums of hundreds of values, added in chunks on the device and in order on the host.
TEST_CASE("cuda.layers.batch_norm" * needs_gpu()) {
  SUBCASE("training: batch statistics, running statistics updated") {
    check_layer_parity<BatchNorm<>, Shape<6>>({.batch = 8, .tolerance = 1e-4});
    check_layer_parity<BatchNorm<Momentum<1, 3>>, Shape<4, 3, 3>>({.batch = 5, .tolerance = 1e-4});
    check_layer_parity<BatchNorm<>, Shape<16, 6, 6>>({.batch = 20, .tolerance = 1e-4});  // 720 values a channel
  }
  SUBCASE("inference: running statistics") {
    check_layer_parity<BatchNorm<>, Shape<6>>({.batch = 8, .training = false, .tolerance = 1e-4, .warm_up = true});
    check_layer_parity<BatchNorm<Epsilon<1, 1000>>, Shape<4, 3, 3>>(
        {.batch = 5, .training = false, .tolerance = 1e-4, .warm_up = true});
  }
}

TEST_CASE("cuda.layers.residual" * needs_gpu()) {
  SUBCASE("identity shortcut") { check_layer_parity<Residual<Dense<8>, ReLU, Dense<8>>, Shape<8>>(); }
  SUBCASE("projection shortcut, as in a ResNet's downsampling block") {
    check_layer_parity<Residual<Shortcut<Conv2D<4, 1, Stride<2>>, BatchNorm<>>, Conv2D<4, 3, Pad<1>, Stride<2>>,
                                BatchNorm<>, ReLU, Conv2D<4, 3, Pad<1>>, BatchNorm<>>,
                       Shape<2, 6, 6>>({.batch = 4, .tolerance = 1e-4});
  }
}
