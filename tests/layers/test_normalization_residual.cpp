// BatchNorm, Dropout and Residual against finite differences, hand-computed values and PyTorch's formulas.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <pnn/layers/batch_norm.hpp>
#include <pnn/layers/dropout.hpp>
#include <pnn/layers/residual.hpp>
#include <string>
#include <utility>
#include <vector>

#include "support/gradient_check.hpp"

using namespace pnn;

namespace {
// The parameter or buffer of a model with this name.
template <class Model>
TensorView<typename Model::value_type, 1> parameter(Model& model, const std::string& name) {
  for (const auto& p : model.parameters())
    if (p.name() == name) return p.value;
  FAIL("no parameter named " << name);
  return {};
}

std::vector<std::string> parameter_names(const auto& model) {
  std::vector<std::string> names;
  for (const auto& p : model.parameters()) names.push_back(p.name());
  return names;
}

// Per column c of a (rows, columns) table, the mean and the biased variance: the hand computation.
struct ColumnStatistics {
  std::vector<double> mean, variance;
};
ColumnStatistics column_statistics(const std::vector<std::vector<double>>& table) {
  const std::size_t columns = table[0].size();
  const double rows = static_cast<double>(table.size());
  ColumnStatistics s{std::vector<double>(columns, 0), std::vector<double>(columns, 0)};
  for (const auto& row : table)
    for (std::size_t c = 0; c < columns; ++c) s.mean[c] += row[c] / rows;
  for (const auto& row : table)
    for (std::size_t c = 0; c < columns; ++c) s.variance[c] += (row[c] - s.mean[c]) * (row[c] - s.mean[c]) / rows;
  return s;
}
}  // namespace

// ----- BatchNorm -----------------------------------------------------------------------------------------

TEST_CASE("batch_norm.gradients") {
  SUBCASE("training: batch statistics") {
    testing::check_layer<BatchNorm<>, Shape<5>>({.batch = 4});
    testing::check_layer<BatchNorm<>, Shape<3, 2, 2>>({.batch = 4});
    testing::check_layer<BatchNorm<>, Shape<2, 3, 1>>({.batch = 1});  // one sample, three values per channel
  }
  SUBCASE("inference: running statistics") {
    testing::check_layer<BatchNorm<>, Shape<5>>({.batch = 4, .training = false});
    testing::check_layer<BatchNorm<>, Shape<3, 2, 2>>({.batch = 4, .training = false});
  }
  SUBCASE("between other layers, so weight and bias are not at their initial values' symmetry") {
    testing::check_gradients<BasicSequential<double, cpu, Input<4>, Dense<5>, BatchNorm<>, Tanh, Dense<3>>>(
        {.batch = 5});
  }
}

TEST_CASE("batch_norm.forward_matches_hand_computation") {
  SUBCASE("Shape<N>: per feature over the batch") {
    BasicSequential<double, cpu, Input<2>, BatchNorm<>> net;
    parameter(net, "0.weight")[0] = 2;
    parameter(net, "0.weight")[1] = 0.5;
    parameter(net, "0.bias")[0] = 1;
    parameter(net, "0.bias")[1] = -1;
    const std::vector<std::vector<double>> table{{1, 10}, {2, 20}, {4, 60}};
    Tensor<double, 2> x({3, 2}, {1, 10, 2, 20, 4, 60});
    const auto y = net.forward(x.view());
    const auto s = column_statistics(table);
    const double weight[2] = {2, 0.5}, bias[2] = {1, -1};
    for (int i = 0; i < 3; ++i)
      for (int c = 0; c < 2; ++c)
        CHECK(y(i, c) ==
              doctest::Approx((table[i][c] - s.mean[c]) / std::sqrt(s.variance[c] + 1e-5) * weight[c] + bias[c]));
    // Normalised features have mean 0 and (biased) variance 1 before the affine part.
    CHECK(s.mean[1] == doctest::Approx(30));
  }
  SUBCASE("Shape<C, H, W>: per channel over the batch and the positions") {
    // Two channels, 1x2 positions; a sample row is stored (h, w, c): p0c0 p0c1 p1c0 p1c1.
    BasicSequential<double, cpu, Input<2, 1, 2>, BatchNorm<>> net;
    Tensor<double, 2> x({2, 4}, {1, -1, 3, -2, 5, 0, 7, -5});
    const auto y = net.forward(x.view());
    // Channel 0 holds 1, 3, 5, 7 and channel 1 holds -1, -2, 0, -5.
    const auto s = column_statistics({{1, -1}, {3, -2}, {5, 0}, {7, -5}});
    CHECK(s.mean[0] == doctest::Approx(4));
    CHECK(s.variance[0] == doctest::Approx(5));
    for (int i = 0; i < 2; ++i)
      for (int position = 0; position < 2; ++position)
        for (int c = 0; c < 2; ++c) {
          const int column = position * 2 + c;
          CHECK(y(i, column) == doctest::Approx((x(i, column) - s.mean[c]) / std::sqrt(s.variance[c] + 1e-5)));
        }
  }
}

