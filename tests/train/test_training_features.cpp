// The training features around an optimiser step, each against serial training of the same batches:
// gradient accumulation (k passes of B rows = one batch of k B rows, bit for bit when k divides 8, also
// under the parallel strategies), clipping by global norm under every strategy, fit()'s learning-rate
// schedule (and a resumed run continuing it), its callbacks, periodic evaluation and early stopping.
#include <functional>
#include <vector>

#include "dist/equivalence.hpp"
#include "dist/local_ranks.hpp"
#include "support/random_dataset.hpp"

using namespace pnn;
using testing::check_same_values;
using testing::synthetic_data;
using testing::SyntheticData;

namespace {
using Mlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 5 layers
// Dropout: a pass must draw the masks the whole batch's step draws for the same rows.
using DropoutMlp = Sequential<Input<12>, Dense<10>, Dropout<30>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 6 layers

// `steps` optimiser steps, each over `passes` consecutive batches of `rows` rows (gradient accumulation).
template <class Model, class OptimizerType>
void train_accumulated(Model& model, OptimizerType& optimizer, const SyntheticData& data, pnn::index rows,
                       pnn::index passes, pnn::index steps) {
  pnn::index begin = 0;
  for (pnn::index s = 0; s < steps; ++s) {
    for (pnn::index j = 0; j < passes; ++j) {
      train_step(model, data.inputs.view().rows(begin, rows), data.labels.view().rows(begin, rows), optimizer,
                 SoftmaxCrossEntropy{}, BatchPart{passes * rows, j * rows, rows});
      begin += rows;
    }
  }
}

template <class Model>
std::vector<float> weights_of(const Model& model) {
  const auto values = model.parameter_values();
  return {values.data(), values.data() + values.size()};
}

const SGD momentum_sgd{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 1e-3};
}  // namespace

TEST_CASE("accumulation.k_passes_give_the_bits_of_one_batch_of_k_times_the_rows") {
  // Passes of 5 rows: a batch of 10, 20 or 40 rows has chunks of unequal sizes, and the passes are
  // runs of whole chunks.
  const pnn::index rows = 5, steps = 4;
  for (const pnn::index k : {2, 4, 8}) {
    CAPTURE(k);
    const auto data = synthetic_data(k * rows * steps, 12, 4);
    DropoutMlp whole(11), accumulated(11);
    Optimizer<SGD> whole_sgd(momentum_sgd), accumulated_sgd(momentum_sgd);
    testing::train(whole, whole_sgd, data, k * rows, steps);
    train_accumulated(accumulated, accumulated_sgd, data, rows, k, steps);
    CHECK(accumulated_sgd.steps() == steps);
    CHECK(testing::relative_difference(DropoutMlp(11), whole) > 1e-3);  // the weights moved
    check_same_values(whole, accumulated);
  }
  // Three passes cut the chunks of a batch of 15: one fixed order of its own, equal up to rounding.
  const auto data = synthetic_data(15 * steps, 12, 4);
  Mlp whole(11), accumulated(11);
  Optimizer<Adam> whole_adam({.learning_rate = 0.01}), accumulated_adam({.learning_rate = 0.01});
  testing::train(whole, whole_adam, data, 15, steps);
  train_accumulated(accumulated, accumulated_adam, data, 5, 3, steps);
  CHECK(testing::flat_relative_difference(whole, accumulated) <= 1e-5);
}

TEST_CASE("accumulation.under_every_strategy_equals_serial_training_of_the_whole_batch") {
  const pnn::index rows = 6, steps = 3;
  auto check = [&]<class Strategy>(Strategy, pnn::index k, int ranks) {
    CAPTURE(Strategy::name);
    CAPTURE(k);
    CAPTURE(ranks);
    const auto data = synthetic_data(k * rows * steps, 12, 4);
    DropoutMlp serial(11);
    Optimizer<SGD> serial_sgd(momentum_sgd);
    testing::train(serial, serial_sgd, data, k * rows, steps);
    Distributed<DropoutMlp, Strategy> parallel(11, {.ranks = ranks});
    Optimizer<SGD> parallel_sgd(momentum_sgd);
    train_accumulated(parallel, parallel_sgd, data, rows, k, steps);
    CHECK(parallel_sgd.steps() == steps);
    check_same_values(serial, parallel.gathered());
  };
  // k passes on p ranks: each rank's share of a pass is a run of whole chunks when k p divides 8.
  check(DataParallel<Local>{}, 2, 2);
  check(DataParallel<Local>{}, 4, 2);
  check(DataParallel<Local>{}, 2, 4);
  check(ModelParallel<Split<2, 4>>{}, 2, 3);
  check(ModelParallel<Split<2, 4>>{}, 4, 3);
  check(Pipeline<Split<3>, Microbatches<2>, OneFOneB>{}, 2, 2);
  check(Pipeline<Split<3>, Microbatches<2>, GPipe>{}, 4, 2);
}

