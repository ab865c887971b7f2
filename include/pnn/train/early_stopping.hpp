// pnn/train/early_stopping.hpp: EarlyStopping, a fit() callback that stops training once the test loss
// has not improved for `patience` evaluations in a row.
//
//   options.eval_every = 100;                       // evaluate every 100 steps...
//   options.on_step = pnn::EarlyStopping(5);        // ...and stop after 5 evaluations without a new best
// or, evaluating once per epoch:
//   options.on_epoch = pnn::EarlyStopping(3);       // stop after 3 epochs without a lower test loss
//
// fit() keeps its own copy of the callback; to read best() afterwards, pass std::ref(stopping). It decides
// from the losses alone, so every process of an Mpi run (each evaluates the same test loss) stops at the
// same step.
#pragma once

#include <limits>

#include "pnn/core/config.hpp"
#include "pnn/core/error.hpp"
#include "pnn/train/fit.hpp"
#include "pnn/train/metrics.hpp"

namespace pnn {

class EarlyStopping {
 public:
  explicit EarlyStopping(index patience) : patience_(patience) {
    PNN_CHECK(patience > 0, ArgumentError, "EarlyStopping: patience must be positive (evaluations), got ", patience);
  }

  // Takes one evaluation's test loss; returns false (stop) when the last `patience` evaluations have not
  // improved on the best loss before them.
  bool observe(double test_loss) {
    if (test_loss < best_) {
      best_ = test_loss;
      without_improvement_ = 0;
    } else {
      ++without_improvement_;
    }
    return without_improvement_ < patience_;
  }
  // As FitOptions::on_step: the steps that evaluated (FitOptions::eval_every) count; the others go on.
  bool operator()(const StepReport& report) { return !report.evaluation || observe(report.evaluation->loss); }
  // As FitOptions::on_epoch: each epoch's evaluation (fit() needs a test set).
  bool operator()(const EpochMetrics& metrics) { return observe(metrics.test_loss); }

  double best() const { return best_; }
  index evaluations_without_improvement() const { return without_improvement_; }

 private:
  index patience_;
  double best_ = std::numeric_limits<double>::infinity();
  index without_improvement_ = 0;
};

}  // namespace pnn