TEST_CASE("batch_norm.running_statistics_follow_pytorch") {
  BasicSequential<double, cpu, Input<2>, BatchNorm<>> net;
  const std::vector<std::vector<double>> first{{1, 10}, {2, 20}, {4, 60}}, second{{-1, 3}, {0, 3.5}, {2, 0}, {1, 1}};
  Tensor<double, 2> x1({3, 2}, {1, 10, 2, 20, 4, 60}), x2({4, 2}, {-1, 3, 0, 3.5, 2, 0, 1, 1});
  net.forward(x1.view());
  net.forward(x2.view());
  const auto a = column_statistics(first), b = column_statistics(second);
  // PyTorch: running = (1 - momentum) * running + momentum * batch, with the unbiased variance.
  const auto running_mean = parameter(net, "0.running_mean"), running_var = parameter(net, "0.running_var");
  for (int c = 0; c < 2; ++c) {
    const double mean = 0.9 * (0.9 * 0 + 0.1 * a.mean[c]) + 0.1 * b.mean[c];
    const double var = 0.9 * (0.9 * 1 + 0.1 * a.variance[c] * 3 / 2) + 0.1 * b.variance[c] * 4 / 3;
    CHECK(running_mean[c] == doctest::Approx(mean).epsilon(1e-12));
    CHECK(running_var[c] == doctest::Approx(var).epsilon(1e-12));
  }
  // The same numbers worked out by hand (numpy: var(ddof=1)), independent of column_statistics above.
  CHECK(running_mean[0] == doctest::Approx(0.26));
  CHECK(running_mean[1] == doctest::Approx(2.8875));
  CHECK(running_var[0] == doctest::Approx(1.18666667));
  CHECK(running_var[1] == doctest::Approx(64.08291667));

  SUBCASE("inference uses the running statistics and leaves them unchanged") {
    parameter(net, "0.weight")[1] = 3;
    parameter(net, "0.bias")[0] = 0.25;
    const double mean[2] = {running_mean[0], running_mean[1]}, var[2] = {running_var[0], running_var[1]};
    Tensor<double, 2> x({1, 2}, {0.5, -4});  // a batch of one: no batch statistics could be taken
    const auto y = net.predict(x.view());
    CHECK(y(0, 0) == doctest::Approx((0.5 - mean[0]) / std::sqrt(var[0] + 1e-5) + 0.25));
    CHECK(y(0, 1) == doctest::Approx((-4 - mean[1]) / std::sqrt(var[1] + 1e-5) * 3));
    CHECK(running_mean[0] == mean[0]);
    CHECK(running_var[1] == var[1]);
  }
  SUBCASE("Momentum and Epsilon options") {
    BasicSequential<double, cpu, Input<2>, BatchNorm<Epsilon<1, 10>, Momentum<1, 2>>> half;
    half.forward(x1.view());
    CHECK(parameter(half, "0.running_mean")[0] == doctest::Approx(0.5 * a.mean[0]));
    CHECK(parameter(half, "0.running_var")[1] == doctest::Approx(0.5 + 0.5 * a.variance[1] * 3 / 2));
    const auto y = half.forward(x1.view());
    CHECK(y(0, 0) == doctest::Approx((1 - a.mean[0]) / std::sqrt(a.variance[0] + 0.1)));
  }
}

