// bench/gpu/step_time.cu: the training step time of pnn's example MLP and CNN on the GPU, at each batch
// size, three ways, printing one JSON line per (model, batch, mode):
//
//   eager       pnn::train_step(model, ...): every kernel launched from the host, and the loss returned to the
//               host (one synchronisation per step), as fit() trains
//   uncaptured  CudaGraphStep::run_uncaptured(): the same kernels launched from the host, loss left on the
//               device, no synchronisation
//   graph       CudaGraphStep::run(): the step captured once into a CUDA graph, one launch per step (the
//               batch's copy into the step's buffers included)
//
// and, per (model, batch), a "check" line: the weights after a few steps of graph replays (and of the
// uncaptured path) against model.train_step's from the same seed and batches, which must agree, and how
// often the graph was captured (once). bench/gpu/compare.py judges both.
//
//   build-gpu/step_time [--models mlp,cnn] [--batches 64,512] [--modes eager,uncaptured,graph]
//                       [--steps 200] [--warmup 20] [--check-steps 5] [--tf32]
//
// Data: synthetic, the same for every mode: --staged batches of uniform [0, 1) pixels and uniform labels
// in [0, 10), copied to the device before timing; step i trains on batch i mod staged. SGD lr 0.05,
// momentum 0.9, softmax cross-entropy, as bench/gpu/pytorch_gpu.py. Times are per step: the median of
// CUDA-event intervals (median_ms), and the host clock over all timed steps (wall_ms).
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pnn/cuda/cuda.hpp"
#include "pnn/cuda/graph.cuh"

#include "common.cuh"

namespace {

using Mlp = pnn::Sequential<pnn::Input<784>, pnn::Dense<256>, pnn::ReLU, pnn::Dense<128>, pnn::ReLU,
                            pnn::Dense<10>>::on<pnn::cuda>;
using Cnn = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>,
                            pnn::Conv2D<32, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>, pnn::Flatten,
                            pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>::on<pnn::cuda>;

using Images = pnn::TensorView<const float, 2, pnn::cuda>;
using Labels = pnn::TensorView<const std::int32_t, 1, pnn::cuda>;
constexpr std::uint64_t seed = 1;
const pnn::SGD sgd{.learning_rate = 0.05, .momentum = 0.9};

// Batches of synthetic data on the device.
struct Staged {
  std::vector<pnn::Tensor<float, 2, pnn::cuda>> images;
  std::vector<pnn::Tensor<std::int32_t, 1, pnn::cuda>> labels;
  Images x(long i) const { return images[static_cast<std::size_t>(i) % images.size()].view(); }
  Labels y(long i) const { return labels[static_cast<std::size_t>(i) % labels.size()].view(); }
};

Staged stage(pnn::index batch, pnn::index features, long count) {
  Staged staged;
  pnn::Generator random(seed);
  for (long b = 0; b < count; ++b) {
    pnn::Tensor<float, 2, pnn::cpu> x(pnn::Extents<2>{batch, features});
    pnn::Tensor<std::int32_t, 1, pnn::cpu> y(pnn::Extents<1>{batch});
    for (pnn::index i = 0; i < x.size(); ++i) x[i] = random.uniform<float>();
    for (pnn::index i = 0; i < batch; ++i) y[i] = static_cast<std::int32_t>(random.below(10));
    staged.images.emplace_back(pnn::Extents<2>{batch, features});
    staged.labels.emplace_back(pnn::Extents<1>{batch});
    pnn::copy(pnn::TensorView<const float, 2, pnn::cpu>(x.view()), staged.images.back().view());
    pnn::copy(pnn::TensorView<const std::int32_t, 1, pnn::cpu>(y.view()), staged.labels.back().view());
  }
  pnn::cuda_synchronize();
  return staged;
}

template <class Model>
std::vector<float> host_weights(const Model& model) {
  pnn::Tensor<float, 1, pnn::cpu> host(pnn::Extents<1>{model.parameter_values().size()});
  pnn::copy(model.parameter_values(), host.view());
  return {host.data(), host.data() + host.size()};
}

// The largest |a[i] - b[i]|; a NaN on either side counts as infinitely far (std::max would drop it).
double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double most = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double difference = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    most = std::max(most, std::isnan(difference) ? INFINITY : difference);
  }
  return most;
}

