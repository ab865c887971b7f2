// Expression templates: results equal a plain loop, broadcasting, fused assignments, reductions,
// and the closure rule (named tensors by reference, temporaries by value).
#include <doctest/doctest.h>

#include <cmath>
#include <pnn/core/tensor.hpp>
#include <pnn/cpu/cpu.hpp>
#include <vector>

using pnn::Tensor;

namespace {
Tensor<float, 2> counting(pnn::index rows, pnn::index cols, float scale = 0.37f, float shift = -3.1f) {
  Tensor<float, 2> t(rows, cols);
  for (pnn::index i = 0; i < t.size(); ++i) t[i] = scale * static_cast<float>(i % 17) + shift;
  return t;
}
}  // namespace

TEST_CASE("expression.matches_plain_loop") {
  // Sizes that are not multiples of any SIMD width, and an empty one.
  for (pnn::index cols : {0, 1, 7, 16, 33, 1000}) {
    const Tensor<float, 2> x = counting(3, cols);
    const Tensor<float, 2> z = counting(3, cols, -0.11f, 0.5f);
    Tensor<float, 2> y(3, cols);
    y = relu(x * 2.0f + z) - tanh(x) / 3.0f + sigmoid(z) * exp(-abs(x)) + max(x, z) - min(x, 0.25f);
    for (pnn::index i = 0; i < y.size(); ++i) {
      const float a = x[i], b = z[i];
      const float expected = std::max(a * 2.0f + b, 0.0f) - std::tanh(a) / 3.0f +
                             1.0f / (1.0f + std::exp(-b)) * std::exp(-std::abs(a)) + std::max(a, b) -
                             std::min(a, 0.25f);
      REQUIRE(y[i] == doctest::Approx(expected).epsilon(1e-5));
    }
  }
}

TEST_CASE("expression.more_functions_match_plain_loop") {
  Tensor<double, 1> x({5}, {0.5, 1.0, 2.0, 3.5, 9.0});
  Tensor<double, 1> y = sqrt(x) + rsqrt(x) + log(x) + square(x) + step(x - 2.0) - (-x);
  for (pnn::index i = 0; i < 5; ++i) {
    const double a = x[i];
    CHECK(y[i] == doctest::Approx(std::sqrt(a) + 1 / std::sqrt(a) + std::log(a) + a * a + (a > 2 ? 1 : 0) + a));
  }
}

TEST_CASE("expression.bias_broadcasts_over_batch") {
  const Tensor<float, 2> x = counting(5, 37);
  Tensor<float, 1> bias(37);
  for (pnn::index j = 0; j < 37; ++j) bias[j] = 0.1f * static_cast<float>(j);
  Tensor<float, 2> y(5, 37);
  y = relu(x + bias);
  for (pnn::index r = 0; r < 5; ++r)
    for (pnn::index c = 0; c < 37; ++c) REQUIRE(y(r, c) == std::max(x(r, c) + bias[c], 0.0f));
  // Broadcasting on the left as well.
  y = bias - x;
  CHECK(y(4, 36) == doctest::Approx(bias[36] - x(4, 36)));
  // A shape that is not a trailing suffix is rejected with both shapes in the message.
  Tensor<float, 1> wrong(5);
  CHECK_THROWS_WITH_AS(y = x + wrong, doctest::Contains("(5, 37) and (5,)"), pnn::ShapeError);
}

TEST_CASE("expression.assignment_checks_shape") {
  Tensor<float, 2> x = counting(2, 3);
  Tensor<float, 2> y(3, 2);
  CHECK_THROWS_WITH_AS(y.view() = x * 2.0f, doctest::Contains("shape (2, 3) to a tensor of shape (3, 2)"),
                       pnn::ShapeError);
  // An owning tensor takes the expression's shape instead.
  y = x * 2.0f;
  CHECK(y.shape() == pnn::Extents<2>{2, 3});
}

