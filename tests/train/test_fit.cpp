// The training loop on real Fashion-MNIST: accuracy after one epoch, determinism, metrics, step limits.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <pnn/pnn.hpp>
#include <sstream>

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
  const auto history = fit(model, optimizer, fashion_mnist().train, &fashion_mnist().test,
                           {.epochs = 3, .max_steps = 25, .batch_size = 50, .metrics_path = metrics, .progress = &progress});
  REQUIRE(history.size() == 1);  // 25 steps end inside the first epoch
  CHECK(history[0].steps == 25);
  CHECK(optimizer.steps() == 25);
  CHECK(progress.str().find("epoch 1/3") != std::string::npos);
  std::ifstream in(metrics);
  std::string line;
  REQUIRE(std::getline(in, line));
  for (const char* key : {"\"epoch\": 1", "\"train_loss\"", "\"test_accuracy\"", "\"seconds\"", "\"samples_per_second\""})
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
  CHECK_THROWS_WITH_AS(fit(model, optimizer, fashion_mnist().train, nullptr,
                           {.epochs = 1, .max_steps = 50, .progress = nullptr}),
                       doctest::Contains("training diverged"), Error);
}