TEST_CASE("batch_norm.declarations_and_errors") {
  BasicSequential<float, cpu, Input<3, 4, 4>, BatchNorm<>> net;
  CHECK(parameter_names(net) ==
        std::vector<std::string>{"0.weight", "0.bias", "0.running_mean", "0.running_var", "0.num_batches_tracked"});
  for (const auto& p : net.parameters()) {
    const bool count = p.name() == "0.num_batches_tracked";
    CHECK(p.declaration.shape == (count ? std::vector<pnn::index>{} : std::vector<pnn::index>{3}));
    CHECK(p.declaration.file.count == count);
    CHECK(p.trainable() == (p.name() == "0.weight" || p.name() == "0.bias"));
  }
  CHECK(net.parameter_count() == 6);
  CHECK(parameter(net, "0.weight")[2] == 1);
  CHECK(parameter(net, "0.running_var")[0] == 1);
  CHECK(BatchNorm<>::name() == "BatchNorm<>");
  CHECK(BatchNorm<Momentum<1, 100>>::name() == "BatchNorm<Momentum<1, 100>>");
  CHECK(BatchNorm<Momentum<1, 100>, Epsilon<1, 1000>>::name() == "BatchNorm<Momentum<1, 100>, Epsilon<1, 1000>>");
  BasicSequential<float, cpu, Input<3>, BatchNorm<>> vector_net;
  Tensor<float, 2> one_sample(1, 3);
  CHECK_THROWS_WITH_AS(vector_net.forward(one_sample.view()), doctest::Contains("more than one value per channel"),
                       ShapeError);
  CHECK_NOTHROW(vector_net.predict(one_sample.view()));
}

// ----- Dropout -------------------------------------------------------------------------------------------

TEST_CASE("dropout.gradients") {
  // The checker replays the same dropout stream for every evaluation, so the mask is fixed.
  testing::check_layer<Dropout<50>, Shape<10>>({.batch = 4});
  testing::check_layer<Dropout<50>, Shape<10>>({.batch = 4, .training = false});
  testing::check_gradients<BasicSequential<double, cpu, Input<6>, Dense<8>, Dropout<30>, Tanh, Dense<3>>>();
}

TEST_CASE("dropout.rate_and_scaling") {
  BasicSequential<float, cpu, Input<1000>, Dropout<30>> net(11);
  Tensor<float, 2> ones(100, 1000);
  ones = ones * 0.0f + 1.0f;
  const auto y = net.forward(ones.view());
  pnn::index dropped = 0, scaled = 0;
  for (pnn::index i = 0; i < y.size(); ++i) {
    dropped += y[i] == 0.0f;
    scaled += y[i] == doctest::Approx(1 / 0.7);
  }
  CHECK(dropped + scaled == y.size());  // every value is either dropped or scaled by 1 / (1 - p)
  CHECK(static_cast<double>(dropped) / static_cast<double>(y.size()) == doctest::Approx(0.3).epsilon(0.03));
  CHECK(static_cast<double>(sum(y)) / static_cast<double>(y.size()) == doctest::Approx(1.0).epsilon(0.015));
}

TEST_CASE("dropout.backward_uses_the_forward_mask") {
  BasicSequential<double, cpu, Input<50>, Dropout<40>> net(3);
  typename decltype(net)::Trace trace;
  Tensor<double, 2> x(8, 50), dy(8, 50), dx(8, 50);
  for (pnn::index i = 0; i < x.size(); ++i) {
    x[i] = 1 + static_cast<double>(i % 7);
    dy[i] = static_cast<double>(i % 5) - 2;
  }
  const auto y = net.forward(x.view(), trace);
  net.backward(dy.view(), dx.view(), trace);
  for (pnn::index i = 0; i < x.size(); ++i) CHECK(dx[i] == doctest::Approx(dy[i] * y[i] / x[i]));
}

TEST_CASE("dropout.inference_and_zero_rate_are_identity") {
  BasicSequential<float, cpu, Input<20>, Dropout<50>> net(5);
  BasicSequential<float, cpu, Input<20>, Dropout<0>> no_dropout(5);
  Tensor<float, 2> x(4, 20);
  for (pnn::index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) - 30.5f;
  const auto predicted = net.predict(x.view());
  const auto kept = no_dropout.forward(x.view(), /*training=*/true);
  for (pnn::index i = 0; i < x.size(); ++i) {
    CHECK(predicted[i] == x[i]);
    CHECK(kept[i] == x[i]);
  }
  CHECK(Dropout<50>::name() == "Dropout<50>");
  CHECK(net.parameters().empty());
}

TEST_CASE("dropout.same_seed_same_mask") {
  using Net = BasicSequential<float, cpu, Input<64>, Dropout<50>>;
  Tensor<float, 2> x(16, 64);
  x = x * 0.0f + 1.0f;
  auto mask = [&](Net& net) {
    const auto y = net.forward(x.view());
    return std::vector<float>(y.data(), y.data() + y.size());
  };
  Net a(9), b(9), c(10);
  const auto first = mask(a);
  CHECK(first == mask(b));
  CHECK(first != mask(c));
  CHECK(first != mask(a));  // the stream moves on: the next batch gets a new mask
}

