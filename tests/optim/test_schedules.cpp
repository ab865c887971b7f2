// Learning-rate schedules: each one's rate at chosen steps against values worked out here by hand (not by
// the header's formula), warm-up composed with each decay, the linear scaling rule, and the checks.
#include <doctest/doctest.h>

#include <cmath>

#include "pnn/optim/schedule.hpp"

using namespace pnn;

TEST_CASE("schedule.constant_step_and_cosine_rates") {
  const double base = 0.1;
  const LearningRateSchedule constant{};
  for (const pnn::index step : {0, 1, 999}) CHECK(constant.learning_rate(base, step) == base);
  CHECK(constant.constant());

  // x0.5 every 3 steps: halving is exact, so the rates are exact.
  const LearningRateSchedule step{.decay = StepDecay{.every = 3, .gamma = 0.5}};
  const double step_rates[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125};
  for (pnn::index s = 0; s < 10; ++s) {
    CAPTURE(s);
    CHECK(step.learning_rate(base, s) == step_rates[s]);
  }
  CHECK(!step.constant());

  // Cosine from 0.1 to 0.01 over 10 steps: cos(pi / 5) = (1 + sqrt 5) / 4, cos(pi / 2) = 0, cos(4 pi / 5) =
  // -(1 + sqrt 5) / 4; the floor from step 10 on.
  const LearningRateSchedule cosine{.decay = CosineDecay{.steps = 10, .floor = 0.01}};
  const double golden = (1 + std::sqrt(5.0)) / 4;
  CHECK(cosine.learning_rate(base, 0) == doctest::Approx(0.1).epsilon(1e-15));
  CHECK(cosine.learning_rate(base, 2) == doctest::Approx(0.01 + 0.09 * (1 + golden) / 2).epsilon(1e-14));
  CHECK(cosine.learning_rate(base, 5) == doctest::Approx(0.055).epsilon(1e-14));
  CHECK(cosine.learning_rate(base, 8) == doctest::Approx(0.01 + 0.09 * (1 - golden) / 2).epsilon(1e-14));
  CHECK(cosine.learning_rate(base, 10) == doctest::Approx(0.01).epsilon(1e-15));
  CHECK(cosine.learning_rate(base, 500) == doctest::Approx(0.01).epsilon(1e-15));
}

TEST_CASE("schedule.warm_up_then_decay") {
  const double base = 0.8;
  // Four warm-up steps: 0.2, 0.4, 0.6, 0.8; then the decay counts from 0.
  const LearningRateSchedule warm_step{.warmup_steps = 4, .decay = StepDecay{.every = 2, .gamma = 0.5}};
  const double rates[] = {0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 0.4, 0.4, 0.2};
  for (pnn::index s = 0; s < 9; ++s) {
    CAPTURE(s);
    CHECK(warm_step.learning_rate(base, s) == doctest::Approx(rates[s]).epsilon(1e-15));
  }
  const LearningRateSchedule warm_cosine{.warmup_steps = 2, .decay = CosineDecay{.steps = 4, .floor = 0}};
  CHECK(warm_cosine.learning_rate(base, 0) == doctest::Approx(0.4));
  CHECK(warm_cosine.learning_rate(base, 1) == doctest::Approx(0.8));
  CHECK(warm_cosine.learning_rate(base, 2) == doctest::Approx(0.8));  // cosine step 0
  CHECK(warm_cosine.learning_rate(base, 4) == doctest::Approx(0.4));  // halfway
  CHECK(std::abs(warm_cosine.learning_rate(base, 6)) < 1e-15);        // the floor
  const LearningRateSchedule warm_only{.warmup_steps = 3};
  CHECK(warm_only.learning_rate(base, 0) == doctest::Approx(base / 3));
  CHECK(warm_only.learning_rate(base, 7) == base);
  CHECK(!warm_only.constant());
  CHECK(warm_cosine.describe() == "warm-up over 2 steps, then cosine (to 0 over 4 steps)");
}

TEST_CASE("schedule.linear_scaling_rule") {
  CHECK(linearly_scaled_learning_rate(0.1, 1024, 256) == doctest::Approx(0.4));
  CHECK(linearly_scaled_learning_rate(0.1, 256, 256) == 0.1);
  CHECK_THROWS_WITH_AS(linearly_scaled_learning_rate(0.1, 0, 256), doctest::Contains("must be positive"),
                       ArgumentError);
}

TEST_CASE("schedule.invalid_parameters_are_named") {
  auto rate = [](const LearningRateSchedule& schedule) { return schedule.learning_rate(0.1, 0); };
  CHECK_THROWS_WITH_AS(rate({.decay = StepDecay{.every = 0}}), doctest::Contains("every = 0"), ArgumentError);
  CHECK_THROWS_WITH_AS(rate({.decay = StepDecay{.every = 2, .gamma = 1.5}}), doctest::Contains("gamma = 1.5"),
                       ArgumentError);
  CHECK_THROWS_WITH_AS(rate({.decay = StepDecay{.every = 2, .gamma = 0}}), doctest::Contains("gamma = 0"),
                       ArgumentError);
  CHECK_THROWS_WITH_AS(rate({.decay = CosineDecay{.steps = 0}}), doctest::Contains("steps = 0"), ArgumentError);
  CHECK_THROWS_WITH_AS(rate({.decay = CosineDecay{.steps = 5, .floor = 0.5}}),
                       doctest::Contains("the floor 0.5 is above the base learning rate 0.1"), ArgumentError);
  CHECK_THROWS_WITH_AS(rate({.warmup_steps = -1}), doctest::Contains("warmup_steps = -1"), ArgumentError);
  CHECK_THROWS_WITH_AS(LearningRateSchedule{}.learning_rate(0.1, -2), doctest::Contains("step -2"), ArgumentError);
}
