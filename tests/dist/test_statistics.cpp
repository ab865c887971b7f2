// What the strategies measure (StrategyStatistics): the step timer's bookkeeping, and for each strategy
// the relations its times must keep and the bytes it must have moved.
#include <chrono>
#include <thread>

#include "equivalence.hpp"
#include "statistics.hpp"

using namespace pnn;
using namespace std::chrono_literals;

namespace {
using Mlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 5 layers
constexpr double slack = 1e-9;  // sums of differences of the host's clock
}  // namespace

TEST_CASE("statistics.step_timer_adds_a_step_once_it_ended") {
  StepTimer<cpu> timer;
  StrategyStatistics statistics;
  const auto start = timer.begin();
  std::this_thread::sleep_for(20ms);
  timer.add(&StrategyStatistics::compute_seconds, start, timer.mark());
  std::this_thread::sleep_for(10ms);
  timer.end(statistics);
  // Added at the next step's end or on settle(), not before: on a GPU it may still be running.
  CHECK(statistics.step_seconds == 0);
  CHECK(statistics.compute_seconds == 0);
  timer.settle(statistics);
  CHECK(statistics.compute_seconds >= 0.020);
  CHECK(statistics.step_seconds >= statistics.compute_seconds + 0.010);
  CHECK(statistics.communication_seconds == 0);
  CHECK(statistics.exposed_seconds == 0);

  const StrategyStatistics first = statistics;
  timer.settle(statistics);  // nothing new: not added twice
  CHECK(statistics.step_seconds == first.step_seconds);

  // A step that threw before its end: the next begin() drops its marks.
  const auto abandoned = timer.begin();
  std::this_thread::sleep_for(20ms);
  timer.add(&StrategyStatistics::exposed_seconds, abandoned, timer.mark());
  timer.begin();
  timer.end(statistics);
  timer.settle(statistics);
  CHECK(statistics.exposed_seconds == 0);
  CHECK(statistics.step_seconds - first.step_seconds < 0.020);
}

TEST_CASE("statistics.data_parallel") {
  const auto data = testing::synthetic_data(40, 12, 4);
  Optimizer<SGD> optimizer({.learning_rate = 0.1});
  // bucket_bytes = 1: one bucket per Dense layer, the first reduced while backward runs below it.
  Distributed<Mlp, DataParallel<Local>> model(1, {.ranks = 2, .bucket_bytes = 1});
  testing::train(model, optimizer, data, 10, 5);
  const auto statistics = model.statistics();
  REQUIRE(statistics.size() == 2);
  // The whole flat gradient buffer, each layer's part padded to a cache line, is reduced every step.
  const pnn::index gradient_bytes =
      model.strategy_rank(0).replica().parameter_gradients().size() * static_cast<pnn::index>(sizeof(float));
  CHECK(gradient_bytes >= Mlp(1).parameter_count() * static_cast<pnn::index>(sizeof(float)));
  for (const StrategyStatistics& s : statistics) {
    testing::check_data_parallel_statistics(s, 5, slack);
    CHECK(s.bytes_communicated == 5 * gradient_bytes);
  }
  // Reading them does not count anything twice.
  const auto again = model.statistics();
  CHECK(again[0].step_seconds == statistics[0].step_seconds);
  CHECK(again[1].compute_seconds == statistics[1].compute_seconds);
}

TEST_CASE("statistics.pipeline") {
  const auto data = testing::synthetic_data(40, 12, 4);
  Optimizer<SGD> optimizer({.learning_rate = 0.1});
  // Split<3>: stage 0 is Dense<10>, Tanh, Dense<8>, so 8 values per sample cross the cut each way.
  Distributed<Mlp, Pipeline<Split<3>, Microbatches<4>, OneFOneB>> model(1, {.ranks = 2});
  testing::train(model, optimizer, data, 10, 5);
  const auto statistics = model.statistics();
  REQUIRE(statistics.size() == 2);
  for (const StrategyStatistics& s : statistics) {
    testing::check_pipeline_statistics(s, 5, slack);
    CHECK(s.bytes_communicated == 5 * 2 * 10 * 8 * static_cast<pnn::index>(sizeof(float)));
  }
  // Predictions move activations too, but the statistics are the training steps'.
  (void)model.predict(data.inputs.view().rows(0, 10));
  testing::train(model, optimizer, data, 10, 1);
  for (const StrategyStatistics& s : model.statistics()) {
    CHECK(s.steps == 6);
    CHECK(s.bytes_communicated == 6 * 2 * 10 * 8 * static_cast<pnn::index>(sizeof(float)));
  }
}