TEST_CASE("dropout.a_sample_is_dropped_alike_wherever_it_is_computed") {
  // Rows 4..7 of a step's batch get the same masks whether the whole batch or only they are computed
  // (another rank, another micro-batch), in every dropout layer, the one inside a residual block too; a
  // different step or another place in the batch draws anew.
  using Net = BasicSequential<float, cpu, Input<64>, Dropout<50>, Residual<Dropout<40>>, Dropout<30>>;
  Net whole(9), part(9);
  Tensor<float, 2> x(8, 64);
  x = x * 0.0f + 1.0f;
  typename Net::Trace whole_trace, part_trace;
  const auto all = whole.forward(x.view(), whole_trace, true, PassKey{.step = 5, .first_sample = 0});
  const auto rows = part.forward(x.view().rows(4, 4), part_trace, true, PassKey{.step = 5, .first_sample = 4});
  for (pnn::index i = 0; i < rows.size(); ++i) REQUIRE(rows[i] == all[4 * 64 + i]);
  const std::vector<float> masks(all.data(), all.data() + all.size());
  const auto next_step = part.forward(x.view().rows(4, 4), part_trace, true, PassKey{.step = 6, .first_sample = 4});
  CHECK(!std::equal(next_step.data(), next_step.data() + next_step.size(), masks.begin() + 4 * 64));
  const auto moved = part.forward(x.view().rows(4, 4), part_trace, true, PassKey{.step = 5, .first_sample = 0});
  CHECK(!std::equal(moved.data(), moved.data() + moved.size(), masks.begin() + 4 * 64));
  // Each layer has streams of its own: the body's layer 0 is not the model's layer 0.
  using Single = BasicSequential<float, cpu, Input<64>, Dropout<50>>;
  Single single(9);
  const auto first_layer_only = single.forward(x.view(), true);
  Net first_of_three(9);
  typename Net::Trace trace;
  first_of_three.forward(x.view(), trace, true, PassKey{});
  const auto& first_mask = std::get<0>(trace.states).mask;
  CHECK(std::equal(first_layer_only.data(), first_layer_only.data() + first_layer_only.size(), first_mask.data()));
  const auto& body_mask = std::get<0>(std::get<1>(trace.states).body.states).mask;
  CHECK(!std::equal(body_mask.data(), body_mask.data() + body_mask.size(), first_mask.data()));
}

// ----- Residual ------------------------------------------------------------------------------------------

TEST_CASE("residual.gradients") {
  testing::check_layer<Residual<Dense<6>, Tanh, Dense<6>>, Shape<6>>();
  testing::check_layer<Residual<Shortcut<Dense<4>>, Dense<5>, Tanh, Dense<4>>, Shape<6>>();
  // Batch statistics and dropout inside both paths, on (C, H, W) samples.
  testing::check_layer<Residual<Shortcut<BatchNorm<>, Tanh>, BatchNorm<>, Dropout<25>, Tanh>, Shape<2, 2, 3>>(
      {.batch = 3});
}

TEST_CASE("residual.model_gradients") {
  testing::check_gradients<
      BasicSequential<double, cpu, Input<6>, Dense<6>, Residual<Dense<6>, ReLU, Dense<6>>, Tanh, Dense<3>>>();
  // As the first layer: the checker asks for the model's input gradient, then for none.
  testing::check_gradients<BasicSequential<double, cpu, Input<6>, Residual<Dense<6>, Tanh, Dense<6>>, Dense<3>>>();
  testing::check_gradients<
      BasicSequential<double, cpu, Input<6>, Residual<Shortcut<Dense<4>>, Dense<4>>, Tanh, Dense<3>>>();
}

