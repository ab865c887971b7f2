// The CUDA backend's per-element code run on the host, against the CPU implementations: no GPU needed, so
// these cases run on every machine that builds the CUDA tests, CI included.
//
// Each kernel of include/pnn/cuda/ is a grid-stride loop around a __host__ __device__ function of one
// element (kernels.cuh: im2col, col2im, max and average pooling, the per-sample transpose;
// loss/softmax_cross_entropy.hpp: a row of softmax cross-entropy, which loss.cuh's kernel and the CPU loss
// both loop over), and a fused
// expression runs its kernel form (executor.cuh: leaves, scalars, nodes, assignments) at each element.
// Calling those same functions for every element here tests their index arithmetic, window ranges,
// tie-breaking, broadcasting and operand order without a device. The
// arguments pnn hands cuBLAS for a row-major product (linalg.cuh's cublas_product) are checked the same
// way, by BLAS's own definition of gemm. What stays for the GPU cases is the launch itself (grid,
// stream, memory), the reductions, cuBLAS and device arithmetic (FMA, CUDA's math functions).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_testing.cuh"

using namespace pnn;
using testing::random_tensor;
using testing::scaled_difference;

namespace {

// What a kernel's grid-stride loop does on the device: body(e) once for every element e.
template <class Body>
void for_each_element(pnn::index total, Body body) {
  for (pnn::index e = 0; e < total; ++e) body(e);
}

// A host tensor seen through a cuda view: only kernel forms read it here, on the host.
template <class T, std::size_t R>
TensorView<const T, R, cuda> as_cuda(const Tensor<T, R, cpu>& host) {
  return TensorView<const T, R, cuda>(host.data(), host.shape());
}
template <class T, std::size_t R>
TensorView<T, R, cuda> as_cuda(Tensor<T, R, cpu>& host) {
  return TensorView<T, R, cuda>(host.data(), host.shape());
}

// Evaluates `expression` (over cuda views) into `destination` as Executor<cuda>::assign's kernel does.
template <class T, std::size_t R, class E>
void assign_on_host(Tensor<T, R, cpu>& destination, const E& expression) {
  detail::check_assignment_shape(as_cuda(destination), expression);
  const cuda_detail::AssignmentArgument<T, cuda_detail::kernel_form<E>> assignment{destination.data(),
                                                                                   cuda_detail::to_kernel(expression)};
  for_each_element(destination.size(), [&](pnn::index i) { assignment.run(i); });
}

template <class T, std::size_t R>
void check_equal_to_cpu(const std::string& what, const Tensor<T, R, cpu>& expected, const Tensor<T, R, cpu>& actual,
                        double tolerance) {
  const double difference = scaled_difference(testing::const_view(expected), testing::const_view(actual));
  CHECK_MESSAGE(difference <= tolerance, what << ": the device code differs from the cpu by " << difference
                                              << " of the largest magnitude (tolerance " << tolerance << ")");
}

// The same expression over either device: every unary and binary operation, scalars on both sides.
template <class X, class Y>
auto composite(const X& x, const Y& y) {
  return relu(x * 2.0f - y) + sigmoid(y) * tanh(x) - exp(-square(x)) + abs(y) / sqrt(abs(x) + 1.5f) + max(x, y) -
         min(x, 0.25f) + log(x + 2.0f) * rsqrt(y + 3.0f) + step(x) - 0.5f / (x + 4.0f);
}

std::string describe(const ConvolutionGeometry& g) {
  return detail::concat(g.kernel, "x", g.kernel, " stride ", g.stride, " padding ", g.padding, " over ", g.height, "x",
                        g.width, "x", g.channels);
}

// (channels, height, width, kernel, stride, padding): overlapping and gapped windows, padding as wide
// as the kernel (windows that see only padding), 1x1, a single-pixel sample, non-square samples.
const std::vector<ConvolutionGeometry> convolution_geometries{
    ConvolutionGeometry::make(3, 7, 6, 3, 1, 0), ConvolutionGeometry::make(2, 9, 7, 3, 2, 1),
    ConvolutionGeometry::make(1, 8, 8, 5, 1, 2), ConvolutionGeometry::make(3, 8, 8, 2, 3, 0),
    ConvolutionGeometry::make(4, 3, 3, 1, 1, 0), ConvolutionGeometry::make(2, 5, 4, 3, 2, 3),
    ConvolutionGeometry::make(1, 1, 1, 1, 1, 0), ConvolutionGeometry::make(5, 4, 6, 4, 1, 1)};

// Pooling windows are never padded.
const std::vector<ConvolutionGeometry> pooling_geometries{
    ConvolutionGeometry::make(3, 8, 8, 2, 2), ConvolutionGeometry::make(2, 7, 7, 3, 2),
    ConvolutionGeometry::make(2, 8, 8, 2, 3), ConvolutionGeometry::make(3, 5, 5, 2, 2),
    ConvolutionGeometry::make(1, 6, 5, 3, 1), ConvolutionGeometry::make(2, 4, 4, 4, 4),
    ConvolutionGeometry::make(1, 1, 1, 1, 1)};

constexpr pnn::index batch = 3;

// BLAS's definition of gemm, column-major: C = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n,
// element (i, j) of a matrix with leading dimension ld at [i + j * ld]. First the argument checks cuBLAS
// makes (CUBLAS_STATUS_INVALID_VALUE otherwise).
template <class T>
void blas_gemm(const cuda_detail::CublasProduct<T>& p, T alpha, T beta) {
  const bool transpose_a = p.transa == CUBLAS_OP_T, transpose_b = p.transb == CUBLAS_OP_T;
  REQUIRE((transpose_a || p.transa == CUBLAS_OP_N));
  REQUIRE((transpose_b || p.transb == CUBLAS_OP_N));
  REQUIRE((p.m >= 0 && p.n >= 0 && p.k >= 0));
  REQUIRE(p.lda >= std::max(1, transpose_a ? p.k : p.m));
  REQUIRE(p.ldb >= std::max(1, transpose_b ? p.n : p.k));
  REQUIRE(p.ldc >= std::max(1, p.m));
  for (int j = 0; j < p.n; ++j)
    for (int i = 0; i < p.m; ++i) {
      double product = 0;
      for (int l = 0; l < p.k; ++l) {
        const T a = transpose_a ? p.A[l + i * p.lda] : p.A[i + l * p.lda];
        const T b = transpose_b ? p.B[j + l * p.ldb] : p.B[l + j * p.ldb];
        product += static_cast<double>(a) * static_cast<double>(b);
      }
      T& c = p.C[i + j * p.ldc];
      c = static_cast<T>(alpha * product + (beta == T(0) ? 0.0 : static_cast<double>(beta) * c));
    }
}

}  // namespace

