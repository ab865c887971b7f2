// bench/layer_times.cpp: where a training step of an example model spends its time, layer by layer.
//
//   build/bench/layer_times cnn [--threads 2] [--batch 64] [--repetitions 50]
//
// Runs one training pass of the model (examples/models.hpp) on synthetic data to fill its trace, then times
// each layer's forward and backward on its real inputs (the activations the layers before it made), in
// the order a step runs them, and a whole train_step (SGD with momentum, softmax cross-entropy) for
// comparison: the step's time minus the layers' is the loss, the optimiser and what joins them. Prints one
// row per layer with the median milliseconds of each pass, the matrix-product work of convolutions and
// dense layers and the rate it ran at, and the totals. The first layer's backward computes no input
// gradient, as in training.
#include <pnn/cpu/simd.hpp>  // Eigen, under the warning fix that must precede it
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <pnn/pnn.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../examples/models.hpp"

namespace {

struct Options {
  pnn::index batch = 64;
  int threads = 1;
  int repetitions = 50;
};

template <class Body>
double median_ms(int repetitions, Body&& body) {
  std::vector<double> times;
  body();  // untimed: buffers grow to size
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Multiply-adds of one forward pass of a layer over `batch` samples, where the layer is one matrix product
// (a convolution: positions x patch x filters per sample; a dense layer: inputs x outputs); 0 otherwise.
template <class L>
double forward_multiply_adds(pnn::index batch) {
  const std::string name = L::name();
  if constexpr (requires { L::positions, L::patch; })
    return static_cast<double>(batch) * L::positions * L::patch * L::output_shape::dims[0];
  if (name.rfind("Dense", 0) == 0) return static_cast<double>(batch) * L::input_shape::size * L::output_shape::size;
  return 0;
}

template <class Model>
int run(const Options& options) {
  using T = float;
  using Stack = typename Model::Stack;
  Model model(1);
  pnn::Generator random(7);
  pnn::Tensor<T, 2> inputs(options.batch, Model::input_shape::size);
  for (pnn::index i = 0; i < inputs.size(); ++i) inputs[i] = random.uniform<T>(0, 1);
  pnn::Tensor<std::int32_t, 1> labels(pnn::Extents<1>{options.batch});
  for (pnn::index i = 0; i < options.batch; ++i) labels[i] = static_cast<std::int32_t>(random.below(10));
  const pnn::TensorView<const T, 2> x(inputs.view());

  auto& trace = model.trace();
  model.forward(x, trace, true, pnn::PassKey{});
  const pnn::Context context;  // a training pass over a whole batch

  struct Row {
    std::string name, shape;
    double forward_ms, backward_ms, multiply_adds;
  };
  std::vector<Row> rows;
  auto time_layer = [&]<std::size_t I>(std::integral_constant<std::size_t, I>) {
    using L = typename Stack::template layer_type<I>;
    auto& layer = std::get<I>(model.layers().layers());
    auto& state = std::get<I>(trace.states);
    const pnn::TensorView<const T, 2> in =
        I == 0 ? trace.input : pnn::TensorView<const T, 2>(trace.outputs[I - 1].view());
    const pnn::TensorView<T, 2> out = trace.outputs[I].view();
    pnn::Tensor<T, 2> dy(options.batch, L::output_shape::size), dx_buffer;
    for (pnn::index i = 0; i < dy.size(); ++i) dy[i] = random.uniform<T>(-1e-3f, 1e-3f);
    if (I > 0) dx_buffer = pnn::Tensor<T, 2>(options.batch, L::input_shape::size);
    const pnn::TensorView<T, 2> dx = I > 0 ? dx_buffer.view() : pnn::TensorView<T, 2>{};
    const pnn::Context layer_context = context.nested(I);
    const double forward = median_ms(options.repetitions, [&] { layer.forward(in, out, state, layer_context); });
    const double backward = median_ms(options.repetitions, [&] {
      layer.backward(in, pnn::TensorView<const T, 2>(out), pnn::TensorView<const T, 2>(dy.view()), dx, state,
                     layer_context);
    });
    rows.push_back({L::name(), pnn::format_shape<typename L::output_shape>(), forward, backward,
                    forward_multiply_adds<L>(options.batch)});
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (time_layer(std::integral_constant<std::size_t, I>{}), ...);
  }(std::make_index_sequence<Stack::layer_count>{});

  pnn::Optimizer<pnn::SGD> optimizer({.learning_rate = 0.01, .momentum = 0.9});
  const double step = median_ms(options.repetitions, [&] {
    pnn::train_step(model, x, pnn::TensorView<const std::int32_t, 1>(labels.view()), optimizer,
                    pnn::SoftmaxCrossEntropy{});
  });

  const double whole_forward = median_ms(options.repetitions, [&] { model.forward(x, trace, true, pnn::PassKey{}); });
  trace.output_gradient.resize(trace.output().shape());
  const double whole_backward = median_ms(options.repetitions, [&] {
    model.backward(pnn::TensorView<const T, 2>(trace.output_gradient.view()), pnn::TensorView<T, 2>{}, trace);
  });
  const double update = median_ms(options.repetitions, [&] { optimizer.step(model.parameters()); });
  std::printf("model.forward %.3f ms, model.backward %.3f ms, optimizer.step %.3f ms\n", whole_forward, whole_backward,
              update);
  std::printf("%-3s %-58s %-14s %10s %10s %9s %9s\n", "#", "layer", "output", "fwd ms", "bwd ms", "GFLOP", "GFLOP/s");
  double forward_total = 0, backward_total = 0, flops_total = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    // A backward pass is two products of the forward's size (weights and input), one for the first layer.
    const double flops = 2 * row.multiply_adds * (i == 0 ? 2 : 3);
    std::string name = row.name.size() > 58 ? row.name.substr(0, 55) + "..." : row.name;
    if (flops > 0)
      std::printf("%-3zu %-58s %-14s %10.3f %10.3f %9.4f %9.1f\n", i, name.c_str(), row.shape.c_str(), row.forward_ms,
                  row.backward_ms, flops * 1e-9, flops * 1e-6 / (row.forward_ms + row.backward_ms));
    else
      std::printf("%-3zu %-58s %-14s %10.3f %10.3f %9s %9s\n", i, name.c_str(), row.shape.c_str(), row.forward_ms,
                  row.backward_ms, "-", "-");
    forward_total += row.forward_ms;
    backward_total += row.backward_ms;
    flops_total += flops;
  }
  std::printf("layers: forward %.3f ms, backward %.3f ms, together %.3f ms; products %.3f GFLOP\n", forward_total,
              backward_total, forward_total + backward_total, flops_total * 1e-9);
  std::printf("train_step: %.3f ms (loss, optimiser and the rest: %.3f ms); batch %ld, %d thread(s), %s\n", step,
              step - forward_total - backward_total, static_cast<long>(options.batch), options.threads,
              pnn::cpu_gemm::kernel_name());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string model;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "layer_times: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      char* end = nullptr;
      const long parsed = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || parsed < 1) {
        std::fprintf(stderr, "layer_times: %s needs a positive integer, not '%s'\n", arg.c_str(), argv[i]);
        std::exit(2);
      }
      return parsed;
    };
    if (arg == "--threads") options.threads = static_cast<int>(value());
    else if (arg == "--batch") options.batch = value();
    else if (arg == "--repetitions") options.repetitions = static_cast<int>(value());
    else if (model.empty() && arg[0] != '-') model = arg;
    else {
      std::fprintf(stderr, "usage: layer_times mlp|cnn|resnet [--threads N] [--batch N] [--repetitions N]\n");
      return 2;
    }
  }
  Eigen::setNbThreads(options.threads);
#if defined(_OPENMP)
  omp_set_num_threads(options.threads);
#endif
  if (model == "mlp") return run<examples::Mlp>(options);
  if (model == "cnn") return run<examples::Cnn>(options);
  if (model == "resnet") return run<examples::ResNet>(options);
  std::fprintf(stderr, "usage: layer_times mlp|cnn|resnet [--threads N] [--batch N] [--repetitions N]\n");
  return 2;
}
