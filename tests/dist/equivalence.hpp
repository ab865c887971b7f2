// Shared by the equivalence tests (Local in-process, and Mpi under mpirun): training a model with a
// parallel strategy must give the weights serial training gives, within a relative 1e-5.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>
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

// Trains serially and with Strategy from the same seed and batches; checks weights and losses agree.
template <class Model, class Strategy>
void check_equivalence(const DistributedOptions& options, index batch = 10, index steps = 4, index samples = 37) {
  const auto data = synthetic_data(samples, Model::input_shape::size, Model::output_shape::size);
  Model serial(11);
  Optimizer<SGD> serial_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  const auto serial_losses = train(serial, serial_optimizer, data, batch, steps);

  Distributed<Model, Strategy> parallel(11, options);
  Optimizer<SGD> parallel_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  const auto parallel_losses = train(parallel, parallel_optimizer, data, batch, steps);
  const Model gathered = parallel.gathered();

  // The weights moved: the comparison is not between two untouched initialisations.
  CHECK(relative_difference(Model(11), serial) > 1e-3);
  const double difference = relative_difference(serial, gathered);
  INFO("relative weight difference to serial training: " << difference);
  CHECK(difference <= 1e-5);
  for (std::size_t s = 0; s < serial_losses.size(); ++s)
    CHECK(parallel_losses[s] == doctest::Approx(serial_losses[s]).epsilon(1e-5));
}

}  // namespace pnn::testing