TEST_CASE("cuda.on_host.im2col_and_col2im") {
  for (const ConvolutionGeometry& g : convolution_geometries) {
    CAPTURE(describe(g));
    REQUIRE(g.fits());
    const auto input = random_tensor<float>(Extents<2>{batch, g.input_size()}, 1);
    const Extents<2> columns_shape{batch * g.output_positions(), g.patch_size()};

    Tensor<float, 2> expected_columns(columns_shape), columns(columns_shape);
    im2col(input.view(), g, expected_columns.view());
    for_each_element(columns.size(),
                     [&](pnn::index e) { cuda_detail::im2col_element(input.data(), g, e, columns.data()); });
    CHECK(scaled_difference(testing::const_view(expected_columns), testing::const_view(columns)) == 0);

    // col2im gathers, in the order the CPU scatters: the same additions in the same order.
    const auto column_gradient = random_tensor<float>(columns_shape, 2);
    Tensor<float, 2> expected_gradient(input.shape()), gradient(input.shape());
    col2im(column_gradient.view(), g, expected_gradient.view());
    for_each_element(gradient.size(),
                     [&](pnn::index e) { cuda_detail::col2im_element(column_gradient.data(), g, e, gradient.data()); });
    check_equal_to_cpu("col2im", expected_gradient, gradient, 1e-6);
  }
}

