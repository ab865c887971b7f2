// CudaGraphStep (pnn/cuda/graph.cuh): a training step captured once and replayed must train exactly as the
// eager model.train_step does on the same device, and as the cpu does within rounding; it recaptures when
// the hyper-parameters change or the optimiser is reset, and refuses other shapes and bad labels.
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_testing.cuh"
#include "pnn/cuda/graph.cuh"

using namespace pnn;
using testing::check_close;
using testing::needs_gpu;
using testing::random_tensor;
using testing::to_device;

namespace {

using Mlp = Sequential<Input<20>, Dense<32>, ReLU, Dense<16>, Tanh, Dense<10>>;
// Convolution, batch normalisation (its running statistics are updated inside the graph) and both poolings.
using Cnn = Sequential<Input<2, 8, 8>, Conv2D<4, 3, Pad<1>>, BatchNorm<>, ReLU, MaxPool2D<2>, Conv2D<6, 3, Pad<1>>,
                       ReLU, AvgPool2D<2>, Flatten, Dense<10>>;
constexpr pnn::index batch = 24;

Tensor<std::int32_t, 1> random_labels(pnn::index n, std::uint64_t seed) {
  Tensor<std::int32_t, 1> labels(Extents<1>{n});
  Generator random(seed);
  for (pnn::index i = 0; i < n; ++i) labels[i] = static_cast<std::int32_t>(random.below(10));
  return labels;
}

// Batch i of a short synthetic stream, on the host.
template <class Net>
Tensor<float, 2> images(int i) {
  return random_tensor<float>(Extents<2>{batch, Net::input_shape::size}, 100 + static_cast<std::uint64_t>(i), 0, 1);
}

// Trains three copies from one seed for `steps` steps with the same batches and hyper-parameter schedule:
// on the cpu, eagerly on cuda, and through a CudaGraphStep (device batches on even steps, host batches on
// odd ones). `schedule(step, rule)` may change the rule before a step; `reset_at` resets every optimiser
// before that step. Checks that the graph trained as the eager cuda model (same kernels: 1e-5) and as the
// cpu (1e-4), that the weights moved, how often the step was captured, and that the other steps were
// replays: the optimiser steps on the host only in an eager step or a capture, so after the last capture
// it has counted `expected_host_steps` since its last reset.
template <class Net, class Schedule>
void check_graph_training(int steps, Schedule schedule, int reset_at, pnn::index expected_captures,
                          pnn::index expected_host_steps) {
  using DeviceNet = typename Net::template on<cuda>;
  Net host(3);
  DeviceNet eager(3), graphed(3);
  const SGD rule{.learning_rate = 0.05, .momentum = 0.9, .weight_decay = 1e-4};
  Optimizer<SGD> host_optimizer(rule);
  Optimizer<SGD, float, cuda> eager_optimizer(rule), graph_optimizer(rule);
  CudaGraphStep step(graphed, graph_optimizer, batch);
  float eager_loss = 0, host_loss = 0;
  for (int i = 0; i < steps; ++i) {
    CAPTURE(i);
    schedule(i, host_optimizer.rule);
    schedule(i, eager_optimizer.rule);
    schedule(i, graph_optimizer.rule);
    if (i == reset_at) {
      host_optimizer.reset();
      eager_optimizer.reset();
      graph_optimizer.reset();
    }
    const auto x = images<Net>(i);
    const auto y = random_labels(batch, 200 + static_cast<std::uint64_t>(i));
    const auto x_device = to_device(x);
    const auto y_device = to_device(y);
    host_loss = train_step(host, x.view(), y.view(), host_optimizer, SoftmaxCrossEntropy{});
    eager_loss = train_step(eager, x_device.view(), y_device.view(), eager_optimizer, SoftmaxCrossEntropy{});
    if (i % 2 == 0) step.run(testing::const_view(x_device), testing::const_view(y_device));
    else step.run(testing::const_view(x), testing::const_view(y));
    CHECK(step.loss() == doctest::Approx(eager_loss).epsilon(1e-5));
  }
  CHECK(eager_loss == doctest::Approx(host_loss).epsilon(1e-4));
  CHECK(step.steps() == steps);
  CHECK(step.captured());
  CHECK(step.captures() == expected_captures);
  CHECK(graph_optimizer.steps() == expected_host_steps);
  CHECK(step.graph_nodes() > 0);
  check_close("weights: graph against eager cuda", testing::to_host(eager.parameter_values()),
              graphed.parameter_values(), 1e-5);
  check_close("weights: graph against cpu", host.parameter_values(), graphed.parameter_values(), 1e-4);
  check_close("buffers: graph against cpu", host.buffer_values(), graphed.buffer_values(), 1e-4);
  CHECK(testing::scaled_difference(testing::const_view(Net(3).parameter_values()),
                                   testing::const_view(host.parameter_values())) > 1e-3);
}

constexpr auto same_rule = [](int, SGD&) {};

// Trains two cuda copies from one seed for `steps` steps on the same batches: one eagerly, the other through
// a CudaGraphStep except at step `eager_at`, where it too trains eagerly, on a batch of `eager_rows` rows
// (after resetting both optimisers if `reset`). The two must end with the same weights and buffers. With
// `canary_elements`, tensors of that size allocated after the eager step (so likely in the blocks it
// freed) must come through the next replay unchanged: a replay that writes freed memory alters them even
// without a sanitizer.
template <class Net>
void check_eager_step_between_replays(int steps, int eager_at, pnn::index eager_rows, bool reset,
                                      pnn::index expected_captures, pnn::index canary_elements = 0) {
  using DeviceNet = typename Net::template on<cuda>;
  DeviceNet eager(5), graphed(5);
  const SGD rule{.learning_rate = 0.05, .momentum = 0.9};
  Optimizer<SGD, float, cuda> eager_optimizer(rule), graph_optimizer(rule);
  CudaGraphStep step(graphed, graph_optimizer, batch);
  std::vector<Tensor<float, 1, cuda>> canaries;
  for (int i = 0; i < steps; ++i) {
    CAPTURE(i);
    const pnn::index rows = i == eager_at ? eager_rows : batch;
    const auto x = to_device(
        random_tensor<float>(Extents<2>{rows, Net::input_shape::size}, 300 + static_cast<std::uint64_t>(i), 0, 1));
    const auto y = to_device(random_labels(rows, 400 + static_cast<std::uint64_t>(i)));
    if (i == eager_at && reset) {
      eager_optimizer.reset();
      graph_optimizer.reset();
    }
    train_step(eager, testing::const_view(x), testing::const_view(y), eager_optimizer, SoftmaxCrossEntropy{});
    if (i == eager_at) {
      train_step(graphed, testing::const_view(x), testing::const_view(y), graph_optimizer, SoftmaxCrossEntropy{});
      for (int c = 0; canary_elements > 0 && c < 8; ++c) {
        canaries.emplace_back(Extents<1>{canary_elements});
        canaries.back().view() = canaries.back() + 7.0f;
      }
    } else {
      step.run(testing::const_view(x), testing::const_view(y));
      for (const auto& canary : canaries) {
        CHECK(minimum(canary) == 7.0f);
        CHECK(maximum(canary) == 7.0f);
      }
    }
  }
  CHECK(step.captures() == expected_captures);
  check_close("weights: graph against eager cuda", testing::to_host(eager.parameter_values()),
              graphed.parameter_values(), 1e-5);
  check_close("buffers: graph against eager cuda", testing::to_host(eager.buffer_values()), graphed.buffer_values(),
              1e-5);
}

// A layer that keeps a buffer it replaces on every forward pass (identity otherwise): what a captured
// step must refuse, since a replay would allocate the buffer anew each time.
struct ReplacesAKeptBuffer {
  template <class T, class D, class In>
  class layer : public WithoutParameters {
   public:
    using value_type = T;
    using device = D;
    using input_shape = In;
    using output_shape = In;
    struct State {};
    static std::string name() { return "ReplacesAKeptBuffer"; }
    void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) {
      kept_ = Tensor<T, 1, D>(Extents<1>{++passes_});
      y = x;
    }
    void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                  TensorView<T, 2, D> dx, State&, const Context&) const {
      if (dx) dx = dy;
    }

