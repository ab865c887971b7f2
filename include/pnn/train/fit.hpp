// pnn/train/fit.hpp: the training loop. fit() trains a model on a Dataset for some epochs (or steps),
// shows progress, evaluates on a test set after each epoch, and writes one JSON object per epoch.
//
// fit() needs only what every model type provides (a serial Sequential and a Distributed one alike):
//   train_step(model, inputs, targets, optimizer, loss) -> mean loss of the batch
//   model.predict(inputs)                              -> outputs, without dropout or batch statistics
// so switching the parallel strategy does not change the training program. Batches are made on the host;
// a model on a device (Net::on<pnn::cuda>) receives a copy of each on its device.
//
// Data per process: a model whose processes need only some rows of each batch (Distributed under Mpi,
// dist/distributed.hpp) says so with rows_held(batch) -> BatchRows; fit() and evaluate() then gather only
// those samples (in the serial run's order: data/batcher.hpp) and hand them with the batch's BatchPart.
// evaluate() scores the target rows a process holds (model.predict_held(inputs, batch)) and adds the
// processes' loss sums and correct counts with model.sum_over_processes(values), in the canonical tree,
// so the split evaluation is serial evaluation to the bit. A model without these members (a serial one,
// or an in-process group) holds every row, and the same code runs with nothing to add.
//
// Checkpoints (io/checkpoint.hpp): with FitOptions::checkpoint_path, fit() writes one when it ends and,
// with checkpoint_every, every so many steps; with resume_from it continues the run that wrote one as if
// it had not stopped: the same batches in the same order, the same optimiser state and step count, the
// same dropout masks (max_steps and epochs count the steps and epochs before the checkpoint too).
//
// Around each optimiser step (docs/architecture.md, "Training features"):
//   schedule     the learning rate of each step, a function of the optimiser's step count (optim/schedule.hpp),
//                so a resumed run continues it and every strategy applies the same rate
//   accumulate   k batches per optimiser step, their gradients added up as one batch of their rows would
//                have them (bit for bit when k divides 8 and the batches are whole: optim/gradient_accumulation.hpp)
//   eval_every   an evaluation on the test set every so many steps (besides the one after each epoch)
//   on_step, on_epoch   callbacks after each step and epoch; returning false stops training, which is
//                how EarlyStopping (train/early_stopping.hpp) is used
// Clipping by global norm is the optimiser's (Optimizer::clip_norm). Under Mpi every process runs fit(),
// callbacks included: a callback must decide the same on every process (one that looks at losses does).
//
// The loss decides what the data must hold (its target_type): a classifier trains with
// SoftmaxCrossEntropy (the default) on a Dataset, whose targets are class labels, and is evaluated by its
// loss and accuracy; a regression model trains with MeanSquaredError on a RegressionDataset, whose targets
// are rows of reals, and is evaluated by its loss alone:
//   fit(model, optimizer, train, &test, options, pnn::MeanSquaredError{});
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include "pnn/core/batch_rows.hpp"
#include "pnn/data/batcher.hpp"
#include "pnn/data/dataset.hpp"
#include "pnn/io/checkpoint.hpp"
#include "pnn/loss/loss.hpp"
#include "pnn/loss/softmax_cross_entropy.hpp"
#include "pnn/optim/optimizer.hpp"
#include "pnn/optim/schedule.hpp"
#include "pnn/train/metrics.hpp"
#include "pnn/train/train_step.hpp"

