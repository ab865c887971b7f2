// bench/step_time.cpp: the time of one training step of the example MLP and CNN, serial and data
// parallel (Local threads), on synthetic batches. It uses only the public API that has not changed, so
// bench/exact_cost.sh compiles this one file against two pnn trees (today's and a baseline commit's)
// and compares them side by side.
//
//   step_time MODEL STRATEGY WORKERS STEPS     e.g. step_time cnn data_parallel 2 100
// prints one line: the median milliseconds per step over STEPS timed steps (after 10 untimed ones).
#include <pnn/cpu/simd.hpp>  // Eigen, under the warning fix that must precede it
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {
using Mlp = pnn::Sequential<pnn::Input<784>, pnn::Dense<256>, pnn::ReLU, pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;
using Cnn = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>,
                            pnn::Conv2D<32, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>, pnn::Flatten,
                            pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;
constexpr pnn::index batch = 64;

template <class Model>
double median_step_ms(Model& model, pnn::index steps) {
  constexpr pnn::index features = Mlp::input_shape::size;
  pnn::Tensor<float, 2> inputs(batch, features);
  pnn::Tensor<std::int32_t, 1> labels(pnn::Extents<1>{batch});
  pnn::Generator random(1);
  for (pnn::index i = 0; i < inputs.size(); ++i) inputs[i] = random.uniform<float>(0, 1);
  for (pnn::index i = 0; i < batch; ++i) labels[i] = static_cast<std::int32_t>(random.below(10));
  pnn::Optimizer<pnn::SGD> optimizer({.learning_rate = 0.01, .momentum = 0.9});
  std::vector<double> times;
  for (pnn::index s = 0; s < steps + 10; ++s) {
    const auto start = std::chrono::steady_clock::now();
    pnn::train_step(model, pnn::TensorView<const float, 2>(inputs.view()),
                    pnn::TensorView<const std::int32_t, 1>(labels.view()), optimizer, pnn::SoftmaxCrossEntropy{});
    const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
    if (s >= 10) times.push_back(elapsed.count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

template <class Net>
double run(const std::string& strategy, int workers, pnn::index steps) {
  if (strategy == "serial") {
    Net model(1);
    return median_step_ms(model, steps);
  }
  pnn::Distributed<Net, pnn::DataParallel<pnn::Local>> model(1, {.ranks = workers});
  return median_step_ms(model, steps);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: step_time mlp|cnn serial|data_parallel WORKERS STEPS\n");
    return 2;
  }
  const std::string model = argv[1], strategy = argv[2];
  const int workers = std::atoi(argv[3]);
  const pnn::index steps = std::atoi(argv[4]);
  Eigen::setNbThreads(1);
#if defined(_OPENMP)
  omp_set_num_threads(1);
#endif
  const double ms = model == "mlp" ? run<Mlp>(strategy, workers, steps) : run<Cnn>(strategy, workers, steps);
  std::printf("%.4f\n", ms);
}