   private:
    Tensor<T, 1, D> kept_;
    pnn::index passes_ = 0;
  };
};

}  // namespace

TEST_CASE("cuda.graph.replays_train_as_eager_steps" * needs_gpu()) {
  // The first run() steps eagerly and captures: two host steps, then only replays.
  SUBCASE("mlp") { check_graph_training<Mlp>(7, same_rule, -1, 1, 2); }
  SUBCASE("cnn with batch normalisation") { check_graph_training<Cnn>(7, same_rule, -1, 1, 2); }
}

TEST_CASE("cuda.graph.recaptures_after_a_new_learning_rate_or_a_reset" * needs_gpu()) {
  // Step 3 halves the learning rate (captured again); step 5 resets the momentum, whose buffers the graph
  // held (stepped eagerly, then captured again).
  const auto halve_at_3 = [](int i, SGD& rule) {
    if (i == 3) rule.learning_rate /= 2;
  };
  check_graph_training<Mlp>(8, halve_at_3, 5, 3, 2);
}

TEST_CASE("cuda.graph.recaptures_after_a_reset_followed_by_eager_steps" * needs_gpu()) {
  // The model may train eagerly between replays; after a reset and such a step the optimiser has counted a
  // step again, but its momentum buffers are new: the graph must not replay onto the freed ones.
  check_eager_step_between_replays<Mlp>(8, 4, batch, /*reset=*/true, 2);
}