namespace pnn {

struct Evaluation {
  double loss = 0;
  double accuracy = 0;  // classifiers only (0 for a regression model)
  index samples = 0;
};

// What fit() tells FitOptions::on_step after each optimiser step.
struct StepReport {
  index step = 0;                        // optimiser steps taken so far, in all epochs, this one included
  index epoch = 0;                       // the epoch the step belongs to, from 1
  double train_loss = 0;                 // the mean loss of the step's batch (all its accumulated batches)
  double learning_rate = 0;              // the rate the step was taken with (0 for a rule without one)
  std::optional<Evaluation> evaluation;  // the test set's, on the steps FitOptions::eval_every picks
};

struct FitOptions {
  index epochs = 1;
  index max_steps = 0;  // stop after this many optimiser steps in all (0: no limit)
  index batch_size = 64;
  std::uint64_t seed = 0;  // the shuffling order
  bool shuffle = true;
  index evaluation_batch = 1000;            // samples per predict() call when evaluating
  std::filesystem::path metrics_path{};     // if set: one JSON object per epoch, rewritten atomically
  std::ostream* progress = &std::cout;      // nullptr: silent
  std::filesystem::path checkpoint_path{};  // if set: a checkpoint when fit() ends, and every checkpoint_every steps
  index checkpoint_every = 0;               // optimiser steps between checkpoints (0: only when fit() ends)
  std::filesystem::path resume_from{};      // if set: continue the run that wrote this checkpoint
  LearningRateSchedule schedule{};          // each step's rate from the rule's learning_rate (optim/schedule.hpp)
  index accumulate = 1;                     // batches per optimiser step (gradient accumulation)
  index eval_every = 0;                     // optimiser steps between evaluations on the test set (0: per epoch only)
  std::function<bool(const StepReport&)> on_step{};     // after each optimiser step; false stops training
  std::function<bool(const EpochMetrics&)> on_epoch{};  // after each epoch's metrics; false stops training
};

namespace detail {
// Batches are prepared on the host (data/batcher.hpp). A model on another device (a .cu program's model on
// pnn::cuda) gets a copy of each batch on its device, in tensors that grow only when a batch is larger
// than every one before; the copy overloads come from that device's headers (include/pnn/cuda/).
template <class View, class D>
struct tensor_on;  // the tensor that holds a copy of a host view on device D
template <class E, std::size_t R, class D>
struct tensor_on<TensorView<const E, R, cpu>, D> {
  using type = Tensor<E, R, D>;
};

template <class Batch, class D>
struct StagedBatch {
  using T = typename Batch::value_type;
  using Targets = typename tensor_on<decltype(batch_targets(std::declval<const Batch&>())), D>::type;
  Tensor<T, 2, D> inputs;
  Targets targets;
};

// The batch's inputs and targets as a model on device D takes them: the host tensors themselves for the
// cpu, else their copies in `staged`.
template <class Batch, class D>
auto on_model_device(const Batch& batch, StagedBatch<Batch, D>& staged) {
  using T = typename Batch::value_type;
  const auto targets = batch_targets(batch);
  if constexpr (std::is_same_v<D, cpu>) {
    return std::pair{batch.inputs.view(), targets};
  } else {
    staged.inputs.resize(batch.inputs.shape());
    staged.targets.resize(targets.shape());
    copy(batch.inputs.view(), staged.inputs.view());
    copy(targets, staged.targets.view());
    using Targets = typename StagedBatch<Batch, D>::Targets;
    return std::pair{TensorView<const T, 2, D>(staged.inputs.view()),
                     TensorView<const typename Targets::value_type, Targets::rank, D>(staged.targets.view())};
  }
}

// A model's output where the host reads it: the output itself on the cpu, else its copy in `host`.
template <class T, class D>
TensorView<const T, 2, cpu> on_host(TensorView<const T, 2, D> output, Tensor<T, 2, cpu>& host) {
  if constexpr (std::is_same_v<D, cpu>) {
    return output;
  } else {
    host.resize(output.shape());
    copy(output, host.view());
    return host.view();
  }
}
}  // namespace detail

namespace detail {
// The rows of a global batch of `batch` rows this process holds: every row, unless the model says.
template <class Model>
BatchRows rows_held(const Model& model, index batch) {
  if constexpr (requires {
                  { model.rows_held(batch) } -> std::same_as<BatchRows>;
                })
    return model.rows_held(batch);
  else return BatchRows::whole(batch);
}
// The outputs of this process's target rows of a batch of `batch` rows, given its input rows.
template <class Model, class Inputs>
auto predict_held(Model& model, Inputs inputs, index batch) {
  if constexpr (requires { model.predict_held(inputs, batch); }) return model.predict_held(inputs, batch);
  else return model.predict(inputs);
}
// Every process's values added up in the canonical tree (nothing to add for a model in one process).
template <class Model>
void sum_over_processes(Model& model, TensorView<double, 1> values) {
  if constexpr (requires { model.sum_over_processes(values); }) model.sum_over_processes(values);
}

// Whether a loss takes the targets a dataset's batches hold: class labels (a Dataset) or target rows (a
// RegressionDataset), for a model of value type T.
template <class LossFunction, class Data, class T>
inline constexpr bool loss_takes_targets_of =
    std::is_same_v<typename LossFunction::template target_type<T, cpu>,
                   decltype(batch_targets(std::declval<const batch_type<Data, T>&>()))>;
// A classifier's targets are class labels; then accuracy means something.
template <class Data>
inline constexpr bool holds_class_labels = std::is_same_v<Data, Dataset>;
}  // namespace detail

// Mean loss (and, for a classifier, accuracy) of the model's predictions on a whole dataset. For a model on
// another device the predictions are copied to the host, where the loss and the accuracy are computed.
// Each process of a distributed model scores the rows it holds; the batches' loss sums (each the canonical
// tree over the batch's chunks, as serial evaluation's) and the correct count are added over the
// processes, then the batches' sums in order, as serial evaluation adds them (collective).
template <class Model, BatchableDataset Data, class LossFunction = SoftmaxCrossEntropy>
Evaluation evaluate(Model& model, const Data& data, index batch_size = 1000, const LossFunction& loss = {}) {
  using T = typename Model::value_type;
  static_assert(detail::loss_takes_targets_of<LossFunction, Data, T>,
                "evaluate(model, data, batch_size, loss): the loss takes other targets than the data holds. "
                "SoftmaxCrossEntropy (the default) evaluates a classifier on a pnn::Dataset (class labels); "
                "MeanSquaredError a regression model on a pnn::RegressionDataset (target rows): pass the loss "
                "that matches the data");
  PNN_CHECK(batch_size > 0, ArgumentError, "evaluate: batch size must be positive, got ", batch_size);
  Evaluation result;
  batch_type<Data, T> batch;
  detail::StagedBatch<batch_type<Data, T>, typename Model::device> staged;
  Tensor<T, 2> host_output;
  std::vector<index> order(static_cast<std::size_t>(batch_size));
  const index batches = (data.size() + batch_size - 1) / batch_size;
  // sums[b]: batch b's loss sum over the rows this process holds; sums[batches]: its correct predictions.
  Tensor<double, 1> sums(Extents<1>{batches + 1});  // zeros
  for (index b = 0; b < batches; ++b) {
    const index begin = b * batch_size, count = std::min(batch_size, data.size() - begin);
    order.resize(static_cast<std::size_t>(count));
    std::iota(order.begin(), order.end(), begin);
    const BatchRows held = detail::rows_held(model, count);
    copy_samples(data, std::span<const index>(order), batch, held);
    const auto output = detail::on_host(
        detail::predict_held(model, detail::on_model_device(std::as_const(batch), staged).first, count), host_output);
    const auto targets = batch_targets(batch);
    if (held.targets.count > 0)
      sums[b] = loss.sum(output, targets, TensorView<T, 2>{}, BatchPart{count, held.targets.begin, held.targets.count});
    if constexpr (detail::holds_class_labels<Data>)
      sums[batches] += static_cast<double>(count_correct(output, targets));
  }
  detail::sum_over_processes(model, sums.view());
  double loss_sum = 0;
  for (index b = 0; b < batches; ++b) loss_sum += sums[b];
  result.samples = data.size();
  if (data.size() > 0) {
    result.loss = loss_sum / static_cast<double>(data.size());
    result.accuracy = sums[batches] / static_cast<double>(data.size());
  }
  return result;
}

namespace detail {
// A progress line that redraws itself on a terminal and prints at every tenth of an epoch otherwise.
class ProgressLine {
 public:
  ProgressLine(std::ostream* out, index epoch, index epochs, index total)
      : out_(out), epoch_(epoch), epochs_(epochs), total_(total), interactive_(out == &std::cout && isatty_stdout()) {}