TEST_CASE("residual.names") {
  using Net = BasicSequential<double, cpu, Input<6>, Dense<6>, Residual<Dense<6>, ReLU, Dense<6>>, Tanh,
                              Residual<Shortcut<Dense<4>>, Dense<5>, Tanh, Dense<4>>>;
  Net net;
  CHECK(parameter_names(net) == std::vector<std::string>{"0.weight", "0.bias", "1.body.0.weight", "1.body.0.bias",
                                                         "1.body.2.weight", "1.body.2.bias", "3.body.0.weight",
                                                         "3.body.0.bias", "3.body.2.weight", "3.body.2.bias",
                                                         "3.shortcut.0.weight", "3.shortcut.0.bias"});
  CHECK(parameter(net, "3.body.2.weight").size() == 4 * 5);
  CHECK(parameter(net, "3.shortcut.0.weight").size() == 4 * 6);
  using Plain = Net::Stack::layer_type<1>;
  using Projected = Net::Stack::layer_type<3>;
  CHECK(Plain::name() == "Residual<Dense<6>, ReLU, Dense<6>>");
  CHECK(Projected::name() == "Residual<Shortcut<Dense<4>>, Dense<5>, Tanh, Dense<4>>");
  CHECK(Net::summary().find("Residual<Dense<6>, ReLU, Dense<6>>  -> (6,)") != std::string::npos);
  // The parameters of a block count as its layer's for gradient hooks and buckets.
  CHECK(net.layer_gradient_ranges()[1].second > net.layer_gradient_ranges()[1].first);
  CHECK(net.layer_gradient_ranges()[2] == std::pair<pnn::index, pnn::index>{0, 0});
}

TEST_CASE("residual.forward_adds_the_shortcut") {
  BasicSequential<double, cpu, Input<3>, Residual<Dense<3>>> identity_block(4);
  BasicSequential<double, cpu, Input<3>, Residual<Shortcut<Dense<2>>, Dense<2>>> projected_block(4);
  BasicSequential<double, cpu, Input<3>, Dense<3>> body(4);
  BasicSequential<double, cpu, Input<3>, Dense<2>> first(4), second(4);
  copy(TensorView<const double, 1>(parameter(identity_block, "0.body.0.weight")), parameter(body, "0.weight"));
  parameter(identity_block, "0.body.0.bias")[1] = 0.75;
  parameter(body, "0.bias")[1] = 0.75;
  copy(TensorView<const double, 1>(parameter(projected_block, "0.body.0.weight")), parameter(first, "0.weight"));
  copy(TensorView<const double, 1>(parameter(projected_block, "0.shortcut.0.weight")), parameter(second, "0.weight"));
  Tensor<double, 2> x({2, 3}, {1, -2, 0.5, 3, 0.25, -1});
  const auto y = identity_block.forward(x.view());
  const auto f = body.forward(x.view());
  for (pnn::index i = 0; i < x.size(); ++i) CHECK(y[i] == doctest::Approx(f[i] + x[i]));
  const auto z = projected_block.forward(x.view());
  const auto f1 = first.forward(x.view()), s = second.forward(x.view());
  REQUIRE(z.dim(1) == 2);
  for (pnn::index i = 0; i < z.size(); ++i) CHECK(z[i] == doctest::Approx(f1[i] + s[i]));
}

TEST_CASE("residual.first_layer_in_train_step") {
  // train_step asks for no input gradient: the block must still produce every parameter gradient, equal
  // to those of a backward pass that does compute dx.
  using Net = BasicSequential<double, cpu, Input<5>,
                              Residual<Shortcut<Dense<4>>, Dense<4>, BatchNorm<>, Tanh, Dense<4>>, Tanh, Dense<2>>;
  Net trained(21);
  Net reference = trained;
  Tensor<double, 2> x(8, 5), target(8, 2);
  Generator random(5);
  for (pnn::index i = 0; i < x.size(); ++i) x[i] = random.uniform<double>(-1, 1);
  for (pnn::index i = 0; i < target.size(); ++i) target[i] = random.uniform<double>(-0.5, 0.5);

  Optimizer<SGD, double> optimizer({.learning_rate = 0.1});
  const double first_loss = train_step(trained, x.view(), target.view(), optimizer, MeanSquaredError{});

  typename Net::Trace trace;
  reference.zero_grad();
  const auto output = reference.forward(x.view(), trace);
  Tensor<double, 2> output_gradient(output.shape()), dx(8, 5);
  CHECK(MeanSquaredError{}(output, std::as_const(target).view(), output_gradient.view()) ==
        doctest::Approx(first_loss));
  reference.backward(output_gradient.view(), dx.view(), trace);
  const auto expected = reference.parameter_gradients(), actual = trained.parameter_gradients();
  for (pnn::index i = 0; i < expected.size(); ++i) CHECK(actual[i] == doctest::Approx(expected[i]).epsilon(1e-12));
  CHECK(norm(expected) > 0);

  double loss = first_loss;
  for (int step = 0; step < 30; ++step)
    loss = train_step(trained, x.view(), target.view(), optimizer, MeanSquaredError{});
  CHECK(std::isfinite(loss));
  CHECK(loss < 0.5 * first_loss);
}
