// Sequential: compile-time shapes, parameter storage and naming, copies, and the backward contract.
#include <doctest/doctest.h>

#include "support/gradient_check.hpp"

using namespace pnn;

namespace {
// A layer that records whether backward was asked for its input gradient.
struct InputGradientSpy {
  static inline int requested = 0, skipped = 0;
  template <class T, class D, class In>
  class layer : public WithoutParameters {
   public:
    using value_type = T;
    using device = D;
    using input_shape = In;
    using output_shape = In;
    struct State {};
    static std::string name() { return "InputGradientSpy"; }
    void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const { y = x; }
    void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                  TensorView<T, 2, D> dx, State&, const Context&) const {
      if (dx) {
        ++requested;
        dx = dy;
      } else {
        ++skipped;
      }
    }
  };
};
}  // namespace

TEST_CASE("sequential.shapes_are_inferred_at_compile_time") {
  using Net = Sequential<Input<3, 4, 5>, Flatten, Dense<7>, ReLU, Dense<2>>;
  static_assert(std::is_same_v<Net::input_shape, Shape<3, 4, 5>>);
  static_assert(std::is_same_v<Net::output_shape, Shape<2>>);
  static_assert(std::is_same_v<Net::Stack::layer_type<0>::output_shape, Shape<60>>);
  static_assert(Net::layer_count == 4);
  static_assert(std::is_same_v<Net::with_scalar<double>::value_type, double>);
  CHECK(Net::summary().find("Dense<7>") != std::string::npos);
}

TEST_CASE("sequential.parameters_live_in_one_aligned_buffer") {
  using Net = Sequential<Input<5>, Dense<3>, ReLU, Dense<2>>;
  Net net(1);
  const auto params = net.parameters();
  REQUIRE(params.size() == 4);
  CHECK(params[0].name() == "0.weight");
  CHECK(params[1].name() == "0.bias");
  CHECK(params[2].name() == "2.weight");
  CHECK(params[3].name() == "2.bias");
  CHECK(net.parameter_count() == 5 * 3 + 3 + 3 * 2 + 2);
  for (const auto& p : params) {
    CHECK(p.value.data() >= net.parameter_values().data());
    CHECK(p.value.data() + p.value.size() <= net.parameter_values().data() + net.parameter_values().size());
    CHECK(reinterpret_cast<std::uintptr_t>(p.value.data()) % 64 == 0);
    CHECK(p.gradient.data() - net.parameter_gradients().data() == p.value.data() - net.parameter_values().data());
  }
  // He initialisation for weights, zeros for biases, different seeds differ.
  CHECK(sum(abs(params[0].value)) > 0);
  CHECK(sum(abs(params[1].value)) == 0);
  Net other(2);
  CHECK(other.parameters()[0].value[0] != params[0].value[0]);
}

TEST_CASE("sequential.layer_offset_gives_the_same_names_and_values") {
  using Whole = Sequential<Input<4>, Dense<6>, Tanh, Dense<3>>;
  using Tail = Sequential<Input<6>, Tanh, Dense<3>>;  // layers 1..2 of Whole
  Whole whole(9);
  Tail tail(9, 1);
  CHECK(tail.parameters()[0].name() == "2.weight");
  const auto a = whole.parameters()[2].value;
  const auto b = tail.parameters()[0].value;
  REQUIRE(a.size() == b.size());
  for (pnn::index i = 0; i < a.size(); ++i) REQUIRE(a[i] == b[i]);
}

TEST_CASE("sequential.parameters_know_the_layer_that_declared_them") {
  // A slice numbered from layer 3, with blocks whose inner stacks number their own layers from 0: every
  // parameter belongs to the model's layer its name starts with, and each layer's gradient range covers
  // exactly its parameters (the data-parallel buckets and gradient hooks rely on it).
  using Slice = Sequential<Input<6>, Dense<6>, Residual<Dense<6>, ReLU, Dense<6>>, Tanh,
                           Residual<Shortcut<Dense<4>>, Dense<5>, Tanh, Dense<4>>, Dense<2>>;
  Slice slice(5, 3);
  for (const auto& p : slice.parameters()) {
    CAPTURE(p.name());
    CHECK(p.declaration.layer == std::stoul(p.name().substr(0, p.name().find('.'))));
  }
  const auto& ranges = slice.layer_gradient_ranges();
  REQUIRE(ranges.size() == 5);
  CHECK(ranges[2] == std::pair<pnn::index, pnn::index>{0, 0});  // Tanh
  for (std::size_t layer = 0; layer < ranges.size(); ++layer) {
    pnn::index first = -1, last = -1;
    for (const auto& p : slice.parameters()) {
      if (p.declaration.layer != layer + 3) continue;
      const pnn::index begin = p.gradient.data() - slice.parameter_gradients().data();
      if (first < 0) first = begin;
      last = begin + p.gradient.size();
    }
    CAPTURE(layer);
    if (first < 0) continue;
    CHECK(ranges[layer].first == first);
    CHECK(ranges[layer].second >= last);
    CHECK(ranges[layer].second - last < 16);  // only the alignment padding after the layer's last parameter
  }
}

TEST_CASE("sequential.copies_are_deep_and_moves_keep_views_valid") {
  using Net = Sequential<Input<3>, Dense<2>>;
  Net a(1);
  Net b = a;
  b.parameters()[0].value[0] += 1;
  CHECK(a.parameters()[0].value[0] + 1 == b.parameters()[0].value[0]);
  Tensor<float, 2> x({1, 3}, {1, 2, 3});
  const float before = a.forward(x.view())(0, 0);
  Net moved = std::move(a);
  CHECK(moved.forward(x.view())(0, 0) == before);
  b = moved;
  CHECK(b.forward(x.view())(0, 0) == before);
}

TEST_CASE("sequential.first_layer_does_not_compute_an_input_gradient") {
  using Net = Sequential<Input<4>, InputGradientSpy, Dense<3>, InputGradientSpy, Dense<2>>;
  Net net(1);
  Tensor<float, 2> x(2, 4);
  Tensor<std::int32_t, 1> labels({2}, {0, 1});
  Optimizer<SGD> optimizer;
  InputGradientSpy::requested = InputGradientSpy::skipped = 0;
  train_step(net, x.view(), labels.view(), optimizer, SoftmaxCrossEntropy{});
  CHECK(InputGradientSpy::skipped == 1);    // the first layer
  CHECK(InputGradientSpy::requested == 1);  // the inner one
}

TEST_CASE("sequential.rejects_inputs_of_the_wrong_width") {
  Sequential<Input<4>, Dense<2>> net;
  Tensor<float, 2> x(3, 5);
  CHECK_THROWS_WITH_AS(net.forward(x.view()), doctest::Contains("5 features per sample"), ShapeError);
}

TEST_CASE("sequential.gradient_hook_reports_layers_in_reverse_order") {
  using Net = Sequential<Input<3>, Dense<4>, ReLU, Dense<2>>;
  Net net;
  Net::Trace trace;
  Tensor<float, 2> x(2, 3), dy(2, 2);
  net.forward(x.view(), trace);
  std::vector<std::size_t> order;
  net.backward(dy.view(), TensorView<float, 2>{}, trace, [&](std::size_t layer) { order.push_back(layer); });
  CHECK(order == std::vector<std::size_t>{2, 1, 0});
}