  void update(index done, double mean_loss, double samples_per_second) {
    if (!out_) return;
    const index tenth = total_ > 0 ? done * 10 / total_ : 10;
    const auto now = std::chrono::steady_clock::now();
    if (done < total_) {
      if (!interactive_ && tenth == last_tenth_) return;
      if (interactive_ && now - last_draw_ < std::chrono::milliseconds(100)) return;  // redraw ten times a second
    }
    last_tenth_ = tenth;
    last_draw_ = now;
    std::ostringstream line;
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    line << "epoch " << epoch_ << "/" << epochs_ << " [" << std::string(static_cast<std::size_t>(filled), '=')
         << std::string(static_cast<std::size_t>(width - filled), ' ') << "] " << done << "/" << total_ << "  loss "
         << std::fixed << std::setprecision(4) << mean_loss << "  " << std::setprecision(0) << samples_per_second
         << " samples/s";
    if (interactive_) *out_ << '\r' << line.str() << std::flush;
    else *out_ << line.str() << '\n' << std::flush;
  }
  void finish() {
    if (out_ && interactive_) *out_ << '\n';
  }
  // A line of its own between updates (an evaluation's result); the next update draws below it.
  void print(const std::string& line) {
    if (!out_) return;
    if (interactive_) *out_ << '\n';
    *out_ << line << std::flush;
  }