TEST_CASE("cuda.graph.eager_steps_with_a_larger_batch_between_replays" * needs_gpu()) {
  // The step's activations and gradient scratch are its own: an eager step with twice the batch, which
  // reallocates the model's own scratch, leaves the replays writing nothing freed (memcheck would say).
  // The canaries have the size of the old gradient scratch: the widest layer input after the first, 4x8x8.
  check_eager_step_between_replays<Cnn>(6, 3, 2 * batch, /*reset=*/false, 1, batch * 4 * 8 * 8);
}

TEST_CASE("cuda.graph.refuses_other_shapes_and_reports_bad_labels" * needs_gpu()) {
  using DeviceNet = Mlp::on<cuda>;
  DeviceNet model(4);
  Optimizer<SGD, float, cuda> optimizer({.learning_rate = 0.1});
  CudaGraphStep step(model, optimizer, batch);
  const auto x = images<Mlp>(0);
  auto y = random_labels(batch, 7);
  const auto short_x = random_tensor<float>(Extents<2>{batch - 1, Mlp::input_shape::size}, 8);
  const auto short_y = random_labels(batch - 1, 9);
  CHECK_THROWS_WITH_AS(step.run(testing::const_view(short_x), testing::const_view(short_y)),
                       doctest::Contains("a captured step has fixed shapes"), ShapeError);
  CHECK(step.steps() == 0);
  CHECK_THROWS_WITH_AS((void)step.loss(), doctest::Contains("no step has run yet"), ArgumentError);
  y[5] = 10;  // one past the last class
  step.run(testing::const_view(x), testing::const_view(y));
  CHECK_THROWS_WITH_AS((void)step.loss(), doctest::Contains("label 10 of sample 5 is outside [0, 10)"), ArgumentError);
  y[5] = 3;
  step.run(testing::const_view(x), testing::const_view(y));  // the first replay
  CHECK(std::isfinite(step.loss()));
  CHECK(CudaGraphStep(model, optimizer, batch).captured() == false);
  CHECK_THROWS_AS(CudaGraphStep(model, optimizer, 0), ArgumentError);
}

TEST_CASE("cuda.graph.refuses_a_step_that_keeps_memory_it_allocates" * needs_gpu()) {
  using Net = Sequential<Input<20>, Dense<16>, ReplacesAKeptBuffer, Dense<10>>::on<cuda>;
  Net model(8);
  Optimizer<SGD, float, cuda> optimizer({.learning_rate = 0.1});
  CudaGraphStep step(model, optimizer, batch);
  const auto x = images<Mlp>(0);
  const auto y = random_labels(batch, 9);
  CHECK_THROWS_WITH_AS(step.run(testing::const_view(x), testing::const_view(y)),
                       doctest::Contains("allocates 1 block(s) of device memory that outlive it and releases 1"),
                       CudaError);
  CHECK_FALSE(step.captured());
  CHECK(step.steps() == 1);  // the eager step before the capture
  // The failed capture left pnn's stream usable.
  Tensor<float, 1, cuda> ones(Extents<1>{1000});
  ones.view() = ones + 1.0f;
  CHECK(maximum(ones) == 1.0f);
  CHECK(sum(ones) == 1000.0f);
}