TEST_CASE("cuda.on_host.max_pooling") {
  for (const ConvolutionGeometry& g : pooling_geometries) {
    CAPTURE(describe(g));
    REQUIRE(g.fits());
    // Few distinct values, so most windows hold ties: the first maximum in window order must win on both.
    auto input = random_tensor<float>(Extents<2>{batch, g.input_size()}, 3, 0, 3);
    for (pnn::index i = 0; i < input.size(); ++i) input[i] = std::floor(input[i]);
    const Extents<2> pooled_shape{batch, g.pooled_size()};

    Tensor<float, 2> expected_output(pooled_shape), output(pooled_shape);
    Tensor<SampleOffset, 2> expected_argmax(pooled_shape), argmax(pooled_shape);
    max_pool_forward(testing::const_view(input), g, expected_output.view(), expected_argmax.view());
    for_each_element(output.size(), [&](pnn::index e) {
      cuda_detail::max_pool_forward_element(input.data(), g, e, output.data(), argmax.data());
    });
    CHECK(scaled_difference(testing::const_view(expected_output), testing::const_view(output)) == 0);
    bool same_argmax = true;
    for (pnn::index i = 0; i < argmax.size(); ++i) same_argmax = same_argmax && argmax[i] == expected_argmax[i];
    CHECK_MESSAGE(same_argmax, "max pooling picked another element of a window than the cpu did");

    const auto output_gradient = random_tensor<float>(pooled_shape, 4);
    Tensor<float, 2> expected_gradient(input.shape()), gradient(input.shape());
    max_pool_backward(output_gradient.view(), expected_argmax.view(), g, expected_gradient.view());
    for_each_element(gradient.size(), [&](pnn::index e) {
      cuda_detail::max_pool_backward_element(output_gradient.data(), argmax.data(), g, e, gradient.data());
    });
    check_equal_to_cpu("max pooling's gradient", expected_gradient, gradient, 1e-6);
  }
}

TEST_CASE("cuda.on_host.average_pooling") {
  for (const ConvolutionGeometry& g : pooling_geometries) {
    CAPTURE(describe(g));
    const auto input = random_tensor<float>(Extents<2>{batch, g.input_size()}, 5);
    const Extents<2> pooled_shape{batch, g.pooled_size()};
    // The scale the cuda avg_pool_* pass to their kernels.
    const float scale = 1.0f / static_cast<float>(g.kernel * g.kernel);

    Tensor<float, 2> expected_output(pooled_shape), output(pooled_shape);
    avg_pool_forward(input.view(), g, expected_output.view());
    for_each_element(output.size(), [&](pnn::index e) {
      cuda_detail::avg_pool_forward_element(input.data(), g, e, scale, output.data());
    });
    check_equal_to_cpu("average pooling", expected_output, output, 1e-6);

    const auto output_gradient = random_tensor<float>(pooled_shape, 6);
    Tensor<float, 2> expected_gradient(input.shape()), gradient(input.shape());
    avg_pool_backward(output_gradient.view(), g, expected_gradient.view());
    for_each_element(gradient.size(), [&](pnn::index e) {
      cuda_detail::avg_pool_backward_element(output_gradient.data(), g, e, scale, gradient.data());
    });
    check_equal_to_cpu("average pooling's gradient", expected_gradient, gradient, 1e-6);
  }
}

TEST_CASE("cuda.on_host.transpose_samples") {
  for (const auto& [rows, cols] : {std::pair<pnn::index, pnn::index>{49, 32}, {3, 1}, {1, 5}, {12, 7}}) {
    CAPTURE(rows);
    CAPTURE(cols);
    const auto input = random_tensor<float>(Extents<2>{batch, rows * cols}, 7);
    Tensor<float, 2> expected(input.shape()), output(input.shape());
    transpose_samples(input.view(), rows, cols, expected.view());
    for_each_element(output.size(), [&](pnn::index e) {
      cuda_detail::transpose_samples_element(input.data(), rows, cols, e, output.data());
    });
    check_equal_to_cpu("transpose_samples", expected, output, 0);
  }
}

