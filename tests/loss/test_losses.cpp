// Softmax cross-entropy and mean squared error: values, gradients, stability, bad labels.
#include <doctest/doctest.h>

#include "support/gradient_check.hpp"

using namespace pnn;

TEST_CASE("softmax_cross_entropy.value_and_gradient") {
  Tensor<double, 2> logits({2, 3}, {1.0, 2.0, 0.5, -1.0, 0.0, 3.0});
  Tensor<std::int32_t, 1> labels({2}, {1, 0});
  const double row0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(0.5)) - 2.0;
  const double row1 = std::log(std::exp(-1.0) + std::exp(0.0) + std::exp(3.0)) + 1.0;
  CHECK(softmax_cross_entropy<double>(logits.view(), labels.view(), {}) == doctest::Approx((row0 + row1) / 2));
  testing::check_loss(SoftmaxCrossEntropy{}, logits, TensorView<const std::int32_t, 1>(labels));
}

TEST_CASE("softmax_cross_entropy.is_stable_for_large_logits") {
  Tensor<float, 2> logits({1, 3}, {1000.0f, 0.0f, -1000.0f});
  Tensor<std::int32_t, 1> right({1}, {0}), wrong({1}, {2});
  Tensor<float, 2> gradient(1, 3);
  CHECK(softmax_cross_entropy<float>(logits.view(), right.view(), gradient.view()) == doctest::Approx(0.0f));
  const float loss = softmax_cross_entropy<float>(logits.view(), wrong.view(), gradient.view());
  CHECK(std::isfinite(loss));
  CHECK(loss == doctest::Approx(2000.0f));
  CHECK(gradient(0, 2) == doctest::Approx(-1.0f));
}

TEST_CASE("softmax_cross_entropy.rejects_bad_labels") {
  Tensor<float, 2> logits(2, 3);
  Tensor<std::int32_t, 1> labels({2}, {0, 3});
  CHECK_THROWS_WITH_AS(softmax_cross_entropy<float>(logits.view(), labels.view(), {}),
                       doctest::Contains("label 3 of sample 1 is outside [0, 3)"), ArgumentError);
  Tensor<std::int32_t, 1> too_few({1}, {0});
  CHECK_THROWS_AS(softmax_cross_entropy<float>(logits.view(), too_few.view(), {}), ShapeError);
}

TEST_CASE("mean_squared_error.value_and_gradient") {
  Tensor<double, 2> output({2, 2}, {1, 2, 3, 4});
  Tensor<double, 2> target({2, 2}, {0, 2, 5, 4});
  CHECK(MeanSquaredError{}(TensorView<const double, 2>(output), TensorView<const double, 2>(target),
                           TensorView<double, 2>{}) == doctest::Approx((1.0 + 4.0) / 4));
  testing::check_loss(MeanSquaredError{}, output, TensorView<const double, 2>(target));
}
