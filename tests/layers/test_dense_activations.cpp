// Dense and the element-wise activations against finite differences and hand-computed values.
#include <doctest/doctest.h>

#include "support/gradient_check.hpp"

using namespace pnn;

TEST_CASE("dense.gradients") {
  testing::check_layer<Dense<5>, Shape<7>>();
  testing::check_layer<Dense<1>, Shape<2, 3>>({.batch = 1});
}

TEST_CASE("dense.forward_matches_definition") {
  using Net = BasicSequential<double, cpu, Input<3>, Dense<2>>;
  Net net(1);
  auto params = net.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].name() == "0.weight");
  CHECK(params[0].declaration.shape == std::vector<pnn::index>{2, 3});
  CHECK(params[1].name() == "0.bias");
  for (pnn::index i = 0; i < 6; ++i) params[0].value[i] = static_cast<double>(i + 1);  // W = [[1,2,3],[4,5,6]]
  params[1].value[0] = 0.5;
  params[1].value[1] = -1;
  Tensor<double, 2> x({2, 3}, {1, 0, -1, 2, 1, 0});
  auto y = net.forward(x.view());
  CHECK(y(0, 0) == doctest::Approx(1 - 3 + 0.5));
  CHECK(y(0, 1) == doctest::Approx(4 - 6 - 1));
  CHECK(y(1, 0) == doctest::Approx(2 + 2 + 0.5));
  CHECK(y(1, 1) == doctest::Approx(8 + 5 - 1));
}

TEST_CASE("activation.gradients") {
  testing::check_layer<ReLU, Shape<11>>();
  testing::check_layer<Tanh, Shape<11>>();
  testing::check_layer<Sigmoid, Shape<11>>();
  testing::check_layer<Flatten, Shape<2, 3, 4>>();
}

// Flatten gives PyTorch's (c, h, w) order of the channels-last (h, w, c) image, and its backward pass
// returns a gradient to the image's order.
TEST_CASE("flatten.orders_features_as_pytorch") {
  BasicSequential<double, cpu, Input<3, 2, 4>, Flatten> net;
  Tensor<double, 2> x(Extents<2>{2, 24});
  for (pnn::index s = 0; s < 2; ++s)
    for (pnn::index h = 0; h < 2; ++h)
      for (pnn::index w = 0; w < 4; ++w)
        for (pnn::index c = 0; c < 3; ++c)
          x(s, (h * 4 + w) * 3 + c) = static_cast<double>(1000 * s + 100 * c + 10 * h + w);
  const auto y = net.forward(x.view());
  for (pnn::index s = 0; s < 2; ++s)
    for (pnn::index c = 0; c < 3; ++c)
      for (pnn::index h = 0; h < 2; ++h)
        for (pnn::index w = 0; w < 4; ++w) CHECK(y(s, (c * 2 + h) * 4 + w) == 1000 * s + 100 * c + 10 * h + w);
  Flatten::layer<double, cpu, Shape<3, 2, 4>> flatten;
  Flatten::layer<double, cpu, Shape<3, 2, 4>>::State state;
  Tensor<double, 2> dx(Extents<2>{2, 24});
  flatten.backward(x.view(), y, y, dx.view(), state, Context{});
  for (pnn::index i = 0; i < x.size(); ++i) CHECK(dx.data()[i] == x.data()[i]);
}

TEST_CASE("activation.values") {
  BasicSequential<double, cpu, Input<4>, ReLU> relu_net;
  Tensor<double, 2> x({1, 4}, {-2, -0.5, 0.5, 3});
  auto y = relu_net.forward(x.view());
  CHECK(y(0, 0) == 0);
  CHECK(y(0, 3) == 3);
  BasicSequential<double, cpu, Input<4>, Sigmoid> sigmoid_net;
  CHECK(sigmoid_net.forward(x.view())(0, 2) == doctest::Approx(1 / (1 + std::exp(-0.5))));
  BasicSequential<double, cpu, Input<4>, Tanh> tanh_net;
  CHECK(tanh_net.forward(x.view())(0, 1) == doctest::Approx(std::tanh(-0.5)));
}

TEST_CASE("model.small_mlp_gradients") {
  testing::check_gradients<BasicSequential<double, cpu, Input<6>, Dense<5>, Tanh, Dense<4>, ReLU, Dense<3>>>();
}