TEST_CASE("cuda.on_host.softmax_cross_entropy_rows") {
  for (const pnn::index classes : {pnn::index{1}, pnn::index{2}, pnn::index{10}, pnn::index{300}}) {
    CAPTURE(classes);
    const pnn::index rows = 7;
    const auto logits = random_tensor<float>(Extents<2>{rows, classes}, 7, -8, 8);
    Tensor<std::int32_t, 1> labels(Extents<1>{rows});
    for (pnn::index i = 0; i < rows; ++i) labels[i] = static_cast<std::int32_t>((i * 7 + 3) % classes);

    Tensor<float, 2> expected_gradient(logits.shape()), gradient(logits.shape());
    const float expected_loss = softmax_cross_entropy(logits.view(), labels.view(), expected_gradient.view());
    // The scale and the mean as loss.cuh computes them: gradient rows scaled by 1 / batch, the mean of
    // the row losses taken in double.
    const float scale = 1.0f / static_cast<float>(rows);
    std::vector<double> row_losses(static_cast<std::size_t>(rows), -1.0);
    double total = 0;
    for_each_element(rows, [&](pnn::index i) {
      REQUIRE(pnn::detail::softmax_cross_entropy_row(logits.data(), labels.data(), i, classes, scale, gradient.data(),
                                                     row_losses[static_cast<std::size_t>(i)]));
      total += row_losses[static_cast<std::size_t>(i)];
    });
    CHECK(static_cast<float>(total / static_cast<double>(rows)) == doctest::Approx(expected_loss).epsilon(1e-6));
    check_equal_to_cpu("softmax cross-entropy's gradient", expected_gradient, gradient, 1e-6);

    // Without a gradient (evaluation), each row's loss is the same.
    std::vector<double> loss_only(static_cast<std::size_t>(rows), -1.0);
    for_each_element(rows, [&](pnn::index i) {
      REQUIRE(pnn::detail::softmax_cross_entropy_row(logits.data(), labels.data(), i, classes, scale,
                                                     static_cast<float*>(nullptr),
                                                     loss_only[static_cast<std::size_t>(i)]));
    });
    CHECK(loss_only == row_losses);
  }

  SUBCASE("a label outside [0, classes) is reported and its row left alone") {
    const auto logits = random_tensor<float>(Extents<2>{3, 4}, 8);
    Tensor<std::int32_t, 1> labels(Extents<1>{3});
    labels[0] = 1;
    labels[1] = 4;
    labels[2] = -1;
    Tensor<float, 2> gradient(logits.shape());
    for (pnn::index i = 0; i < gradient.size(); ++i) gradient[i] = 42.0f;
    std::vector<double> row_losses(3, -1.0);
    CHECK(pnn::detail::softmax_cross_entropy_row(logits.data(), labels.data(), 0, 4, 1.0f, gradient.data(),
                                                 row_losses[0]));
    CHECK_FALSE(pnn::detail::softmax_cross_entropy_row(logits.data(), labels.data(), 1, 4, 1.0f, gradient.data(),
                                                       row_losses[1]));
    CHECK_FALSE(pnn::detail::softmax_cross_entropy_row(logits.data(), labels.data(), 2, 4, 1.0f, gradient.data(),
                                                       row_losses[2]));
    CHECK(row_losses[1] == -1.0);
    CHECK(row_losses[2] == -1.0);
    for (pnn::index j = 0; j < 4; ++j) {
      CHECK(gradient(1, j) == 42.0f);
      CHECK(gradient(2, j) == 42.0f);
    }
  }
}