 private:
  static bool isatty_stdout() { return ::isatty(1) != 0; }
  std::ostream* out_;
  index epoch_, epochs_, total_;
  bool interactive_;
  index last_tenth_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
};
}  // namespace detail

// Trains `model` with `optimizer` on `train` (a Dataset, or a RegressionDataset with MeanSquaredError);
// evaluates on `test` after each epoch if given.
template <class Model, class Rule, BatchableDataset Data, class LossFunction = SoftmaxCrossEntropy>
std::vector<EpochMetrics> fit(Model& model,
                              Optimizer<Rule, typename Model::value_type, typename Model::device>& optimizer,
                              const Data& train, const std::type_identity_t<Data>* test, const FitOptions& options,
                              const LossFunction& loss = {}) {
  using T = typename Model::value_type;
  static_assert(detail::loss_takes_targets_of<LossFunction, Data, T>,
                "fit(model, optimizer, train, test, options, loss): the loss takes other targets than the data "
                "holds. SoftmaxCrossEntropy (the default) trains a classifier on a pnn::Dataset (class labels); "
                "MeanSquaredError a regression model on a pnn::RegressionDataset (target rows): pass the loss "
                "that matches the data");
  using Clock = std::chrono::steady_clock;
  PNN_CHECK(options.epochs > 0, ArgumentError, "fit: epochs must be positive, got ", options.epochs);
  PNN_CHECK(options.max_steps >= 0, ArgumentError, "fit: max_steps must not be negative, got ", options.max_steps);
  PNN_CHECK(options.checkpoint_every >= 0, ArgumentError, "fit: checkpoint_every must not be negative, got ",
            options.checkpoint_every);
  PNN_CHECK(options.checkpoint_every == 0 || !options.checkpoint_path.empty(), ArgumentError,
            "fit: checkpoint_every = ", options.checkpoint_every, " needs a checkpoint_path to write to");
  if constexpr (detail::holds_class_labels<Data> && requires { Model::output_shape::size; }) {
    check_labels(train, Model::output_shape::size, "training");
    if (test) check_labels(*test, Model::output_shape::size, "test");
  }
  PNN_CHECK(options.accumulate > 0, ArgumentError,
            "fit: accumulate must be positive (batches per optimiser step), got ", options.accumulate);
  PNN_CHECK(options.eval_every >= 0, ArgumentError, "fit: eval_every must not be negative, got ", options.eval_every);
  PNN_CHECK(options.eval_every == 0 || test, ArgumentError, "fit: eval_every = ", options.eval_every,
            " needs a test set to evaluate on");
  options.schedule.validate();
  // The schedule sets the rule's rate for each step from the rate it has now, which it gets back at the end.
  constexpr bool has_rate = requires { optimizer.rule.learning_rate = 1.0; };
  if constexpr (!has_rate)
    PNN_CHECK(options.schedule.constant(), ArgumentError, "fit: the update rule ", Rule::name(),
              " has no learning_rate member for FitOptions::schedule to set");
  struct RestoreRate {
    Optimizer<Rule, T, typename Model::device>& optimizer;
    double base;
    ~RestoreRate() {
      if constexpr (has_rate) optimizer.rule.learning_rate = base;
    }
  };
  const RestoreRate restore_rate{optimizer, [&] {
                                   if constexpr (has_rate) return static_cast<double>(optimizer.rule.learning_rate);
                                   else return 0.0;
                                 }()};
  // Only one rank of a multi-process model prints and writes files.
  bool primary = true;
  if constexpr (requires { model.is_primary(); }) primary = model.is_primary();
  std::ostream* const out = primary ? options.progress : nullptr;
  BasicBatcher<Data> batcher(train, options.batch_size, options.seed,
                             options.shuffle ? BatchOrder::shuffled : BatchOrder::sequential);
  batch_type<Data, T> batch;
  detail::StagedBatch<batch_type<Data, T>, typename Model::device> staged;
  std::vector<EpochMetrics> history;
  // Where the run stands after each step: what a checkpoint records and a resumed run starts from.
  TrainingPosition position{.seed = options.seed,
                            .shuffle = options.shuffle,
                            .batch_size = options.batch_size,
                            .samples_per_epoch = batcher.samples_per_epoch()};
  if (!options.resume_from.empty()) {
    const TrainingPosition resumed = load_checkpoint(model, optimizer, options.resume_from);
    auto require_same = [&](bool same, const char* what, auto in_checkpoint, auto in_options) {
      PNN_CHECK(same, ArgumentError, "fit: cannot resume from ", options.resume_from.string(), ": it was written with ",
                what, " ", in_checkpoint, ", this run has ", in_options, " (the batches would not be the same)");
    };
    require_same(resumed.seed == position.seed, "seed", resumed.seed, position.seed);
    require_same(resumed.shuffle == position.shuffle, "shuffle", resumed.shuffle, position.shuffle);
    require_same(resumed.batch_size == position.batch_size, "batch size", resumed.batch_size, position.batch_size);
    require_same(resumed.samples_per_epoch == position.samples_per_epoch, "a training set of",
                 resumed.samples_per_epoch, position.samples_per_epoch);
    position = resumed;
    if (out)
      *out << "resuming " << options.resume_from.string() << " at step " << position.step << " (epoch "
           << position.epoch + 1 << ", batch " << position.batch << " of " << batcher.batches_per_epoch() << ")\n";
  }
  const TrainingPosition start_position = position;
  index last_checkpoint = -1;
  auto checkpoint = [&] {
    save_checkpoint(model, optimizer, position, options.checkpoint_path);
    last_checkpoint = position.step;
  };
  index steps = position.step;
  bool stop = false;  // a callback said so
  for (index epoch = start_position.epoch + 1; epoch <= options.epochs && !stop; ++epoch) {
    if (options.max_steps > 0 && steps >= options.max_steps) break;
    batcher.start_epoch(epoch - 1);
    detail::ProgressLine progress(out, epoch, options.epochs, batcher.samples_per_epoch());
    const auto start = Clock::now();
    double loss_sum = 0;
    index samples = 0, batch_in_epoch = 0, samples_before = 0;
    if (epoch == start_position.epoch + 1) {  // the epoch a resumed run stopped in
      batcher.skip(start_position.batch);
      batch_in_epoch = start_position.batch;
      loss_sum = start_position.epoch_loss_sum;
      samples = samples_before = start_position.epoch_samples;
    }
    const index batches = batcher.batches_per_epoch();
    auto rows_of_batch = [&](index b) {
      return std::min(options.batch_size, batcher.samples_per_epoch() - b * options.batch_size);
    };
    while (batch_in_epoch < batches) {
      // One optimiser step: the epoch's next `accumulate` batches (fewer at its end), passes over one batch.
      const index group = std::min(options.accumulate, batches - batch_in_epoch);
      index step_rows = 0;
      for (index b = batch_in_epoch; b < batch_in_epoch + group; ++b) step_rows += rows_of_batch(b);
      double rate = 0;
      if constexpr (has_rate) {
        rate = options.schedule.learning_rate(restore_rate.base, optimizer.steps());
        optimizer.rule.learning_rate = rate;
      }
      double step_loss = 0;
      index offset = 0;
      for (index j = 0; j < group; ++j) {
        PNN_CHECK(batcher.next(batch, [&](index count) { return detail::rows_held(model, count); }), Error,
                  "fit: the batcher ran out of batches at batch ", batch_in_epoch, " of ", batches);
        const auto [inputs, targets] = detail::on_model_device(std::as_const(batch), staged);
        const T value = train_step(model, inputs, targets, optimizer, loss, BatchPart{step_rows, offset, batch.size()});
        PNN_CHECK(std::isfinite(static_cast<double>(value)), Error, "training diverged: the loss is ", value,
                  " at step ", steps + 1, " of epoch ", epoch, "; lower the learning rate");
        const double batch_loss = static_cast<double>(value) * static_cast<double>(batch.size());
        loss_sum += batch_loss;
        step_loss += batch_loss;
        samples += batch.size();
        offset += batch.size();
        ++batch_in_epoch;
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        progress.update(samples, loss_sum / static_cast<double>(samples),
                        static_cast<double>(samples - samples_before) / std::max(seconds, 1e-9));
      }
      PNN_CHECK(offset == step_rows, Error, "fit: the step's batches hold ", offset, " rows, not the ", step_rows,
                " expected");
      ++steps;
      const bool epoch_done = batch_in_epoch == batches;
      position.step = steps;
      position.epoch = epoch_done ? epoch : epoch - 1;
      position.batch = epoch_done ? 0 : batch_in_epoch;
      position.epoch_loss_sum = epoch_done ? 0 : loss_sum;
      position.epoch_samples = epoch_done ? 0 : samples;
      if (options.checkpoint_every > 0 && steps % options.checkpoint_every == 0) checkpoint();
      StepReport report{.step = steps,
                        .epoch = epoch,
                        .train_loss = step_loss / static_cast<double>(step_rows),
                        .learning_rate = rate,
                        .evaluation = std::nullopt};
      if (options.eval_every > 0 && steps % options.eval_every == 0) {
        report.evaluation = evaluate(model, *test, options.evaluation_batch, loss);
        std::ostringstream line;
        line << "step " << steps << ": test loss " << std::fixed << std::setprecision(4) << report.evaluation->loss;
        if (detail::holds_class_labels<Data>)
          line << ", test accuracy " << std::setprecision(2) << 100 * report.evaluation->accuracy << "%";
        progress.print(line.str() + "\n");
      }
      if (options.on_step && !options.on_step(report)) stop = true;
      if (stop || (options.max_steps > 0 && steps >= options.max_steps)) break;
    }
    progress.finish();
    EpochMetrics metrics;
    metrics.epoch = epoch;
    metrics.steps = steps;
    metrics.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    metrics.train_loss = samples ? loss_sum / static_cast<double>(samples) : 0;
    metrics.samples_per_second = static_cast<double>(samples - samples_before) / std::max(metrics.seconds, 1e-9);
    metrics.classifier = detail::holds_class_labels<Data>;
    if (test) {
      const Evaluation evaluation = evaluate(model, *test, options.evaluation_batch, loss);
      metrics.test_loss = evaluation.loss;
      metrics.test_accuracy = evaluation.accuracy;
    }
    history.push_back(metrics);
    if (out) {
      std::ostringstream line;  // formatted apart, so the caller's stream keeps its settings
      line << "epoch " << epoch << ": train loss " << std::fixed << std::setprecision(4) << metrics.train_loss;
      if (test) line << ", test loss " << metrics.test_loss;
      if (test && metrics.classifier)
        line << ", test accuracy " << std::setprecision(2) << 100 * metrics.test_accuracy << "%";
      line << ", " << std::setprecision(1) << metrics.seconds << " s, " << std::setprecision(0)
           << metrics.samples_per_second << " samples/s\n";
      *out << line.str() << std::flush;
    }
    if (primary && !options.metrics_path.empty()) write_metrics(options.metrics_path, history);
    if (options.on_epoch && !options.on_epoch(metrics)) stop = true;
  }
  if (!options.checkpoint_path.empty() && last_checkpoint != position.step) checkpoint();
  return history;
}

}  // namespace pnn
