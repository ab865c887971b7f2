// bench/strategies.hpp: what the strategies benchmark (bench/strategies.cpp) shares between its
// translation units: the run options, and run<Model>(), which trains a serial or a Distributed model for
// a number of steps with pnn::fit and returns one JSON object with the times and every rank's statistics.
//
// Each model's strategies are instantiated in their own file (strategies_mlp.cpp, strategies_cnn.cpp,
// strategies_balanced.cpp) so the build compiles them in parallel.
#pragma once

#include <pnn/cpu/simd.hpp>  // Eigen, under the warning fix that must precede it
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include <pnn/data/dataset.hpp>
#include <pnn/dist.hpp>
#include <pnn/layers/activation.hpp>
#include <pnn/layers/conv2d.hpp>
#include <pnn/layers/dense.hpp>
#include <pnn/layers/flatten.hpp>
#include <pnn/layers/max_pool2d.hpp>
#include <pnn/layers/relu.hpp>
#include <pnn/model/sequential.hpp>
#include <pnn/optim/sgd.hpp>
#include <pnn/train/fit.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace bench {

struct RunOptions {
  std::string model;            // mlp, cnn, balanced
  std::string strategy;         // serial, data_parallel, model_parallel, pipeline
  int workers = 1;              // ranks (threads of this process, Local communicator)
  int threads = 1;              // matrix-product threads per rank
  pnn::index microbatches = 8;  // pipeline only
  pnn::index steps = 0;         // timed optimiser steps; 0: one epoch
  pnn::index warmup = 10;       // untimed steps first (allocations, page faults, thread start-up)
  pnn::index batch = 64;        // global batch
  bool overlap = true;          // data parallel: reduce buckets while backward runs
  pnn::index bucket_bytes = pnn::DistributedOptions{}.bucket_bytes;  // data parallel: gradient bucket size
  std::uint64_t seed = 1;
};

// The models, one per translation unit. Each returns run<...>() for the strategy the options name.
std::string run_mlp(const RunOptions& options, const pnn::Dataset& train);
std::string run_cnn(const RunOptions& options, const pnn::Dataset& train);
std::string run_balanced(const RunOptions& options, const pnn::Dataset& train);

inline void use_threads(int threads) {
  Eigen::setNbThreads(threads);
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
}

template <class Model>
inline constexpr bool is_distributed = requires { typename Model::strategy_type; };

// A minimal JSON object writer: keys in insertion order, numbers with full precision.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, const std::string& value) { return raw(key, "\"" + value + "\""); }
  JsonObject& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonObject& add(const std::string& key, double value) {
    std::ostringstream text;
    text << std::setprecision(10) << value;
    return raw(key, text.str());
  }
  JsonObject& add(const std::string& key, pnn::index value) { return raw(key, std::to_string(value)); }
  JsonObject& add(const std::string& key, int value) { return raw(key, std::to_string(value)); }
  JsonObject& add(const std::string& key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonObject& raw(const std::string& key, const std::string& json) {
    text_ += (text_.empty() ? "" : ", ") + ("\"" + key + "\": ") + json;
    return *this;
  }
  std::string str() const { return "{" + text_ + "}"; }

 private:
  std::string text_;
};

inline pnn::StrategyStatistics difference(const pnn::StrategyStatistics& after, const pnn::StrategyStatistics& before) {
  pnn::StrategyStatistics result;
  result.steps = after.steps - before.steps;
  result.step_seconds = after.step_seconds - before.step_seconds;
  result.compute_seconds = after.compute_seconds - before.compute_seconds;
  result.communication_seconds = after.communication_seconds - before.communication_seconds;
  result.exposed_seconds = after.exposed_seconds - before.exposed_seconds;
  result.bytes_communicated = after.bytes_communicated - before.bytes_communicated;
  return result;
}