TEST_CASE("clipping.by_global_norm_is_bit_for_bit_the_same_under_every_strategy") {
  const pnn::index batch = 12, steps = 5;
  const auto data = synthetic_data(batch * steps, 12, 4);
  auto serial_run = [&](double clip_norm) {
    DropoutMlp serial(11);
    Optimizer<SGD> sgd(momentum_sgd);
    sgd.clip_norm = clip_norm;
    testing::train(serial, sgd, data, batch, steps);
    return serial;
  };
  // The gradients' norm is about 1 on the first steps: 0.05 clips every step.
  const DropoutMlp clipped = serial_run(0.05), unclipped = serial_run(0);
  CHECK(testing::relative_difference(unclipped, clipped) > 1e-3);  // clipping changed the training
  CHECK(testing::relative_difference(DropoutMlp(11), clipped) > 1e-4);

  auto check = [&]<class Strategy, class Rule = SGD>(Strategy, int ranks, Rule rule = momentum_sgd) {
    CAPTURE(Strategy::name);
    CAPTURE(ranks);
    CAPTURE(Rule::name());
    DropoutMlp serial(11);
    Optimizer<Rule> serial_optimizer(rule);
    serial_optimizer.clip_norm = 0.05;
    testing::train(serial, serial_optimizer, data, batch, steps);
    Distributed<DropoutMlp, Strategy> parallel(11, {.ranks = ranks});
    Optimizer<Rule> parallel_optimizer(rule);
    parallel_optimizer.clip_norm = 0.05;
    testing::train(parallel, parallel_optimizer, data, batch, steps);
    check_same_values(serial, parallel.gathered());
  };
  check(DataParallel<Local>{}, 2);
  check(DataParallel<Local>{}, 4);
  check(ModelParallel<Split<2, 4>>{}, 3);
  check(ModelParallel<Split<1, 2, 3, 5>>{}, 5);
  check(Pipeline<Split<3>, Microbatches<4>, OneFOneB>{}, 2);
  check(Pipeline<Split<2, 4>, Microbatches<2>, GPipe>{}, 3, Adam{.learning_rate = 0.01});
}

TEST_CASE("clipping.stages_add_every_tensors_sum_in_the_models_order") {
  // Sums of squares of 11 tensors over magnitudes 2^-20 to 2^20, held by 3 ranks as [0, 2), [2, 7), [7, 11),
  // drawn until adding each rank's subtotal gives other bits than the model's order (about one draw in
  // five does): every rank must get the model's order.
  const std::size_t ends[] = {2, 7, 11};
  auto by_subtotals = [&](const std::vector<double>& squares) {
    double total = 0;
    for (std::size_t r = 0, begin = 0; r < 3; begin = ends[r++]) {
      double subtotal = 0;
      for (std::size_t i = begin; i < ends[r]; ++i) subtotal += squares[i];
      total += subtotal;
    }
    return std::sqrt(total);
  };
  std::vector<double> squares;
  Generator random(8);
  for (int draw = 0; draw < 100 && (squares.empty() || by_subtotals(squares) == global_norm(squares)); ++draw) {
    squares.clear();
    for (int i = 0; i < 11; ++i) squares.push_back(std::exp2(random.uniform<double>(-20, 20)));
  }
  const double serial = global_norm(squares);
  REQUIRE(by_subtotals(squares) != serial);
  std::vector<double> norms(3);
  const auto errors = testing::run_ranks(3, [&](Local& comm) {
    const std::size_t r = static_cast<std::size_t>(comm.rank()), begin = r == 0 ? 0 : ends[r - 1];
    norms[r] = global_norm_over_ranks(comm, std::span<const double>(squares.data() + begin, ends[r] - begin));
  });
  CHECK(errors == std::vector<std::string>(3));
  CHECK(norms == std::vector<double>(3, serial));
}

namespace {
// 50 samples of 4x4 images in 3 classes: 7 batches of 8 per epoch, the last one short.
using SmallMlp = Sequential<Input<16>, Dense<12>, ReLU, Dropout<25>, Dense<3>>;
Dataset small_dataset(pnn::index samples = 50, std::uint64_t seed = 21) {
  return testing::random_dataset(samples, {1, 4, 4}, 3, seed);
}

std::filesystem::path scratch_directory() {
  auto path = std::filesystem::temp_directory_path() / ("pnn-test-features-" + std::to_string(::getpid()));
  std::filesystem::create_directories(path);
  return path;
}

// fit() with options, recording the learning rate of each step.
template <class Model>
std::vector<double> fit_recording_rates(Model& model, Optimizer<SGD>& optimizer, const Dataset& data,
                                        FitOptions options) {
  std::vector<double> rates;
  options.on_step = [&](const StepReport& report) {
    rates.push_back(report.learning_rate);
    return true;
  };
  fit(model, optimizer, data, nullptr, options);
  return rates;
}
}  // namespace

