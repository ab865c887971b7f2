// The training loop on real Fashion-MNIST: accuracy after one epoch, determinism, metrics, step limits.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <pnn/pnn.hpp>
#include <sstream>

#include "support/random_dataset.hpp"

using namespace pnn;

namespace {
using Mlp = Sequential<Input<784>, Dense<256>, ReLU, Dense<128>, ReLU, Dense<10>>;
using MlpWithDropout = Sequential<Input<784>, Dense<64>, ReLU, Dropout<20>, Dense<10>>;

const TrainTestData& fashion_mnist() {
  static const TrainTestData data = load_mnist_format(default_data_directory());
  return data;
}

std::filesystem::path scratch_directory() {
  auto path = std::filesystem::temp_directory_path() / ("pnn-test-fit-" + std::to_string(::getpid()));
  std::filesystem::create_directories(path);
  return path;
}
}  // namespace

TEST_CASE("train.mlp_one_epoch_reaches_84_percent") {
  Mlp model(1);
  Optimizer<Adam> optimizer({.learning_rate = 0.001});
  const auto history = fit(model, optimizer, fashion_mnist().train, &fashion_mnist().test,
                           {.epochs = 1, .batch_size = 64, .seed = 1, .progress = nullptr});
  REQUIRE(history.size() == 1);
  MESSAGE("test accuracy after one epoch: " << history[0].test_accuracy);
  CHECK(history[0].test_accuracy >= 0.84);
  CHECK(history[0].steps == (60000 + 63) / 64);
  // evaluate() agrees with what fit() reported.
  CHECK(evaluate(model, fashion_mnist().test).accuracy == doctest::Approx(history[0].test_accuracy));
  // An int batch size picks this overload, not the expression evaluate(into(...), ...); the batch size
  // changes nothing but the order of summation.
  CHECK(evaluate(model, fashion_mnist().test, 7).accuracy == doctest::Approx(history[0].test_accuracy));
}

TEST_CASE("train.same_seed_gives_bit_identical_weights") {
  auto train = [](std::uint64_t seed) {
    MlpWithDropout model(seed);
    Optimizer<Adam> optimizer({.learning_rate = 0.001});
    fit(model, optimizer, fashion_mnist().train, nullptr,
        {.epochs = 1, .max_steps = 40, .batch_size = 32, .seed = seed, .progress = nullptr});
    const auto values = model.parameter_values();
    return std::vector<float>(values.data(), values.data() + values.size());
  };
  const auto first = train(5), second = train(5), other = train(6);
  CHECK(first == second);  // bit for bit: initialisation, shuffling and dropout all follow the seed
  CHECK(first != other);
}

TEST_CASE("train.max_steps_and_metrics_file") {
  const auto directory = scratch_directory();
  const auto metrics = directory / "metrics.jsonl";
  Mlp model(2);
  Optimizer<SGD> optimizer({.learning_rate = 0.05});
  std::ostringstream progress;
  const auto history =
      fit(model, optimizer, fashion_mnist().train, &fashion_mnist().test,
          {.epochs = 3, .max_steps = 25, .batch_size = 50, .metrics_path = metrics, .progress = &progress});
  REQUIRE(history.size() == 1);  // 25 steps end inside the first epoch
  CHECK(history[0].steps == 25);
  CHECK(optimizer.steps() == 25);
  CHECK(progress.str().find("epoch 1/3") != std::string::npos);
  std::ifstream in(metrics);
  std::string line;
  REQUIRE(std::getline(in, line));
  for (const char* key :
       {"\"epoch\": 1", "\"train_loss\"", "\"test_accuracy\"", "\"seconds\"", "\"samples_per_second\""})
    CHECK_MESSAGE(line.find(key) != std::string::npos, key << " missing from " << line);
  CHECK_FALSE(std::getline(in, line));
  std::filesystem::remove_all(directory);
}

TEST_CASE("train.bad_options_are_rejected") {
  Mlp model(3);
  Optimizer<SGD> optimizer;
  CHECK_THROWS_WITH_AS(fit(model, optimizer, fashion_mnist().train, nullptr, {.epochs = 0, .progress = nullptr}),
                       doctest::Contains("epochs must be positive"), ArgumentError);
  CHECK_THROWS_AS(fit(model, optimizer, fashion_mnist().train, nullptr, {.batch_size = 0, .progress = nullptr}),
                  ArgumentError);
  CHECK_THROWS_WITH_AS(Optimizer<SGD>({.learning_rate = 0}), doctest::Contains("learning_rate = 0 is invalid"),
                       ArgumentError);
}

TEST_CASE("train.divergence_is_reported") {
  Mlp model(4);
  Optimizer<SGD> optimizer({.learning_rate = 1e6});
  CHECK_THROWS_WITH_AS(
      fit(model, optimizer, fashion_mnist().train, nullptr, {.epochs = 1, .max_steps = 50, .progress = nullptr}),
      doctest::Contains("training diverged"), Error);
}

