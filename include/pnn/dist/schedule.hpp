// pnn/dist/schedule.hpp: pipeline schedules as policies that produce their own order.
//
// A schedule is a type with a name and a static order(stage, stages, microbatches): the passes stage
// `stage` of `stages` runs, in order, for one training step of `microbatches` micro-batches. Every
// micro-batch's forward pass must come before its backward pass on each stage. Pipeline<...> accepts any
// type satisfying PipelineSchedule, so an interleaved or zero-bubble schedule is one new struct here.
#pragma once

#include <algorithm>
#include <concepts>
#include <string>
#include <vector>

#include "pnn/core/config.hpp"

namespace pnn {

enum class Pass { forward, backward };
struct Operation {
  Pass pass;
  index microbatch;
};

template <class S>
concept PipelineSchedule = requires(int stage, int stages, index microbatches) {
  { S::name } -> std::convertible_to<std::string>;
  { S::order(stage, stages, microbatches) } -> std::same_as<std::vector<Operation>>;
};

// Fill-drain: every micro-batch forward, then every one backward; m micro-batches of activations alive.
struct GPipe {
  static constexpr const char* name = "GPipe";
  static std::vector<Operation> order(int, int, index microbatches) {
    std::vector<Operation> order;
    for (index j = 0; j < microbatches; ++j) order.push_back({Pass::forward, j});
    for (index j = microbatches; j-- > 0;) order.push_back({Pass::backward, j});
    return order;
  }
};
static_assert(PipelineSchedule<GPipe>);

// One forward, one backward: stage s runs (stages - s - 1) forwards to fill the pipe, then alternates;
// at most (stages - s) micro-batches of activations alive per stage.
struct OneFOneB {
  static constexpr const char* name = "1F1B";
  static std::vector<Operation> order(int stage, int stages, index microbatches) {
    std::vector<Operation> order;
    const index m = microbatches;
    const index warmup = std::min<index>(stages - stage - 1, m);
    for (index j = 0; j < warmup; ++j) order.push_back({Pass::forward, j});
    for (index j = 0; j < m - warmup; ++j) {
      order.push_back({Pass::forward, warmup + j});
      order.push_back({Pass::backward, j});
    }
    for (index j = m - warmup; j < m; ++j) order.push_back({Pass::backward, j});
    return order;
  }
};
static_assert(PipelineSchedule<OneFOneB>);

}  // namespace pnn
