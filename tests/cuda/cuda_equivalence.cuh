// The equivalence check of tests/dist/equivalence.hpp for models on pnn::cuda: training with a parallel
// strategy must give the weights and losses that serial training on the GPU gives, within a relative 1e-5.
#pragma once

#include <pnn/dist.hpp>
#include <vector>

#include "cuda_testing.cuh"
#include "dist/equivalence.hpp"

namespace pnn::testing {

using CudaMlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>::on<cuda>;  // 5 layers

struct DeviceData {
  Tensor<float, 2, cuda> inputs;
  Tensor<std::int32_t, 1, cuda> labels;
};

inline DeviceData device_data(pnn::index samples, pnn::index features, pnn::index classes) {
  const SyntheticData host = synthetic_data(samples, features, classes);
  return {to_device(host.inputs), to_device(host.labels)};
}

// max |a - b| / max |a| over each parameter tensor, read back from the device.
template <class Model>
double device_relative_difference(const Model& a, const Model& b) {
  double worst = 0;
  for (std::size_t k = 0; k < a.parameters().size(); ++k) {
    const auto x = to_host(a.parameters()[k].value), y = to_host(b.parameters()[k].value);
    worst = std::max(worst, scaled_difference(const_view(x), const_view(y)));
  }
  return worst;
}

template <class Strategy, class Model = CudaMlp>
void check_cuda_equivalence(const DistributedOptions& options, pnn::index batch = 10, pnn::index steps = 4,
                            pnn::index samples = 37) {
  const DeviceData data = device_data(samples, Model::input_shape::size, Model::output_shape::size);
  Model serial(11);
  Optimizer<SGD, float, cuda> serial_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  const auto serial_losses = train(serial, serial_optimizer, data, batch, steps);

  Distributed<Model, Strategy> parallel(11, options);
  Optimizer<SGD, float, cuda> parallel_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  const auto parallel_losses = train(parallel, parallel_optimizer, data, batch, steps);
  const Model gathered = parallel.gathered();

  CHECK(device_relative_difference(Model(11), serial) > 1e-3);  // the weights moved
  const double difference = device_relative_difference(serial, gathered);
  INFO("relative weight difference to serial training on the GPU: " << difference);
  CHECK(difference <= 1e-5);
  for (std::size_t s = 0; s < serial_losses.size(); ++s)
    CHECK(parallel_losses[s] == doctest::Approx(serial_losses[s]).epsilon(1e-5));

  // Predictions through every rank equal the gathered model's.
  const auto expected = to_host(Model(gathered).predict(data.inputs.view()));
  const auto actual = to_host(parallel.predict(data.inputs.view()));
  CHECK(scaled_difference(const_view(expected), const_view(actual)) <= 1e-5);
}

}  // namespace pnn::testing
