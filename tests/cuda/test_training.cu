// Losses, optimisers and whole training steps on cuda against the cpu; fit() on a cuda model (batches
// staged from the host; a classifier and a regression model), save/load of a cuda model, and a training loop that
// allocates nothing new.
#include <filesystem>
#include <string>
#include <vector>

#include "cuda_testing.cuh"

using namespace pnn;
using testing::check_close;
using testing::needs_gpu;
using testing::random_tensor;
using testing::to_device;
using testing::to_host;

namespace {

Tensor<std::int32_t, 1> random_labels(pnn::index n, pnn::index classes, std::uint64_t seed) {
  Tensor<std::int32_t, 1> labels(Extents<1>{n});
  Generator random(seed);
  for (pnn::index i = 0; i < n; ++i)
    labels[i] = static_cast<std::int32_t>(random.below(static_cast<std::uint64_t>(classes)));
  return labels;
}

// A small CNN with every kind of layer: convolutions with padding and stride, batch normalisation, both
// poolings, dropout, dense layers and two activations.
using Cnn =
    Sequential<Input<1, 16, 16>, Conv2D<4, 3, Pad<1>>, BatchNorm<>, ReLU, MaxPool2D<2>, Conv2D<8, 3, Pad<1>, Stride<2>>,
               ReLU, AvgPool2D<2>, Flatten, Dropout<20>, Dense<16>, Tanh, Dense<10>>;
constexpr pnn::index pixels = 256;
using CudaCnn = Cnn::on<cuda>;

// A synthetic dataset of 1x16x16 byte images.
Dataset synthetic_images(pnn::index n, std::uint64_t seed) {
  Dataset data;
  data.classes = 10;
  data.sample_shape = {1, 16, 16};
  data.images = Tensor<std::uint8_t, 2>(Extents<2>{n, pixels});
  Generator random(seed);
  for (pnn::index i = 0; i < data.images.size(); ++i) data.images[i] = static_cast<std::uint8_t>(random.below(256));
  data.labels = random_labels(n, 10, seed + 1);
  return data;
}

}  // namespace

// ----- losses ----------------------------------------------------------------------------------------------

TEST_CASE("cuda.loss.softmax_cross_entropy" * needs_gpu()) {
  for (const pnn::index batch : {pnn::index{1}, pnn::index{37}, pnn::index{3000}}) {
    CAPTURE(batch);
    const auto logits = random_tensor<float>(Extents<2>{batch, 10}, 1, -4, 4);
    const auto labels = random_labels(batch, 10, 2);
    const auto logits_device = to_device(logits);
    const auto labels_device = to_device(labels);
    Tensor<float, 2> gradient(logits.shape());
    Tensor<float, 2, cuda> gradient_device(logits.shape());
    const SoftmaxCrossEntropy loss;
    const float expected = loss(logits.view(), labels.view(), gradient.view());
    const float actual = loss(logits_device.view(), labels_device.view(), gradient_device.view());
    CHECK(actual == doctest::Approx(expected).epsilon(1e-5));  // expf/logf against the host's exp/log
    check_close("gradient", gradient, gradient_device, 1e-5);
    // Without a gradient: the same value.
    CHECK(loss(logits_device.view(), labels_device.view(), TensorView<float, 2, cuda>{}) == actual);
  }
  SUBCASE("a label outside the classes names the sample") {
    const auto logits = to_device(random_tensor<float>(Extents<2>{8, 4}, 3));
    auto labels = random_labels(8, 4, 4);
    labels[5] = 4;
    labels[6] = -1;
    const auto labels_device = to_device(labels);
    CHECK_THROWS_WITH_AS(SoftmaxCrossEntropy{}(logits.view(), labels_device.view(), TensorView<float, 2, cuda>{}),
                         "softmax cross-entropy: label 4 of sample 5 is outside [0, 4)", ArgumentError);
  }
  SUBCASE("an empty batch") {
    Tensor<float, 2, cuda> logits(Extents<2>{0, 10});
    const Tensor<std::int32_t, 1, cuda> labels(Extents<1>{0});
    CHECK(SoftmaxCrossEntropy{}(testing::const_view(logits), labels.view(), logits.view()) == 0);
  }
}

TEST_CASE("cuda.loss.mean_squared_error" * needs_gpu()) {
  for (const pnn::index batch : {pnn::index{0}, pnn::index{1}, pnn::index{37}, pnn::index{3000}}) {
    CAPTURE(batch);
    const auto output = random_tensor<float>(Extents<2>{batch, 7}, 5);
    const auto target = random_tensor<float>(Extents<2>{batch, 7}, 6);
    Tensor<float, 2> gradient(output.shape());
    Tensor<float, 2, cuda> gradient_device(output.shape());
    const MeanSquaredError loss;
    const float expected = loss(output.view(), target.view(), gradient.view());
    const auto output_device = to_device(output), target_device = to_device(target);
    const float actual = loss(output_device.view(), target_device.view(), gradient_device.view());
    CHECK(actual == doctest::Approx(expected).epsilon(1e-5));  // the host sums in float chunks, the device in double
    check_close("gradient", gradient, gradient_device, 1e-6);
  }
}