namespace {
// y = (x0 - 0.5 x1 + 0.25 x2, x0 x2 + 0.5 sin(x1)) for x uniform in [-1, 1]^3: a regression a small tanh
// network learns in a few hundred steps.
RegressionDataset synthetic_regression(pnn::index samples, std::uint64_t seed) {
  RegressionDataset data;
  data.inputs = Tensor<float, 2>(samples, 3);
  data.targets = Tensor<float, 2>(samples, 2);
  Generator random(seed);
  for (pnn::index i = 0; i < samples; ++i) {
    float* x = data.inputs.data() + i * 3;
    for (pnn::index j = 0; j < 3; ++j) x[j] = random.uniform<float>(-1.0f, 1.0f);
    data.targets(i, 0) = x[0] - 0.5f * x[1] + 0.25f * x[2];
    data.targets(i, 1) = x[0] * x[2] + 0.5f * std::sin(x[1]);
  }
  return data;
}
using Regressor = Sequential<Input<3>, Dense<16>, Tanh, Dense<2>>;
}  // namespace

TEST_CASE("train.regression_with_mean_squared_error") {
  const RegressionDataset train = synthetic_regression(512, 1), test = synthetic_regression(128, 2);
  Regressor model(7);
  const double before = evaluate(model, test, 1000, MeanSquaredError{}).loss;
  Optimizer<Adam> optimizer({.learning_rate = 0.01});
  std::ostringstream progress;
  const auto directory = scratch_directory();
  const auto metrics = directory / "regression.jsonl";
  const auto history = fit(model, optimizer, train, &test,
                           {.epochs = 60, .batch_size = 32, .seed = 3, .metrics_path = metrics, .progress = &progress},
                           MeanSquaredError{});
  REQUIRE(history.size() == 60);
  const Evaluation after = evaluate(model, test, 1000, MeanSquaredError{});
  MESSAGE("test mean squared error: " << before << " before, " << after.loss << " after training");
  CHECK(after.loss < before / 20);
  CHECK(after.loss < 0.01);
  CHECK(history.back().test_loss == doctest::Approx(after.loss));
  CHECK(history.back().train_loss < history.front().train_loss / 5);
  CHECK_FALSE(history.back().classifier);
  CHECK(after.accuracy == 0);

  // Predictions approach the targets, sample by sample.
  const auto predictions = model.predict(TensorView<const float, 2>(test.inputs));
  double worst = 0;
  for (pnn::index i = 0; i < predictions.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::abs(predictions.data()[i] - test.targets.data()[i])));
  MESSAGE("largest error of a prediction: " << worst);
  CHECK(worst < 0.3);

  // A regression model reports its test loss, and no accuracy, in the progress lines and the metrics file.
  CHECK(progress.str().find("test loss") != std::string::npos);
  CHECK(progress.str().find("accuracy") == std::string::npos);
  std::ifstream in(metrics);
  std::string line;
  REQUIRE(std::getline(in, line));
  CHECK(line.find("\"test_loss\"") != std::string::npos);
  CHECK(line.find("\"test_accuracy\"") == std::string::npos);
  std::filesystem::remove_all(directory);
}

TEST_CASE("train.regression_fit_equals_steps_by_hand") {
  // fit() with MeanSquaredError is the loop a user would write: the batcher's shuffled batches, one
  // train_step each. Bit for bit, weights and mean losses.
  const RegressionDataset train = synthetic_regression(100, 4);
  const FitOptions options{.epochs = 3, .batch_size = 16, .seed = 9, .progress = nullptr};
  Regressor fitted(5), by_hand(5);
  Optimizer<SGD> fit_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  Optimizer<SGD> hand_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  const auto history = fit(fitted, fit_optimizer, train, nullptr, options, MeanSquaredError{});

  BasicBatcher<RegressionDataset> batcher(train, options.batch_size, options.seed);
  RegressionBatch<float> batch;
  std::vector<double> epoch_losses;
  for (pnn::index epoch = 0; epoch < options.epochs; ++epoch) {
    batcher.start_epoch(epoch);
    double loss_sum = 0;
    pnn::index samples = 0;
    while (batcher.next(batch)) {
      const float value = train_step(by_hand, TensorView<const float, 2>(batch.inputs), batch.targets.view(),
                                     hand_optimizer, MeanSquaredError{});
      loss_sum += static_cast<double>(value) * static_cast<double>(batch.size());
      samples += batch.size();
    }
    epoch_losses.push_back(loss_sum / static_cast<double>(samples));
  }
  REQUIRE(history.size() == 3);
  for (std::size_t e = 0; e < 3; ++e) CHECK(history[e].train_loss == epoch_losses[e]);
  const auto a = fitted.parameter_values(), b = by_hand.parameter_values();
  CHECK(std::vector<float>(a.data(), a.data() + a.size()) == std::vector<float>(b.data(), b.data() + b.size()));
  CHECK(fit_optimizer.steps() == hand_optimizer.steps());
}

