// pnn/optim/schedule.hpp: learning-rate schedules, functions of the optimiser's step count.
//
//   ConstantRate{}                                 the base rate at every step
//   StepDecay{.every = 1000, .gamma = 0.1}         base * gamma^floor(s / every)
//   CosineDecay{.steps = 5000, .floor = 1e-4}      from base down to floor along half a cosine over `steps`
//                                                  steps, then floor (PyTorch's CosineAnnealingLR, once)
//   LearningRateSchedule{.warmup_steps = 500, .decay = CosineDecay{...}}
//                                                  linear warm-up, base * (s + 1) / warmup_steps for the
//                                                  first warmup_steps steps, then the decay counted from
//                                                  the end of the warm-up
//   linearly_scaled_learning_rate(base, batch, base_batch)   the linear scaling rule for large batches
//                                                  (Goyal et al., 2017): base * batch / base_batch
//
// The rate of step s (counted from 0: Optimizer::steps() before the step) depends on s and the base rate
// alone, so it is the same under every strategy, and a run resumed from a checkpoint (which keeps the step
// count) continues the schedule where it stopped. fit() applies FitOptions::schedule: before each step it
// sets optimizer.rule.learning_rate to schedule.learning_rate(base, optimizer.steps()), with base the
// rule's rate when fit() was called, and puts the base back when it returns. A loop of one's own does the
// same before each train_step.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <numbers>
#include <string>
#include <variant>

#include "pnn/core/error.hpp"
#include "pnn/core/config.hpp"

namespace pnn {

// What a decay after the warm-up provides: the rate at step s after the warm-up for a base rate, a check
// of its parameters, and a description for logs.
template <class S>
concept LearningRateDecay = requires(const S& schedule, double base, index step) {
  { schedule.learning_rate(base, step) } -> std::convertible_to<double>;
  schedule.validate();
  { schedule.describe() } -> std::convertible_to<std::string>;
};

struct ConstantRate {
  double learning_rate(double base, index) const { return base; }
  void validate() const {}
  std::string describe() const { return "constant"; }
};
static_assert(LearningRateDecay<ConstantRate>);

struct StepDecay {
  index every = 1;     // steps between two decays
  double gamma = 0.1;  // the factor of each decay

  double learning_rate(double base, index step) const {
    return base * std::pow(gamma, static_cast<double>(step / every));
  }
  void validate() const {
    PNN_CHECK(every > 0, ArgumentError, "StepDecay: every = ", every, " is invalid; it must be > 0");
    PNN_CHECK(std::isfinite(gamma) && gamma > 0 && gamma <= 1, ArgumentError, "StepDecay: gamma = ", gamma,
              " is invalid; it must be in (0, 1]");
  }
  std::string describe() const { return detail::concat("step (x", gamma, " every ", every, " steps)"); }
};
static_assert(LearningRateDecay<StepDecay>);

struct CosineDecay {
  index steps = 1;   // steps from the base rate down to the floor
  double floor = 0;  // the rate at and after `steps` (an absolute rate, at most the base)

  double learning_rate(double base, index step) const {
    PNN_CHECK(floor <= base, ArgumentError, "CosineDecay: the floor ", floor, " is above the base learning rate ",
              base);
    const double progress = static_cast<double>(std::min(step, steps)) / static_cast<double>(steps);
    return floor + (base - floor) * (1 + std::cos(std::numbers::pi * progress)) / 2;
  }
  void validate() const {
    PNN_CHECK(steps > 0, ArgumentError, "CosineDecay: steps = ", steps, " is invalid; it must be > 0");
    PNN_CHECK(std::isfinite(floor) && floor >= 0, ArgumentError, "CosineDecay: floor = ", floor,
              " is invalid; it must be >= 0");
  }
  std::string describe() const { return detail::concat("cosine (to ", floor, " over ", steps, " steps)"); }
};
static_assert(LearningRateDecay<CosineDecay>);

// A linear warm-up followed by a decay.
struct LearningRateSchedule {
  index warmup_steps = 0;  // 0: no warm-up
  std::variant<ConstantRate, StepDecay, CosineDecay> decay{};

  // The rate of step `step` (from 0) for the base rate `base`.
  double learning_rate(double base, index step) const {
    validate();
    PNN_CHECK(step >= 0, ArgumentError, "LearningRateSchedule: step ", step, " is negative");
    if (step < warmup_steps) return base * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    return std::visit([&](const auto& d) { return d.learning_rate(base, step - warmup_steps); }, decay);
  }
  // Whether every step gets the base rate.
  bool constant() const { return warmup_steps == 0 && std::holds_alternative<ConstantRate>(decay); }
  void validate() const {
    PNN_CHECK(warmup_steps >= 0, ArgumentError, "LearningRateSchedule: warmup_steps = ", warmup_steps,
              " is invalid; it must be >= 0");
    std::visit([](const auto& d) { d.validate(); }, decay);
  }
  std::string describe() const {
    const std::string rest = std::visit([](const auto& d) { return d.describe(); }, decay);
    return warmup_steps > 0 ? detail::concat("warm-up over ", warmup_steps, " steps, then ", rest) : rest;
  }
};

// The linear scaling rule: a rate tuned for batches of base_batch, scaled for batches of `batch`.
inline double linearly_scaled_learning_rate(double base, index batch, index base_batch) {
  PNN_CHECK(batch > 0 && base_batch > 0, ArgumentError,
            "linearly_scaled_learning_rate: batch sizes must be "
            "positive, got ",
            batch, " and ", base_batch);
  return base * static_cast<double>(batch) / static_cast<double>(base_batch);
}

}  // namespace pnn