TEST_CASE("schedule.fit_sets_each_steps_rate_and_a_resumed_run_continues_it") {
  const Dataset data = small_dataset();
  const FitOptions options{.epochs = 10,
                           .max_steps = 20,
                           .batch_size = 8,
                           .seed = 4,
                           .progress = nullptr,
                           .schedule = {.warmup_steps = 3, .decay = CosineDecay{.steps = 17, .floor = 0.001}}};
  SmallMlp straight(3);
  Optimizer<SGD> straight_sgd({.learning_rate = 0.1, .momentum = 0.9});
  const auto rates = fit_recording_rates(straight, straight_sgd, data, options);
  REQUIRE(rates.size() == 20);
  CHECK(straight_sgd.rule.learning_rate == 0.1);  // the base rate is back
  CHECK(rates[0] == doctest::Approx(0.1 / 3));
  CHECK(rates[1] == doctest::Approx(0.2 / 3));
  CHECK(rates[2] == doctest::Approx(0.1));
  CHECK(rates[3] == doctest::Approx(0.1));  // the cosine's first step
  CHECK(rates[19] == doctest::Approx(0.001 + 0.099 * (1 + std::cos(M_PI * 16 / 17)) / 2));

  // Stopped after 9 steps (inside the second epoch), resumed: the rates and weights of the straight run.
  const auto path = scratch_directory() / "schedule.checkpoint";
  {
    SmallMlp first(3);
    Optimizer<SGD> sgd({.learning_rate = 0.1, .momentum = 0.9});
    FitOptions interrupted = options;
    interrupted.max_steps = 9;
    interrupted.checkpoint_path = path;
    fit_recording_rates(first, sgd, data, interrupted);
  }
  SmallMlp resumed(3);
  Optimizer<SGD> resumed_sgd({.learning_rate = 0.1, .momentum = 0.9});
  FitOptions resuming = options;
  resuming.resume_from = path;
  const auto resumed_rates = fit_recording_rates(resumed, resumed_sgd, data, resuming);
  CHECK(resumed_rates == std::vector<double>(rates.begin() + 9, rates.end()));
  CHECK(weights_of(resumed) == weights_of(straight));

  // Under data parallelism (2 ranks) the same rates give the same weights.
  Distributed<SmallMlp, DataParallel<Local>> parallel(3, {.ranks = 2});
  Optimizer<SGD> parallel_sgd({.learning_rate = 0.1, .momentum = 0.9});
  FitOptions parallel_options = options;
  parallel_options.on_step = {};
  fit(parallel, parallel_sgd, data, nullptr, parallel_options);
  CHECK(weights_of(parallel.gathered()) == weights_of(straight));
  std::filesystem::remove_all(path.parent_path());
}

TEST_CASE("fit.accumulating_k_batches_equals_batches_of_k_times_the_rows") {
  const Dataset data = small_dataset(64);  // batches of 8: whole chunks of batches of 16 and 32
  for (const pnn::index k : {2, 4}) {
    CAPTURE(k);
    const FitOptions options{.epochs = 2, .batch_size = 8 * k, .seed = 6, .progress = nullptr};
    SmallMlp whole(5), accumulated(5);
    Optimizer<SGD> whole_sgd(momentum_sgd), accumulated_sgd(momentum_sgd);
    const auto whole_history = fit(whole, whole_sgd, data, nullptr, options);
    FitOptions accumulating = options;
    accumulating.batch_size = 8;
    accumulating.accumulate = k;
    const auto history = fit(accumulated, accumulated_sgd, data, nullptr, accumulating);
    CHECK(accumulated_sgd.steps() == whole_sgd.steps());
    CHECK(history.back().steps == whole_history.back().steps);
    CHECK(history.back().train_loss == doctest::Approx(whole_history.back().train_loss).epsilon(1e-6));
    CHECK(weights_of(accumulated) == weights_of(whole));
    // Under data parallelism too.
    Distributed<SmallMlp, DataParallel<Local>> parallel(5, {.ranks = 2});
    Optimizer<SGD> parallel_sgd(momentum_sgd);
    fit(parallel, parallel_sgd, data, nullptr, accumulating);
    CHECK(weights_of(parallel.gathered()) == weights_of(whole));
  }
  // 7 batches an epoch (the last short) in steps of 2: 4 steps, the last of one batch.
  SmallMlp model(5);
  Optimizer<SGD> sgd(momentum_sgd);
  const auto history =
      fit(model, sgd, small_dataset(), nullptr, {.epochs = 2, .batch_size = 8, .progress = nullptr, .accumulate = 2});
  CHECK(history[0].steps == 4);
  CHECK(history[1].steps == 8);
  CHECK_THROWS_WITH_AS(fit(model, sgd, small_dataset(), nullptr, {.progress = nullptr, .accumulate = 0}),
                       doctest::Contains("accumulate must be positive"), ArgumentError);
}