template <class Model>
void check(const char* name, pnn::index batch, const Staged& data, long steps) {
  Model eager_model(seed), graph_model(seed), uncaptured_model(seed);
  pnn::Optimizer<pnn::SGD, float, pnn::cuda> eager_optimizer(sgd), graph_optimizer(sgd), uncaptured_optimizer(sgd);
  pnn::CudaGraphStep graph(graph_model, graph_optimizer, batch);
  pnn::CudaGraphStep uncaptured(uncaptured_model, uncaptured_optimizer, batch);
  float eager_loss = 0;
  for (long i = 0; i < steps; ++i) {
    eager_loss = pnn::train_step(eager_model, data.x(i), data.y(i), eager_optimizer, pnn::SoftmaxCrossEntropy{});
    graph.run(data.x(i), data.y(i));
    pnn::copy(data.x(i), uncaptured.inputs());
    pnn::copy(data.y(i), uncaptured.targets());
    uncaptured.run_uncaptured();
  }
  const auto reference = host_weights(eager_model);
  bench::Json()
      .add("check", "graph_vs_eager")
      .add("framework", "pnn")
      .add("model", name)
      .add("batch", static_cast<long>(batch))
      .add("steps", steps)
      .add("loss_eager", static_cast<double>(eager_loss))
      .add("loss_graph", static_cast<double>(graph.loss()))
      .add("max_abs_difference_graph", max_difference(reference, host_weights(graph_model)))
      .add("max_abs_difference_uncaptured", max_difference(reference, host_weights(uncaptured_model)))
      .add("graph_nodes", graph.graph_nodes())
      .add("graph_captures", static_cast<long>(graph.captures()))
      .print();
}

template <class Model>
void time_mode(const char* name, pnn::index batch, const std::string& mode, const Staged& data, int warmup, int steps) {
  Model model(seed);
  pnn::Optimizer<pnn::SGD, float, pnn::cuda> optimizer(sgd);
  cudaStream_t stream = pnn::cuda_stream();
  bench::Json line;
  line.add("framework", "pnn").add("model", name).add("batch", static_cast<long>(batch)).add("mode", mode);
  float loss = 0;
  bench::Timing timing;
  if (mode == "eager") {
    timing = bench::time_calls(stream, warmup, steps, [&](int i) {
      loss = pnn::train_step(model, data.x(i), data.y(i), optimizer, pnn::SoftmaxCrossEntropy{});
    });
  } else if (mode == "graph" || mode == "uncaptured") {
    pnn::CudaGraphStep step(model, optimizer, batch);
    const bool graph = mode == "graph";
    // The first run() is eager and captures; the second is the first replay: both stay out of the timing.
    timing = bench::time_calls(stream, std::max(warmup, 2), steps, [&](int i) {
      if (graph) {
        step.run(data.x(i), data.y(i));
      } else {
        pnn::copy(data.x(i), step.inputs());
        pnn::copy(data.y(i), step.targets());
        step.run_uncaptured();
      }
    });
    loss = step.loss();
    line.add("graph_nodes", step.graph_nodes()).add("captures", static_cast<long>(step.captures()));
  } else {
    throw std::invalid_argument("unknown mode " + mode + ": eager, uncaptured or graph");
  }
  line.add("steps", timing.calls).add("", timing).add("final_loss", static_cast<double>(loss)).print();
}

template <class Model>
void run_model(const char* name, const bench::Arguments& arguments) {
  const int warmup = static_cast<int>(arguments.number("warmup"));
  const int steps = static_cast<int>(arguments.number("steps"));
  for (long batch : arguments.numbers("batches")) {
    const Staged data = stage(batch, Model::input_shape::size, arguments.number("staged"));
    for (const auto& mode : arguments.list("modes")) {
      try {
        time_mode<Model>(name, batch, mode, data, warmup, steps);
      } catch (const std::exception& error) {
        bench::Json()
            .add("framework", "pnn")
            .add("model", name)
            .add("batch", batch)
            .add("mode", mode)
            .add("error", error.what())
            .print();
      }
    }
    if (arguments.number("check-steps") > 0) {
      try {
        check<Model>(name, batch, data, arguments.number("check-steps"));
      } catch (const std::exception& error) {
        bench::Json()
            .add("check", "graph_vs_eager")
            .add("model", name)
            .add("batch", batch)
            .add("error", error.what())
            .print();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("step_time", [&] {
    const bench::Arguments arguments(argc, argv,
                                     {{"models", "mlp,cnn"},
                                      {"batches", "64,512"},
                                      {"modes", "eager,uncaptured,graph"},
                                      {"steps", "200"},
                                      {"warmup", "20"},
                                      {"staged", "8"},
                                      {"check-steps", "5"}},
                                     {"tf32"});
    bench::require_device();
    pnn::cuda_settings().allow_tf32 = arguments.flag("tf32");
    bench::Json()
        .add("program", "step_time")
        .add("device", bench::device_name())
        .add("description", pnn::cuda_description())
        .print();
    for (const auto& model : arguments.list("models")) {
      if (model == "mlp") run_model<Mlp>("mlp", arguments);
      else if (model == "cnn") run_model<Cnn>("cnn", arguments);
      else throw std::invalid_argument("unknown model " + model + ": mlp or cnn");
    }
  });
}