TEST_CASE("expression.fused_evaluate_is_sequential_assignment") {
  // A momentum update: v = mu * v + g; w = w - lr * v, fused into one pass. The second assignment must
  // see the first one's result, in every fused chunk. Every value is a dyadic fraction of a few bits and mu
  // and lr are powers of two, so each product and sum is exact: the comparison holds whether or not the
  // compiler fuses a multiply and an add into one rounding (GCC contracts across statements by default,
  // -ffp-contract=fast), while w computed from the old v differs by lr * (v_new - v_old).
  const pnn::index n = 5000;  // spans several fused chunks
  Tensor<float, 1> w(n), v(n), g(n);
  for (pnn::index i = 0; i < n; ++i) {
    w[i] = static_cast<float>(i % 13 - 6) / 16;
    v[i] = static_cast<float>(i % 17 - 8) / 8;
    g[i] = static_cast<float>(i % 11 - 5) / 32;
  }
  Tensor<float, 1> w_ref = w, v_ref = v;
  for (pnn::index i = 0; i < n; ++i) {
    v_ref[i] = 0.5f * v_ref[i] + g[i];
    w_ref[i] = w_ref[i] - 0.25f * v_ref[i];
  }
  pnn::evaluate(pnn::into(v, 0.5f * v + g), pnn::into(w, w - 0.25f * v));
  for (pnn::index i = 0; i < n; ++i) {
    REQUIRE(v[i] == v_ref[i]);
    REQUIRE(w[i] == w_ref[i]);
  }
}

TEST_CASE("expression.reductions") {
  Tensor<double, 1> x({6}, {1, -2, 3, -4, 5, 0.5});
  CHECK(pnn::sum(x) == doctest::Approx(3.5));
  CHECK(pnn::sum(x * x) == doctest::Approx(55.25));
  CHECK(pnn::squared_norm(x) == doctest::Approx(55.25));
  CHECK(pnn::maximum(x) == 5);
  CHECK(pnn::minimum(abs(x)) == 0.5);
  Tensor<double, 1> empty(0);
  CHECK(pnn::sum(empty) == 0);
  // A long sum: each segment is summed by Eigen, segments are accumulated in double.
  Tensor<float, 1> ones(1 << 20);
  ones = ones * 0.0f + 1.0f;
  CHECK(pnn::sum(ones) == doctest::Approx(1 << 20));
}

TEST_CASE("expression.closure_holds_named_tensors_by_reference") {
  Tensor<float, 1> x({3}, {1, 2, 3});
  auto lazy = x * 2.0f;  // refers to x
  x[0] = 10;
  Tensor<float, 1> y = lazy;
  CHECK(y[0] == 20);  // sees the change: x was held by reference, not copied
  static_assert(std::is_same_v<decltype(lazy.left), pnn::TensorView<const float, 1>>);
}

TEST_CASE("expression.closure_owns_temporaries") {
  // The dangling-reference case: a temporary tensor inside a lazy expression that is evaluated later.
  auto make = [] { return Tensor<float, 1>({4}, {1, 2, 3, 4}); };
  auto lazy = relu(make() - 2.5f) + 1.0f;  // the temporary from make() must live inside `lazy`
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(lazy.left.operand.left)>, Tensor<float, 1>>);
  // Overwrite the stack region the temporary occupied, then evaluate.
  std::vector<float> scribble(1024, -99.0f);
  Tensor<float, 1> y = lazy;
  CHECK(y[0] == 1.0f);
  CHECK(y[3] == doctest::Approx(2.5f));
  CHECK(scribble[0] == -99.0f);
  // Nested sub-expressions are held by value, so returning one from a function is safe too.
  auto build = [](const Tensor<float, 1>& t) { return square(t + 1.0f) * 0.5f; };
  Tensor<float, 1> base({2}, {1, 3});
  auto returned = build(base);
  Tensor<float, 1> z = returned;
  CHECK(z[0] == 2.0f);
  CHECK(z[1] == 8.0f);
}

TEST_CASE("tensor.view_semantics") {
  Tensor<float, 2> a = counting(2, 2);
  Tensor<float, 2> b(2, 2);
  pnn::TensorView<float, 2> view = b;  // aliases b
  view = a;                            // writes elements
  CHECK(b(1, 1) == a(1, 1));
  pnn::TensorView<float, 2> other = a;
  view.rebind(other);  // now refers to a
  view(0, 0) = 42;
  CHECK(a(0, 0) == 42);
  CHECK(b(0, 0) != 42);
  auto rows = a.view().rows(1, 1);
  CHECK(rows.shape() == pnn::Extents<2>{1, 2});
  CHECK(rows.data() == a.data() + 2);
  CHECK_THROWS_AS(a.view().rows(1, 2), pnn::ShapeError);
  CHECK_THROWS_WITH_AS(a.reshape<1>({5}), doctest::Contains("cannot reshape"), pnn::ShapeError);
  Tensor<float, 2> deep = a;
  deep(0, 0) = 7;
  CHECK(a(0, 0) == 42);
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % pnn::cpu_alignment == 0);
}