// ----- optimisers -------------------------------------------------------------------------------------------

namespace {
// The same rule over a few steps, with the same gradients, on both devices. The model has matrices,
// vectors (LARS leaves them out of its adaptation) and buffers (never updated).
template <class Rule>
void check_optimizer_parity(const Rule& rule, double tolerance = 1e-6) {
  using Host = Sequential<Input<6>, Dense<5>, BatchNorm<>, Dense<3>>;
  Host host(3);
  Host::on<cuda> device(3);
  Optimizer<Rule> host_optimizer(rule);
  Optimizer<Rule, float, cuda> device_optimizer(rule);
  for (int step = 0; step < 4; ++step) {
    CAPTURE(step);
    const auto gradients =
        random_tensor<float>(host.parameter_gradients().shape(), 10 + static_cast<std::uint64_t>(step));
    host.parameter_gradients() = gradients;
    copy(gradients.view(), device.parameter_gradients());
    host_optimizer.step(host.parameters());
    device_optimizer.step(device.parameters());
    check_close("weights", host.parameter_values(), device.parameter_values(), tolerance);
    check_close("buffers", host.buffer_values(), device.buffer_values(), 0);
  }
  CHECK(device_optimizer.steps() == 4);
}
}  // namespace

TEST_CASE("cuda.optim.sgd" * needs_gpu()) {
  check_optimizer_parity(SGD{.learning_rate = 0.1});
  check_optimizer_parity(SGD{.learning_rate = 0.1, .momentum = 0.9});
  check_optimizer_parity(SGD{.learning_rate = 0.1, .momentum = 0.9, .nesterov = true});
  check_optimizer_parity(SGD{.learning_rate = 0.1, .momentum = 0.8, .weight_decay = 0.01, .nesterov = true});
  check_optimizer_parity(SGD{.learning_rate = 0.1, .weight_decay = 0.05});
}

TEST_CASE("cuda.optim.adam_and_adamw" * needs_gpu()) {
  check_optimizer_parity(Adam{.learning_rate = 0.01});
  check_optimizer_parity(Adam{.learning_rate = 0.01, .beta1 = 0.5, .beta2 = 0.9, .weight_decay = 0.1});
  check_optimizer_parity(Adam{.learning_rate = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true});
}

TEST_CASE("cuda.optim.lars" * needs_gpu()) {
  // Its trust ratio comes from norms reduced on the device (in double) and on the host.
  check_optimizer_parity(LARS{.learning_rate = 0.5}, 1e-5);
  check_optimizer_parity(LARS{.learning_rate = 0.5, .weight_decay = 1e-3, .eta = 0.01, .skip_vectors = false}, 1e-5);
}

// ----- whole models -----------------------------------------------------------------------------------------
// Whole models agree within 1e-3 of the largest weight: rounding differs (FMA, summation order), and a
// max-pooling window whose two largest inputs differ by a rounding error may route its gradient to the
// other one on the other device. A wrong kernel is off by far more.

TEST_CASE("cuda.model.cnn_train_steps_equal_cpu" * needs_gpu()) {
  const auto images = random_tensor<float>(Extents<2>{16, pixels}, 20, 0, 1);
  const auto labels = random_labels(16, 10, 21);
  const auto images_device = to_device(images);
  const auto labels_device = to_device(labels);
  Cnn host(5);
  CudaCnn device(5);
  Optimizer<SGD> host_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  Optimizer<SGD, float, cuda> device_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  std::uint64_t reserved_after_two_steps = 0;
  for (int step = 0; step < 6; ++step) {
    CAPTURE(step);
    const float expected = train_step(host, images.view(), labels.view(), host_optimizer, SoftmaxCrossEntropy{});
    const float actual =
        train_step(device, images_device.view(), labels_device.view(), device_optimizer, SoftmaxCrossEntropy{});
    CHECK(actual == doctest::Approx(expected).epsilon(1e-4));
    if (step == 1) {
      cuda_synchronize();
      reserved_after_two_steps = cuda_pool_reserved_bytes();
    }
  }
  check_close("weights after 6 steps", host.parameter_values(), device.parameter_values(), 1e-3);
  check_close("running statistics", host.buffer_values(), device.buffer_values(), 1e-3);
  // The weights moved: the comparison is not between two untouched initialisations.
  CHECK(testing::scaled_difference(testing::const_view(Cnn(5).parameter_values()),
                                   testing::const_view(host.parameter_values())) > 1e-3);
  // Training reuses the memory of the step before: the pool holds no more after six steps than after two.
  cuda_synchronize();
  CHECK(cuda_pool_reserved_bytes() == reserved_after_two_steps);
  // Inference uses the running statistics on both devices.
  const auto predicted = to_host(device.predict(images_device.view()));
  const auto expected = host.predict(images.view());
  CHECK(testing::scaled_difference(expected, testing::const_view(predicted)) <= 1e-3);
}

