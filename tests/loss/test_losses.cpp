// Softmax cross-entropy and mean squared error: values, gradients, stability, bad labels.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

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

TEST_CASE("softmax_cross_entropy.row_function_gives_the_cpu_loss_bits") {
  // detail::softmax_cross_entropy_row is what every device runs per row (the CUDA kernel loops over it):
  // called row by row, with the row losses added up in the canonical tree (loss/loss.hpp), it gives the CPU
  // loss's bits.
  const auto check = [](auto zero, pnn::index rows, pnn::index classes) {
    using T = decltype(zero);
    CAPTURE(rows);
    CAPTURE(classes);
    Generator random(static_cast<std::uint64_t>(rows * 1000 + classes));
    Tensor<T, 2> logits(rows, classes);
    for (pnn::index i = 0; i < logits.size(); ++i) logits[i] = random.uniform<T>(T(-8), T(8));
    Tensor<std::int32_t, 1> labels(Extents<1>{rows});
    for (pnn::index i = 0; i < rows; ++i)
      labels[i] = static_cast<std::int32_t>(random.below(static_cast<std::uint64_t>(classes)));
    Tensor<T, 2> expected_gradient(rows, classes), gradient(rows, classes);
    const T expected = softmax_cross_entropy<T>(logits.view(), labels.view(), expected_gradient.view());

    const T scale = T(1) / static_cast<T>(rows);
    std::vector<double> row_losses(static_cast<std::size_t>(rows), -1.0);
    for (pnn::index i = 0; i < rows; ++i)
      REQUIRE(detail::softmax_cross_entropy_row(logits.data(), labels.data(), i, classes, scale, gradient.data(),
                                                row_losses[static_cast<std::size_t>(i)]));
    const double total = detail::canonical_row_sum(row_losses.data(), BatchPart::whole(rows));
    CHECK(static_cast<T>(total / static_cast<double>(rows)) == expected);  // bitwise: == on the same bits
    const auto bytes = sizeof(T) * static_cast<std::size_t>(gradient.size());
    CHECK(std::memcmp(gradient.data(), expected_gradient.data(), bytes) == 0);
  };
  for (const pnn::index classes : {pnn::index{1}, pnn::index{3}, pnn::index{10}, pnn::index{257}}) {
    check(0.0f, 13, classes);
    check(0.0, 5, classes);
  }
}
