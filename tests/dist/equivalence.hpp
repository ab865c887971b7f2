// Shared by the equivalence tests (Local in-process, and Mpi under mpirun): training a model with a
// parallel strategy must give the weights, buffers and losses serial training gives, bit for bit where the
// strategy's layout keeps the batch's chunks whole (docs/strategies.md, "Exactness").
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace pnn::testing {

struct SyntheticData {
  Tensor<float, 2> inputs;
  Tensor<std::int32_t, 1> labels;
};

// n samples of `features` inputs with labels in [0, classes): the same on every rank for a given seed.
inline SyntheticData synthetic_data(index n, index features, index classes, std::uint64_t seed = 3) {
  SyntheticData data{Tensor<float, 2>(n, features), Tensor<std::int32_t, 1>(Extents<1>{n})};
  Generator random(seed);
  for (index i = 0; i < data.inputs.size(); ++i) data.inputs[i] = random.uniform<float>(-1, 1);
  for (index i = 0; i < n; ++i)
    data.labels[i] = static_cast<std::int32_t>(random.below(static_cast<std::uint64_t>(classes)));
  return data;
}

// Trains with consecutive batches of `batch` rows (the last one shorter when n is not a multiple). Data
// is SyntheticData, or its twin on a device (tests/cuda/cuda_equivalence.cuh).
template <class Model, class OptimizerType, class Data>
std::vector<float> train(Model& model, OptimizerType& optimizer, const Data& data, index batch, index steps) {
  std::vector<float> losses;
  const index n = data.inputs.dim(0);
  index begin = 0;
  for (index s = 0; s < steps; ++s) {
    const index count = std::min(batch, n - begin);
    losses.push_back(train_step(model, data.inputs.view().rows(begin, count), data.labels.view().rows(begin, count),
                                optimizer, SoftmaxCrossEntropy{}));
    begin = begin + count >= n ? 0 : begin + count;
  }
  return losses;
}

// max |a - b| / max |a| over each parameter tensor.
template <class Model>
double relative_difference(const Model& a, const Model& b) {
  double worst = 0;
  for (std::size_t k = 0; k < a.parameters().size(); ++k) {
    const auto& x = a.parameters()[k].value;
    const auto& y = b.parameters()[k].value;
    double scale = 0, difference = 0;
    for (index i = 0; i < x.size(); ++i) {
      scale = std::max(scale, static_cast<double>(std::abs(x[i])));
      difference = std::max(difference, static_cast<double>(std::abs(x[i] - y[i])));
    }
    if (scale > 0) worst = std::max(worst, difference / scale);
  }
  return worst;
}

// max |a - b| / max |a| over all weights.
template <class Model>
double flat_relative_difference(const Model& a, const Model& b) {
  const auto x = a.parameter_values();
  const auto y = b.parameter_values();
  double scale = 0, difference = 0;
  for (index i = 0; i < x.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(x[i])));
    difference = std::max(difference, static_cast<double>(std::abs(x[i] - y[i])));
  }
  return difference / scale;
}

// How a strategy's training must compare with serial training's: bit for bit (the canonical batch sums,
// docs/strategies.md "Exactness") or, for layouts that cut the batch's chunks, to rounding.
enum class Expect { bitwise, close };

// The elements of two flat views that differ (`==`, so 0 and -0 agree), and the first one.
struct Differences {
  index count = 0;
  std::string first;
};
inline Differences differences(TensorView<const float, 1> a, TensorView<const float, 1> b, const std::string& what) {
  Differences d;
  REQUIRE(a.size() == b.size());
  for (index i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i]) && d.count++ == 0) d.first = detail::concat(what, "[", i, "]: ", a[i], " against ", b[i]);
  return d;
}

// The model's weights and buffers (running statistics) equal the other's, element for element.
template <class Model>
void check_same_values(const Model& expected, const Model& actual) {
  for (const auto& [what, a, b] : {std::tuple{"weights", TensorView<const float, 1>(expected.parameter_values()),
                                              TensorView<const float, 1>(actual.parameter_values())},
                                   std::tuple{"buffers", TensorView<const float, 1>(expected.buffer_values()),
                                              TensorView<const float, 1>(actual.buffer_values())}}) {
    const Differences d = differences(a, b, what);
    INFO(d.count << " of " << a.size() << " " << what << " differ; the first: " << d.first);
    CHECK(d.count == 0);
  }
}

// The rules the harness trains with: SGD with momentum and weight decay, Adam, LARS.
template <class Rule>
Rule equivalence_rule() {
  if constexpr (std::is_same_v<Rule, SGD>) return SGD{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 1e-3};
  else if constexpr (std::is_same_v<Rule, Adam>) return Adam{.learning_rate = 0.01, .weight_decay = 1e-3};
  else return LARS{.learning_rate = 0.5, .momentum = 0.9, .weight_decay = 1e-3};
}

// Trains serially and with Strategy from the same seed and batches (37 samples in batches of 10: the last
// one has 7); checks weights, buffers and losses: equal (Expect::bitwise) or within a relative 1e-5.
template <class Model, class Strategy, class Rule = SGD>
void check_equivalence(const DistributedOptions& options, Expect expect = Expect::bitwise, index batch = 10,
                       index steps = 4, index samples = 37) {
  CAPTURE(Rule::name());
  const auto data = synthetic_data(samples, Model::input_shape::size, Model::output_shape::size);
  Model serial(11);
  Optimizer<Rule> serial_optimizer(equivalence_rule<Rule>());
  const auto serial_losses = train(serial, serial_optimizer, data, batch, steps);

  Distributed<Model, Strategy> parallel(11, options);
  Optimizer<Rule> parallel_optimizer(equivalence_rule<Rule>());
  const auto parallel_losses = train(parallel, parallel_optimizer, data, batch, steps);
  const Model gathered = parallel.gathered();

  // The weights moved: the comparison is not between two untouched initialisations.
  CHECK(relative_difference(Model(11), serial) > 1e-3);
  if (expect == Expect::bitwise) {
    check_same_values(serial, gathered);
    for (std::size_t s = 0; s < serial_losses.size(); ++s) CHECK(parallel_losses[s] == serial_losses[s]);
  } else {
    // Relative to the model's largest weight, not each tensor's: the bias of a layer before BatchNorm has
    // a zero gradient up to rounding, so its values are rounding noise, different in every order.
    const double difference = flat_relative_difference(serial, gathered);
    INFO("relative weight difference to serial training: " << difference);
    CHECK(difference <= 1e-5);
    for (std::size_t s = 0; s < serial_losses.size(); ++s)
      CHECK(parallel_losses[s] == doctest::Approx(serial_losses[s]).epsilon(1e-5));
  }
}

}  // namespace pnn::testing