namespace {
// 50 samples of 4x4 images in 3 classes: 7 batches of 8 per epoch, the last one short.
Dataset small_dataset() { return testing::random_dataset(50, {1, 4, 4}, 3, 21); }
using SmallMlp = Sequential<Input<16>, Dense<12>, ReLU, Dropout<25>, Dense<3>>;
}  // namespace

TEST_CASE("train.fit_resumed_from_a_checkpoint_equals_uninterrupted_fit") {
  const Dataset data = small_dataset();
  const auto directory = scratch_directory();
  const FitOptions options{.epochs = 10, .max_steps = 40, .batch_size = 8, .seed = 4, .progress = nullptr};
  SmallMlp straight(3);
  Optimizer<Adam> straight_adam({.learning_rate = 0.01});
  const auto straight_history = fit(straight, straight_adam, data, nullptr, options);
  REQUIRE(straight_history.size() == 6);  // epochs of 7 steps: the sixth stops after 5

  // Stopped in the middle of an epoch (20 = 2 * 7 + 6) and at the end of one (14), written periodically.
  for (const pnn::index stop : {20, 14}) {
    CAPTURE(stop);
    const auto path = directory / "fit.checkpoint";
    {
      SmallMlp first(3);
      Optimizer<Adam> adam({.learning_rate = 0.01});
      FitOptions interrupted = options;
      interrupted.max_steps = stop;
      interrupted.checkpoint_path = path;
      interrupted.checkpoint_every = 7;
      fit(first, adam, data, nullptr, interrupted);
    }
    SmallMlp resumed(3);
    Optimizer<Adam> adam({.learning_rate = 0.01});
    FitOptions resuming = options;
    resuming.resume_from = path;
    const auto history = fit(resumed, adam, data, nullptr, resuming);
    CHECK(adam.steps() == 40);
    REQUIRE(!history.empty());
    CHECK(history.back().steps == 40);
    CHECK(history.back().epoch == 6);
    CHECK(history.front().epoch == 3);  // after step 14 (7 * 2) and after step 20
    // The epoch the run stopped in reports all its batches' losses, those before the checkpoint too.
    CHECK(history.front().train_loss == straight_history[2].train_loss);
    CHECK(history.back().train_loss == straight_history.back().train_loss);
    const auto a = resumed.parameter_values(), b = straight.parameter_values();
    CHECK(std::vector<float>(a.data(), a.data() + a.size()) == std::vector<float>(b.data(), b.data() + b.size()));
  }

  // A run with other batches is refused, naming the difference.
  FitOptions other = options;
  other.resume_from = directory / "fit.checkpoint";
  other.batch_size = 16;
  SmallMlp model(3);
  Optimizer<Adam> adam({.learning_rate = 0.01});
  CHECK_THROWS_WITH_AS(fit(model, adam, data, nullptr, other),
                       doctest::Contains("it was written with batch size 8, this run has 16"), ArgumentError);
  other.batch_size = 8;
  other.checkpoint_every = 5;
  CHECK_THROWS_WITH_AS(fit(model, adam, data, nullptr, other), doctest::Contains("needs a checkpoint_path"),
                       ArgumentError);
}

TEST_CASE("train.labels_outside_the_models_classes_are_refused_before_training") {
  // Labels in [0, 3), from a file as load_idx_dataset records it, and a model with 2 outputs: the first
  // label of 2 stops fit() before any step, naming the file, the sample and the label.
  Dataset data = small_dataset();
  data.labels_file = "/data/labels-idx1-ubyte";
  pnn::index first = 0;
  while (data.labels[first] != 2) ++first;
  using TwoClasses = Sequential<Input<16>, Dense<12>, ReLU, Dense<2>>;
  TwoClasses model(3);
  const TwoClasses untouched(3);
  Optimizer<Adam> adam({.learning_rate = 0.01});
  const FitOptions options{.epochs = 1, .batch_size = 8, .progress = nullptr};
  const std::string expected = "the training data (labels file /data/labels-idx1-ubyte): label 2 of sample " +
                               std::to_string(first) + " is outside the model's 2 classes [0, 2)";
  CHECK_THROWS_WITH_AS(fit(model, adam, data, nullptr, options), doctest::Contains(expected.c_str()), ArgumentError);
  CHECK(adam.steps() == 0);
  CHECK(std::ranges::equal(std::span(model.parameter_values().data(), model.parameter_values().size()),
                           std::span(untouched.parameter_values().data(), untouched.parameter_values().size())));
  // The test set is checked too, and data made in memory is named as such.
  Dataset train = small_dataset();
  for (pnn::index i = 0; i < train.labels.size(); ++i) train.labels[i] %= 2;
  Dataset test = train;
  test.labels[4] = -1;
  CHECK_THROWS_WITH_AS(fit(model, adam, train, &test, options),
                       doctest::Contains("the test data: label -1 of sample 4 is outside the model's 2 classes"),
                       ArgumentError);
}