TEST_CASE("cuda.on_host.expression_kernel_forms") {
  SUBCASE("every operation, scalars on either side") {
    const auto x = random_tensor<float>(Extents<1>{1000}, 9, -3, 3);
    const auto y = random_tensor<float>(Extents<1>{1000}, 10, -3, 3);
    const Tensor<float, 1> expected = composite(x, y);
    Tensor<float, 1> actual(x.shape());
    assign_on_host(actual, composite(as_cuda(x), as_cuda(y)));
    // Eigen's vectorised tanh, logistic, exp and rsqrt are approximations of their own.
    check_equal_to_cpu("composite expression", expected, actual, 1e-5);

    // Non-commutative operations keep their operands' order.
    Tensor<float, 1> expected_order = (x - y) / (y + 4.0f) - 2.0f / (x + 5.0f) - max(y, 0.5f) + min(0.5f, x);
    Tensor<float, 1> order(x.shape());
    const auto xd = as_cuda(x), yd = as_cuda(y);
    assign_on_host(order, (xd - yd) / (yd + 4.0f) - 2.0f / (xd + 5.0f) - max(yd, 0.5f) + min(0.5f, xd));
    check_equal_to_cpu("operand order", expected_order, order, 1e-6);
  }

  SUBCASE("broadcast operands repeat over the leading dimensions, on either side") {
    const auto x = random_tensor<float>(Extents<3>{4, 5, 6}, 11);
    const auto plane = random_tensor<float>(Extents<2>{5, 6}, 12);
    const auto row = random_tensor<float>(Extents<1>{6}, 13);
    const Tensor<float, 3> expected = relu(plane * x - row) / (row + 2.0f);
    Tensor<float, 3> actual(x.shape());
    assign_on_host(actual, relu(as_cuda(plane) * as_cuda(x) - as_cuda(row)) / (as_cuda(row) + 2.0f));
    check_equal_to_cpu("broadcast", expected, actual, 1e-6);

    Tensor<float, 2> rows(Extents<2>{300, 6});
    assign_on_host(rows, as_cuda(row));
    bool filled = true;
    for (pnn::index r = 0; r < 300; ++r)
      for (pnn::index c = 0; c < 6; ++c) filled = filled && rows(r, c) == row[c];
    CHECK_MESSAGE(filled, "a broadcast assignment left a row without the broadcast values");
  }

  SUBCASE("fused assignments run in order at each element") {
    auto v = random_tensor<float>(Extents<1>{257}, 14);
    auto w = random_tensor<float>(Extents<1>{257}, 15);
    const auto g = random_tensor<float>(Extents<1>{257}, 16);
    Tensor<float, 1> v_host = v, w_host = w;
    evaluate(into(v, 0.9f * v + g), into(w, w - 0.1f * v));  // the cpu executor

    // Executor<cuda>::evaluate's kernel runs every assignment at element i before element i + 1.
    const auto vd = as_cuda(v_host), wd = as_cuda(w_host);
    const auto first = cuda_detail::assignment_argument(into(vd, 0.9f * vd + as_cuda(g)));
    const auto second = cuda_detail::assignment_argument(into(wd, wd - 0.1f * vd));
    for_each_element(v_host.size(), [&](pnn::index i) {
      first.run(i);
      second.run(i);
    });
    check_equal_to_cpu("velocity", v, v_host, 1e-6);
    check_equal_to_cpu("weights, read after the velocity", w, w_host, 1e-6);
  }
}

TEST_CASE_TEMPLATE("cuda.on_host.gemm_calls_cublas_with_the_transposed_problem", T, float, double) {
  const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  struct Shape {
    pnn::index m, n, k;
  };
  for (const Shape shape : {Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{7, 1, 4}, Shape{1, 9, 2}, Shape{16, 17, 33}}) {
    for (const bool transpose_a : {false, true})
      for (const bool transpose_b : {false, true})
        for (const auto& [alpha, beta] : {std::pair{1.0, 0.0}, std::pair{0.5, 1.5}}) {
          const auto [m, n, k] = shape;
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(transpose_a);
          CAPTURE(transpose_b);
          CAPTURE(beta);
          const GemmOptions options{
              .transpose_a = transpose_a, .transpose_b = transpose_b, .alpha = alpha, .beta = beta};
          const auto a = random_tensor<T>(transpose_a ? Extents<2>{k, m} : Extents<2>{m, k}, 17);
          const auto b = random_tensor<T>(transpose_b ? Extents<2>{n, k} : Extents<2>{k, n}, 18);
          Tensor<T, 2> expected = random_tensor<T>(Extents<2>{m, n}, 19);
          Tensor<T, 2> actual = expected;
          gemm(a.view(), b.view(), expected.view(), options);
          blas_gemm(cuda_detail::cublas_product(as_cuda(a), as_cuda(b), as_cuda(actual), options),
                    static_cast<T>(alpha), static_cast<T>(beta));
          check_equal_to_cpu("gemm", expected, actual, tolerance);
        }
  }
}
