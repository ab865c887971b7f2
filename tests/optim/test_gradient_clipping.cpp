// Clipping by global norm (the update against one worked out by hand, the norm's order independent of
// where a tensor lies in memory) and the gradient accumulator (its sum, its order checks).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "pnn/core/random.hpp"
#include "pnn/optim/gradient_accumulation.hpp"
#include "pnn/optim/gradient_clipping.hpp"
#include "pnn/optim/sgd.hpp"

using namespace pnn;

TEST_CASE("clipping.sgd_step_with_a_clipped_gradient_equals_the_hand_computed_one") {
  // A weight of 4 and a bias of 2 with gradients (3, 0, 0, 4) and (0, 12): norm sqrt(9 + 16 + 144) = 13.
  Tensor<float, 1> weight(Extents<1>{4}), weight_gradient(Extents<1>{4}), bias(Extents<1>{2}),
      bias_gradient(Extents<1>{2});
  const float initial[] = {0.5f, -0.25f, 1.0f, 2.0f, 0.125f, -1.0f};
  const float gradients[] = {3, 0, 0, 4, 0, 12};
  auto set = [&] {
    for (pnn::index i = 0; i < 4; ++i) weight[i] = initial[i], weight_gradient[i] = gradients[i];
    for (pnn::index i = 0; i < 2; ++i) bias[i] = initial[4 + i], bias_gradient[i] = gradients[4 + i];
  };
  const std::vector<Parameter<float, cpu>> parameters{
      {{.name = "0.weight", .shape = {2, 2}}, weight.view(), weight_gradient.view()},
      {{.name = "0.bias", .shape = {2}}, bias.view(), bias_gradient.view()}};
  auto values = [&] {
    std::vector<float> v;
    for (pnn::index i = 0; i < 4; ++i) v.push_back(weight[i]);
    for (pnn::index i = 0; i < 2; ++i) v.push_back(bias[i]);
    return v;
  };

  for (const double clip : {1.0, 6.5, 13.5}) {
    CAPTURE(clip);
    set();
    Optimizer<SGD, float> optimizer({.learning_rate = 0.1});
    optimizer.clip_norm = clip;
    CHECK(global_norm(gradient_squares<float, cpu>(parameters)) == 13.0);
    optimizer.step(parameters);
    // torch.nn.utils.clip_grad_norm_: g * min(1, clip / (13 + 1e-6)), then w - lr g, each in float.
    const double factor = clip / (13.0 + 1e-6);
    std::vector<float> expected;
    for (int i = 0; i < 6; ++i) {
      const float g = factor < 1 ? gradients[i] * static_cast<float>(factor) : gradients[i];
      const float change = 0.1f * g;
      expected.push_back(initial[i] - change);
    }
    CHECK(values() == expected);
  }
  // A clipped step moves the weights less than an unclipped one, by the factor.
  set();
  Optimizer<SGD, float> optimizer({.learning_rate = 0.1});
  optimizer.clip_norm = 1.3;
  optimizer.step(parameters);
  CHECK(bias[1] == doctest::Approx(-1.0 - 0.1 * 12 * 0.1).epsilon(1e-6));

  optimizer.clip_norm = -1;
  CHECK_THROWS_WITH_AS(optimizer.step(parameters), doctest::Contains("clip_norm = -1"), ArgumentError);
  optimizer.clip_norm = NAN;
  CHECK_THROWS_WITH_AS(optimizer.step(parameters), doctest::Contains("clip_norm = nan"), ArgumentError);
}

TEST_CASE("clipping.a_tensor_norm_does_not_depend_on_where_it_lies") {
  // The same values at every offset of a buffer (every alignment): the same bits, and the sum of the
  // lanes of index modulo 8 added as the header says.
  const pnn::index n = 1003;
  std::vector<float> values(static_cast<std::size_t>(n));
  Generator random(5);
  for (auto& v : values) v = random.uniform<float>(-1, 1) * std::exp2(random.uniform<float>(-12, 12));
  double lanes[8] = {};
  for (pnn::index i = 0; i < n; ++i)
    lanes[i % 8] += static_cast<double>(values[static_cast<std::size_t>(i)]) *
                    static_cast<double>(values[static_cast<std::size_t>(i)]);
  const double expected =
      ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  Tensor<float, 1> buffer(Extents<1>{n + 16});
  for (pnn::index offset = 0; offset < 16; ++offset) {
    CAPTURE(offset);
    for (pnn::index i = 0; i < n; ++i) buffer[offset + i] = values[static_cast<std::size_t>(i)];
    CHECK(sum_of_squares(TensorView<const float, 1>(buffer.view().rows(offset, n))) == expected);
  }
}

TEST_CASE("accumulation.passes_add_up_in_the_tree_and_must_come_in_order") {
  // Four passes over rows [0, 2), [2, 3), [3, 6), [6, 8) of a batch of 8: (g0 + g1) + (g2 + g3).
  GradientAccumulator<double, cpu> accumulator;
  Tensor<double, 1> gradients(Extents<1>{2});
  const double passes[4][2] = {{0.1, 1}, {0.2, 1e16}, {0.3, -1e16}, {0.4, 1}};
  const BatchPart parts[4] = {{8, 0, 2}, {8, 2, 1}, {8, 3, 3}, {8, 6, 2}};
  for (int k = 0; k < 4; ++k) {
    gradients[0] = passes[k][0], gradients[1] = passes[k][1];
    CHECK(accumulator.add(parts[k], gradients.view()) == (k == 3));
  }
  CHECK(gradients[0] == (0.1 + 0.2) + (0.3 + 0.4));
  CHECK(gradients[1] == 0);  // (1 + 1e16) + (-1e16 + 1) in the tree's order; added one by one it is 1
  // The whole batch in one pass: the gradients as they are.
  gradients[0] = 7;
  CHECK(accumulator.add(BatchPart::whole(4), gradients.view()));
  CHECK(gradients[0] == 7);
  // Out of order: a gap, another batch, a first pass that does not start at row 0.
  CHECK_FALSE(accumulator.add({8, 0, 4}, gradients.view()));
  CHECK_THROWS_WITH_AS(accumulator.add({8, 5, 3}, gradients.view()),
                       doctest::Contains("the step's passes so far end at row 4 of a batch of 8"), ArgumentError);
  CHECK_THROWS_WITH_AS(accumulator.add({8, 4, 4}, gradients.view()), doctest::Contains("end at row 0"), ArgumentError);
  CHECK_FALSE(accumulator.add({8, 0, 4}, gradients.view()));
  CHECK_THROWS_WITH_AS(accumulator.add({9, 4, 5}, gradients.view()), doctest::Contains("of a batch of 8"),
                       ArgumentError);
  CHECK_THROWS_WITH_AS(accumulator.add({8, 0, 0}, gradients.view()), doctest::Contains("at least one row"),
                       ArgumentError);
}