TEST_CASE("fit.callbacks_stop_training_and_periodic_evaluation") {
  const Dataset train = small_dataset(), test = small_dataset(30, 22);
  {  // on_step: stop after step 3
    SmallMlp model(1);
    Optimizer<SGD> sgd(momentum_sgd);
    const auto history =
        fit(model, sgd, train, &test,
            {.epochs = 5, .batch_size = 8, .progress = nullptr, .on_step = [](const StepReport& report) {
               return report.step < 3;
             }});
    CHECK(sgd.steps() == 3);
    REQUIRE(history.size() == 1);
    CHECK(history[0].steps == 3);
  }
  {  // on_epoch: stop after the second epoch
    SmallMlp model(1);
    Optimizer<SGD> sgd(momentum_sgd);
    const auto history =
        fit(model, sgd, train, &test,
            {.epochs = 5, .batch_size = 8, .progress = nullptr, .on_epoch = [](const EpochMetrics& metrics) {
               return metrics.epoch < 2;
             }});
    CHECK(history.size() == 2);
    CHECK(sgd.steps() == 14);
  }
  {  // eval_every = 3: steps 3, 6, 9, 12 of 14 evaluate, and their evaluation is evaluate()'s
    SmallMlp model(1), copy(1);
    Optimizer<SGD> sgd(momentum_sgd), copy_sgd(momentum_sgd);
    std::vector<pnn::index> evaluated;
    std::vector<double> losses;
    std::ostringstream progress;
    fit(model, sgd, train, &test,
        {.epochs = 2, .batch_size = 8, .progress = &progress, .eval_every = 3, .on_step = [&](const StepReport& r) {
           if (r.evaluation) {
             evaluated.push_back(r.step);
             losses.push_back(r.evaluation->loss);
             CHECK(r.evaluation->samples == 30);
           }
           return true;
         }});
    CHECK(evaluated == std::vector<pnn::index>{3, 6, 9, 12});
    CHECK(progress.str().find("step 12: test loss") != std::string::npos);
    fit(copy, copy_sgd, train, nullptr, {.epochs = 2, .max_steps = 12, .batch_size = 8, .progress = nullptr});
    CHECK(losses.back() == evaluate(copy, test).loss);
  }
  SmallMlp model(1);
  Optimizer<SGD> sgd(momentum_sgd);
  CHECK_THROWS_WITH_AS(fit(model, sgd, train, nullptr, {.progress = nullptr, .eval_every = 2}),
                       doctest::Contains("needs a test set"), ArgumentError);
}

TEST_CASE("fit.early_stopping_after_patience_evaluations_without_improvement") {
  EarlyStopping rule(3);
  CHECK(rule.observe(1.0));
  CHECK(rule.observe(0.9));
  CHECK(rule.observe(0.95));
  CHECK(rule.observe(0.9));  // equal is no improvement
  CHECK_FALSE(rule.observe(0.91));
  CHECK(rule.best() == 0.9);
  CHECK(rule.observe(0.5));  // a new best starts over
  CHECK_THROWS_WITH_AS(EarlyStopping(0), doctest::Contains("patience must be positive"), ArgumentError);

  const Dataset train = small_dataset(), test = small_dataset(30, 22);
  // A rate too small to move a weight: every evaluation equals the first, so the fourth (step 8) stops.
  SmallMlp frozen(1);
  Optimizer<SGD> tiny({.learning_rate = 1e-30});
  auto history =
      fit(frozen, tiny, train, &test,
          {.epochs = 10, .batch_size = 8, .progress = nullptr, .eval_every = 2, .on_step = EarlyStopping(3)});
  CHECK(tiny.steps() == 8);
  CHECK(history.back().steps == 8);
  // Per epoch: stops after the third epoch (two without improvement).
  Optimizer<SGD> tiny_again({.learning_rate = 1e-30});
  history = fit(frozen, tiny_again, train, &test,
                {.epochs = 10, .batch_size = 8, .progress = nullptr, .on_epoch = EarlyStopping(2)});
  CHECK(history.size() == 3);
  // A rate that learns keeps improving the test loss over these few steps: no early stop.
  SmallMlp learning(1);
  Optimizer<SGD> sgd({.learning_rate = 0.05});
  history = fit(learning, sgd, train, &test,
                {.epochs = 10,
                 .max_steps = 12,
                 .batch_size = 8,
                 .progress = nullptr,
                 .eval_every = 2,
                 .on_step = EarlyStopping(3)});
  CHECK(sgd.steps() == 12);
}