// Trains Model (a Sequential, or a Distributed<Sequential, Strategy> on a Local group) on `train` with
// SGD (lr 0.05, momentum 0.9): `warmup` untimed steps, then `steps` timed ones (or one epoch) through
// pnn::fit, which times its loop including the batching, as the examples report it. The statistics are
// those of the timed steps only.
template <class Model>
std::string run(const RunOptions& options, const pnn::Dataset& train, const std::string& split = "") {
  use_threads(options.threads);
  auto model = [&] {
    if constexpr (is_distributed<Model>)
      return Model(options.seed,
                   {.ranks = options.workers, .bucket_bytes = options.bucket_bytes, .overlap = options.overlap});
    else return Model(options.seed);
  }();
  pnn::Optimizer<pnn::SGD> optimizer({.learning_rate = 0.05, .momentum = 0.9});
  pnn::FitOptions fit_options{
      .epochs = 1, .max_steps = options.warmup, .batch_size = options.batch, .seed = options.seed, .progress = nullptr};
  std::vector<pnn::StrategyStatistics> before;
  if (options.warmup > 0) pnn::fit(model, optimizer, train, nullptr, fit_options);
  if constexpr (is_distributed<Model>) before = model.statistics();

  fit_options.max_steps = options.steps;
  const std::vector<pnn::EpochMetrics> history = pnn::fit(model, optimizer, train, nullptr, fit_options);
  const pnn::EpochMetrics& timed = history.back();
  const pnn::index steps_per_epoch = (train.size() + options.batch - 1) / options.batch;
  const double seconds_per_step = timed.seconds / static_cast<double>(timed.steps);

  JsonObject result;
  result.add("model", options.model)
      .add("strategy", options.strategy)
      .add("workers", options.workers)
      .add("threads", options.threads)
      .add("batch", options.batch)
      .add("steps", timed.steps)
      .add("seconds", timed.seconds)
      .add("seconds_per_step", seconds_per_step)
      .add("steps_per_epoch", steps_per_epoch)
      .add("seconds_per_epoch", seconds_per_step * static_cast<double>(steps_per_epoch))
      .add("train_loss", timed.train_loss)
      .add("parameters", model.parameter_count());
  if (!split.empty()) result.raw("split", split);
  if constexpr (is_distributed<Model>) {
    using Strategy = typename Model::strategy_type;
    if constexpr (requires { Strategy::microbatches; }) {
      const double stages = static_cast<double>(model.ranks()), m = static_cast<double>(Strategy::microbatches);
      result.add("microbatches", Strategy::microbatches)
          .add("schedule", Strategy::schedule::name)
          .add("bubble_theory", (stages - 1) / (m + stages - 1));
    } else {
      result.add("overlap", options.overlap)
          .add("bucket_bytes", options.bucket_bytes)
          .add("buckets", model.strategy_rank(0).buckets());
    }
    const std::vector<pnn::StrategyStatistics> after = model.statistics();
    std::string ranks;
    for (std::size_t r = 0; r < after.size(); ++r) {
      const pnn::StrategyStatistics s = difference(after[r], before[r]);
      JsonObject rank;
      rank.add("rank", static_cast<int>(r))
          .add("steps", s.steps)
          .add("step_seconds", s.step_seconds)
          .add("compute_seconds", s.compute_seconds)
          .add("communication_seconds", s.communication_seconds)
          .add("exposed_seconds", s.exposed_seconds)
          .add("bytes_communicated", s.bytes_communicated)
          .add("hidden_fraction", s.hidden_fraction())
          .add("bubble_fraction", s.bubble_fraction());
      if constexpr (requires { model.strategy_rank(0).max_live_microbatches(); })
        rank.add("max_live_microbatches", model.strategy_rank(static_cast<int>(r)).max_live_microbatches());
      ranks += (ranks.empty() ? "" : ", ") + rank.str();
    }
    result.raw("ranks", "[" + ranks + "]");
  }
  return result.str();
}

}  // namespace bench
