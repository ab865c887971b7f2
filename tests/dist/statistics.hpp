// The relations a strategy's statistics keep on any device: each step's marks lie in order on one clock
// (the host's, or a GPU's compute stream), so spans inside a step add up to at most the step. `slack`
// covers the rounding of the sums (and of a GPU's milliseconds in float).
#pragma once

#include <doctest/doctest.h>

#include <pnn/dist.hpp>

namespace pnn::testing {

// Data parallel, with at least one bucket reduced while backward ran (overlap on, more than one bucket).
inline void check_data_parallel_statistics(const StrategyStatistics& s, index steps, double slack) {
  CHECK(s.steps == steps);
  CHECK(s.compute_seconds > 0);
  CHECK(s.communication_seconds > 0);
  // start <= backward end <= reduced <= end, and the first reduction started before backward ended.
  CHECK(s.compute_seconds + s.exposed_seconds <= s.step_seconds + slack);
  CHECK(s.exposed_seconds <= s.communication_seconds + slack);
  CHECK(s.hidden_fraction() >= -slack / s.communication_seconds);
  CHECK(s.hidden_fraction() <= 1);
}

inline void check_pipeline_statistics(const StrategyStatistics& s, index steps, double slack) {
  CHECK(s.steps == steps);
  CHECK(s.compute_seconds > 0);
  // Compute and the waits to receive are disjoint parts of the step.
  CHECK(s.compute_seconds + s.communication_seconds <= s.step_seconds + slack);
  CHECK(s.exposed_seconds == 0);
  CHECK(s.bubble_fraction() >= -slack / s.step_seconds);
  CHECK(s.bubble_fraction() <= 1);
}

}  // namespace pnn::testing