TEST_CASE("cuda.model.fit_stages_host_batches" * needs_gpu()) {
  const Dataset train = synthetic_images(70, 30);
  const Dataset test = synthetic_images(25, 31);
  const FitOptions options{.epochs = 2, .batch_size = 16, .seed = 4, .evaluation_batch = 10, .progress = nullptr};
  Cnn host(6);
  CudaCnn device(6);
  // SGD, not Adam: the first convolution's bias, followed by BatchNorm, has a gradient that is zero but for
  // rounding, which Adam's normalised step would turn into different full-size steps on the two devices.
  Optimizer<SGD> host_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  Optimizer<SGD, float, cuda> device_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  const auto expected = fit(host, host_optimizer, train, &test, options);
  const auto actual = fit(device, device_optimizer, train, &test, options);
  REQUIRE(actual.size() == expected.size());
  for (std::size_t e = 0; e < expected.size(); ++e) {
    CAPTURE(e);
    CHECK(actual[e].steps == expected[e].steps);
    CHECK(actual[e].train_loss == doctest::Approx(expected[e].train_loss).epsilon(1e-4));
    CHECK(actual[e].test_loss == doctest::Approx(expected[e].test_loss).epsilon(1e-4));
    CHECK(std::abs(actual[e].test_accuracy - expected[e].test_accuracy) <= 1.0 / 25);
  }
  check_close("weights after fit", host.parameter_values(), device.parameter_values(), 1e-3);
  const Evaluation evaluation = evaluate(device, test, pnn::index{7});  // an int would pick the executor's evaluate()
  CHECK(evaluation.samples == 25);
  CHECK(evaluation.loss == doctest::Approx(expected.back().test_loss).epsilon(1e-4));
}

TEST_CASE("cuda.model.fit_regression_stages_float_targets" * needs_gpu()) {
  // fit() with MeanSquaredError on a RegressionDataset: the float target rows are staged on the device as
  // the labels are for a classifier, and the cuda model trains as the cpu one does.
  const auto regression = [](pnn::index n, std::uint64_t seed) {
    RegressionDataset data;
    data.inputs = random_tensor<float>(Extents<2>{n, 3}, seed, -1, 1);
    data.targets = random_tensor<float>(Extents<2>{n, 2}, seed + 1, -1, 1);
    return data;
  };
  const RegressionDataset train = regression(70, 50), test = regression(25, 52);
  using Regressor = Sequential<Input<3>, Dense<16>, Tanh, Dense<2>>;
  const FitOptions options{.epochs = 2, .batch_size = 16, .seed = 4, .evaluation_batch = 10, .progress = nullptr};
  Regressor host(9);
  Regressor::on<cuda> device(9);
  Optimizer<SGD> host_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  Optimizer<SGD, float, cuda> device_optimizer({.learning_rate = 0.05, .momentum = 0.9});
  const auto expected = fit(host, host_optimizer, train, &test, options, MeanSquaredError{});
  const auto actual = fit(device, device_optimizer, train, &test, options, MeanSquaredError{});
  REQUIRE(actual.size() == expected.size());
  for (std::size_t e = 0; e < expected.size(); ++e) {
    CAPTURE(e);
    CHECK_FALSE(actual[e].classifier);
    CHECK(actual[e].train_loss == doctest::Approx(expected[e].train_loss).epsilon(1e-4));
    CHECK(actual[e].test_loss == doctest::Approx(expected[e].test_loss).epsilon(1e-4));
  }
  check_close("weights after fit", host.parameter_values(), device.parameter_values(), 1e-3);
  const Evaluation evaluation = evaluate(device, test, pnn::index{7}, MeanSquaredError{});
  CHECK(evaluation.loss == doctest::Approx(expected.back().test_loss).epsilon(1e-4));
}

TEST_CASE("cuda.model.save_and_load" * needs_gpu()) {
  const auto path = std::filesystem::temp_directory_path() / "pnn_test_cuda_save_and_load.safetensors";
  const auto images = to_device(random_tensor<float>(Extents<2>{8, pixels}, 40, 0, 1));
  const auto labels = to_device(random_labels(8, 10, 41));
  CudaCnn trained(8);
  Optimizer<SGD, float, cuda> optimizer({.learning_rate = 0.1});
  train_step(trained, images.view(), labels.view(), optimizer, SoftmaxCrossEntropy{});
  save(trained, path);

  // The file is the one a cpu model writes: a cpu model reads it and holds the same values.
  Cnn host(99);
  load(host, path);
  check_close("parameters read on the cpu", host.parameter_values(), trained.parameter_values(), 0);
  check_close("buffers read on the cpu", host.buffer_values(), trained.buffer_values(), 0);
  CudaCnn loaded(99);
  load(loaded, path);
  check_close("parameters read on cuda", host.parameter_values(), loaded.parameter_values(), 0);
  check_close("buffers read on cuda", host.buffer_values(), loaded.buffer_values(), 0);
  std::filesystem::remove(path);
  // A file of another model changes nothing.
  save(Sequential<Input<3>, Dense<2>>(1), path);
  CHECK_THROWS_AS(load(loaded, path), IoError);
  check_close("parameters after a failed load", host.parameter_values(), loaded.parameter_values(), 0);
  std::filesystem::remove(path);
}
