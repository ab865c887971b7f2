// The CUDA executor, reductions, cuBLAS products and device memory against the CPU, on awkward sizes
// (empty, one element, around the block size, above 2^24), and the errors the backend raises.
#include <cuda_runtime.h>

#include <chrono>
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

// Element counts around the block size (256), the grid-stride loop, and beyond 2^24.
const std::vector<pnn::index> awkward_sizes{0, 1, 2, 255, 256, 257, 1000, 65537, (pnn::index{1} << 24) + 3};

// The same expression over either device: every unary and binary operation, scalars on both sides.
template <class X, class Y>
auto composite(const X& x, const Y& y) {
  return relu(x * 2.0f - y) + sigmoid(y) * tanh(x) - exp(-square(x)) + abs(y) / sqrt(abs(x) + 1.5f) + max(x, y) -
         min(x, 0.25f) + log(x + 2.0f) * rsqrt(y + 3.0f) + step(x) - 0.5f / (x + 4.0f);
}

// Keeps one GPU thread busy for `nanoseconds` of the device's global timer.
__global__ void spin_kernel(long long nanoseconds) {
  long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  while (now - start < nanoseconds);
}

}  // namespace

TEST_CASE("cuda.errors_name_the_failing_call") {
  // No GPU needed: these calls fail with or without one.
  try {
    PNN_CUDA_CHECK(cudaSetDevice(-1));
    FAIL("cudaSetDevice(-1) succeeded");
  } catch (const CudaError& error) {
    const std::string message = error.what();
    CHECK_MESSAGE(message.find("cudaSetDevice(-1) failed: ") == 0, message);
    CHECK_MESSAGE(message.find("test_executor_memory.cu:") != std::string::npos, message);
  }
  CHECK_THROWS_WITH_AS(cuda_detail::check(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx(handle, ...)", "f.cu", 7),
                       doctest::Contains("cublasGemmEx(handle, ...) failed: "), CudaError);
  CHECK_THROWS_WITH_AS(cuda_detail::check(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx(handle, ...)", "f.cu", 7),
                       doctest::Contains("CUBLAS_STATUS_INVALID_VALUE"), CudaError);
}

TEST_CASE("cuda.device_count_explains_an_absent_device") {
  std::string reason;
  const int devices = cuda_device_count(&reason);
  CHECK(devices >= 0);
  CHECK(cuda_available() == (devices > 0));
  if (devices == 0) CHECK_MESSAGE(!reason.empty(), "no device and no reason given");
  // With a device, a failed query would not leak into the next launch check (without a driver, every
  // call, cudaGetLastError included, reports the missing driver).
  if (devices > 0) CHECK(cudaGetLastError() == cudaSuccess);
}

TEST_CASE("cuda.without_a_device_allocation_throws" * doctest::skip(testing::gpu_count() > 0)) {
  CHECK_THROWS_AS((Tensor<float, 1, cuda>(Extents<1>{16})), CudaError);
}

// ----- the executor --------------------------------------------------------------------------------------

TEST_CASE("cuda.executor.awkward_sizes" * needs_gpu()) {
  for (const pnn::index n : awkward_sizes) {
    CAPTURE(n);
    const auto x = random_tensor<float>(Extents<1>{n}, 1);
    const auto y = random_tensor<float>(Extents<1>{n}, 2);
    const auto x_device = to_device(x), y_device = to_device(y);
    const Tensor<float, 1> expected = composite(x, y);
    Tensor<float, 1, cuda> actual(Extents<1>{n});
    actual = composite(x_device, y_device);
    check_close("composite expression", expected, actual, 1e-5);
    // Into a view, and reading the destination itself.
    actual.view() = actual * 0.5f + x_device;
    const Tensor<float, 1> expected_again = expected * 0.5f + x;
    check_close("in place", expected_again, actual, 1e-5);
  }
}

TEST_CASE("cuda.executor.each_operation" * needs_gpu()) {
  const auto x = random_tensor<float>(Extents<1>{1000}, 3, -3, 3);
  const auto positive = random_tensor<float>(Extents<1>{1000}, 4, 0.1, 5);
  const auto xd = to_device(x), pd = to_device(positive);
  // CUDA's tanhf, expf, logf are within 2 ulp; Eigen's vectorised tanh, logistic, exp and rsqrt are
  // approximations of their own. A wrong function is off by far more than 1e-5.
  auto check = [&](const char* what, const Tensor<float, 1>& expected, const Tensor<float, 1, cuda>& actual) {
    check_close(what, expected, actual, 1e-5);
  };
  check("negate", -x, Tensor<float, 1, cuda>(-xd));
  check("relu", relu(x), Tensor<float, 1, cuda>(relu(xd)));
  check("step", step(x), Tensor<float, 1, cuda>(step(xd)));
  check("tanh", tanh(x), Tensor<float, 1, cuda>(tanh(xd)));
  check("sigmoid", sigmoid(x), Tensor<float, 1, cuda>(sigmoid(xd)));
  check("exp", exp(x), Tensor<float, 1, cuda>(exp(xd)));
  check("log", log(positive), Tensor<float, 1, cuda>(log(pd)));
  check("sqrt", sqrt(positive), Tensor<float, 1, cuda>(sqrt(pd)));
  check("rsqrt", rsqrt(positive), Tensor<float, 1, cuda>(rsqrt(pd)));
  check("abs", abs(x), Tensor<float, 1, cuda>(abs(xd)));
  check("square", square(x), Tensor<float, 1, cuda>(square(xd)));
  check("add", x + positive, Tensor<float, 1, cuda>(xd + pd));
  check("subtract", 2.0f - x, Tensor<float, 1, cuda>(2.0f - xd));
  check("multiply", x * 3.0f, Tensor<float, 1, cuda>(xd * 3.0f));
  check("divide", 1.0f / positive, Tensor<float, 1, cuda>(1.0f / pd));
  check("maximum", max(0.5f, x), Tensor<float, 1, cuda>(max(0.5f, xd)));
  check("minimum", min(x, positive), Tensor<float, 1, cuda>(min(xd, pd)));
}

TEST_CASE("cuda.executor.broadcasting" * needs_gpu()) {
  SUBCASE("a bias over every row of a batch") {
    const auto x = random_tensor<float>(Extents<2>{7, 13}, 5);
    const auto bias = random_tensor<float>(Extents<1>{13}, 6);
    const Tensor<float, 2> expected = relu(x + bias);
    Tensor<float, 2, cuda> actual(x.shape());
    actual = relu(to_device(x) + to_device(bias));
    check_close("relu(x + b)", expected, actual, 0);
  }
  SUBCASE("trailing dimensions of a rank-3 tensor, on either side") {
    const auto x = random_tensor<float>(Extents<3>{4, 5, 6}, 7);
    const auto plane = random_tensor<float>(Extents<2>{5, 6}, 8);
    const auto row = random_tensor<float>(Extents<1>{6}, 9);
    const Tensor<float, 3> expected = (plane * x - row) / (row + 2.0f);
    Tensor<float, 3, cuda> actual(x.shape());
    const auto rd = to_device(row);
    actual = (to_device(plane) * to_device(x) - rd) / (rd + 2.0f);
    check_close("broadcast", expected, actual, 1e-6);
  }
  SUBCASE("a broadcast assignment fills every row") {
    const auto bias = random_tensor<float>(Extents<1>{9}, 10);
    Tensor<float, 2, cuda> rows(Extents<2>{300, 9});
    rows.view() = to_device(bias);
    const auto host = to_host(rows);
    for (pnn::index r = 0; r < 300; ++r)
      for (pnn::index c = 0; c < 9; ++c) REQUIRE(host(r, c) == bias[c]);
  }
  SUBCASE("shapes that do not broadcast are rejected before any launch") {
    Tensor<float, 2, cuda> a(Extents<2>{3, 4}), b(Extents<2>{3, 5});
    CHECK_THROWS_AS(a + b, ShapeError);
    Tensor<float, 1, cuda> wrong(Extents<1>{3});
    CHECK_THROWS_AS(a.view() = wrong, ShapeError);
  }
}

TEST_CASE("cuda.executor.evaluate_runs_assignments_in_order" * needs_gpu()) {
  for (const pnn::index n : {pnn::index{0}, pnn::index{1}, pnn::index{257}, pnn::index{100003}}) {
    CAPTURE(n);
    auto v = random_tensor<float>(Extents<1>{n}, 11);
    auto w = random_tensor<float>(Extents<1>{n}, 12);
    const auto g = random_tensor<float>(Extents<1>{n}, 13);
    auto vd = to_device(v), wd = to_device(w);
    const auto gd = to_device(g);
    // The second assignment reads the velocity the first one just wrote, element by element.
    evaluate(into(v, 0.9f * v + g), into(w, w - 0.1f * v));
    evaluate(into(vd, 0.9f * vd + gd), into(wd, wd - 0.1f * vd));
    check_close("velocity", v, vd, 1e-6);  // nvcc fuses 0.9 v + g into one FMA, the host rounds twice
    check_close("weights", w, wd, 1e-6);
  }
  Tensor<float, 1, cuda> a(Extents<1>{4}), b(Extents<1>{5});
  CHECK_THROWS_AS(evaluate(into(a, a * 2.0f), into(b, b * 2.0f)), ShapeError);
}

TEST_CASE("cuda.executor.reductions" * needs_gpu()) {
  for (const pnn::index n : awkward_sizes) {
    CAPTURE(n);
    const auto x = random_tensor<float>(Extents<1>{n}, 14, -2, 3);
    const auto xd = to_device(x);
    double exact = 0, magnitude = 0, squares = 0;
    for (pnn::index i = 0; i < n; ++i) {
      exact += x[i];
      magnitude += std::abs(x[i]);
      squares += static_cast<double>(x[i]) * x[i];
    }
    // The device adds in double: within float rounding of the exact sum, whatever n.
    CHECK(std::abs(static_cast<double>(sum(xd)) - exact) <= 1e-6 * magnitude + 1e-30);
    CHECK(std::abs(static_cast<double>(squared_norm(xd)) - squares) <= 1e-6 * squares + 1e-30);
    CHECK(static_cast<double>(norm(xd)) == doctest::Approx(std::sqrt(squares)).epsilon(1e-6));
    CHECK(maximum(xd) == maximum(x));
    CHECK(minimum(xd) == minimum(x));
    CHECK(maximum(xd * 2.0f - 1.0f) == maximum(x * 2.0f - 1.0f));
    // The same bits every time: the order of the additions depends on n only.
    const float first = sum(xd * xd + 1.0f);
    CHECK(sum(xd * xd + 1.0f) == first);
  }
  const auto doubles = random_tensor<double>(Extents<2>{333, 77}, 15);
  CHECK(sum(to_device(doubles)) == doctest::Approx(sum(doubles)).epsilon(1e-12));
}

// ----- cuBLAS products and column sums --------------------------------------------------------------------

TEST_CASE("cuda.linalg.gemm_matches_cpu" * needs_gpu()) {
  SUBCASE("every transpose, alpha and beta") {
    const pnn::index m = 37, n = 23, k = 19;
    for (const bool transpose_a : {false, true}) {
      for (const bool transpose_b : {false, true}) {
        CAPTURE(transpose_a);
        CAPTURE(transpose_b);
        const auto a = random_tensor<float>(transpose_a ? Extents<2>{k, m} : Extents<2>{m, k}, 16);
        const auto b = random_tensor<float>(transpose_b ? Extents<2>{n, k} : Extents<2>{k, n}, 17);
        auto c = random_tensor<float>(Extents<2>{m, n}, 18);
        auto cd = to_device(c);
        const GemmOptions options{.transpose_a = transpose_a, .transpose_b = transpose_b, .alpha = 0.75, .beta = 0.5};
        gemm<float>(a.view(), b.view(), c.view(), options);
        gemm<float>(to_device(a).view(), to_device(b).view(), cd.view(), options);
        check_close("C = 0.75 op(A) op(B) + 0.5 C", c, cd, 1e-5);
      }
    }
  }
  SUBCASE("double, and beta 0 overwrites NaN") {
    const auto a = random_tensor<double>(Extents<2>{5, 64}, 19);
    const auto b = random_tensor<double>(Extents<2>{64, 3}, 20);
    Tensor<double, 2> c(Extents<2>{5, 3});
    Tensor<double, 2, cuda> cd(Extents<2>{5, 3});
    cd.view() = cd * 0.0 + NAN;
    gemm<double>(a.view(), b.view(), c.view());
    gemm<double>(to_device(a).view(), to_device(b).view(), cd.view());
    check_close("double product", c, cd, 1e-12);
  }
  SUBCASE("an empty inner dimension scales C by beta") {
    Tensor<float, 2, cuda> a(Extents<2>{4, 0}), b(Extents<2>{0, 3});
    auto c = random_tensor<float>(Extents<2>{4, 3}, 21);
    auto cd = to_device(c);
    gemm<float>(a.view(), b.view(), cd.view(), {.beta = 2});
    const Tensor<float, 2> expected = c * 2.0f;
    check_close("beta C", expected, cd, 0);
    gemm<float>(a.view(), b.view(), cd.view(), {});
    CHECK(maximum(abs(cd)) == 0);
  }
  SUBCASE("shapes that do not fit are reported") {
    Tensor<float, 2, cuda> a(Extents<2>{4, 5}), b(Extents<2>{6, 3}), c(Extents<2>{4, 3});
    CHECK_THROWS_AS(gemm<float>(a.view(), b.view(), c.view()), ShapeError);
  }
}

TEST_CASE("cuda.linalg.column_sums" * needs_gpu()) {
  // One chunk of rows, several, and the most chunks (256 rows each, at most 256 of them).
  for (const pnn::index rows : {pnn::index{1}, pnn::index{7}, pnn::index{300}, pnn::index{70001}}) {
    for (const pnn::index columns : {pnn::index{1}, pnn::index{33}, pnn::index{130}}) {
      CAPTURE(rows);
      CAPTURE(columns);
      const auto m = random_tensor<float>(Extents<2>{rows, columns}, 22);
      const auto destination = random_tensor<float>(Extents<1>{columns}, 23);
      // The reference adds in double: a float sum down 70001 rows is off by 9.3e-6 of the largest sum,
      // nearly the whole tolerance, while the device's chunks of short float sums (simulated on the host
      // with these seeds) are off by at most 9e-7.
      Tensor<float, 1> expected(Extents<1>{columns});
      for (pnn::index c = 0; c < columns; ++c) {
        double total = destination[c];
        for (pnn::index r = 0; r < rows; ++r) total += m(r, c);
        expected[c] = static_cast<float>(total);
      }
      auto dd = to_device(destination);
      add_column_sums<float>(to_device(m).view(), dd.view());
      check_close("column sums", expected, dd, 1e-5);
    }
  }
}

// ----- memory ------------------------------------------------------------------------------------------

TEST_CASE("cuda.memory.copies" * needs_gpu()) {
  SUBCASE("round trips keep every bit") {
    const auto floats = random_tensor<float>(Extents<2>{17, 3}, 24);
    CHECK(testing::scaled_difference(testing::const_view(floats), testing::const_view(to_host(to_device(floats)))) ==
          0);
    Tensor<std::int32_t, 1> ints(Extents<1>{1001});
    for (pnn::index i = 0; i < ints.size(); ++i) ints[i] = static_cast<std::int32_t>(i * 7919 - 50000);
    const auto back = to_host(to_device(ints));
    for (pnn::index i = 0; i < ints.size(); ++i) REQUIRE(back[i] == ints[i]);
    Tensor<double, 1> empty(Extents<1>{0});
    CHECK(to_host(to_device(empty)).size() == 0);
  }
  SUBCASE("device to device, deep tensor copies, rows") {
    const auto x = random_tensor<float>(Extents<2>{10, 4}, 25);
    const auto xd = to_device(x);
    Tensor<float, 2, cuda> copied(xd);  // a deep copy
    Tensor<float, 2, cuda> other(Extents<2>{10, 4});
    copy(testing::const_view(xd), other.view());
    copied.view() = copied * 2.0f;  // leaves the original alone
    check_close("original", x, xd, 0);
    check_close("device to device", x, other, 0);
    const Tensor<float, 2> rows = x.view().rows(3, 4);
    Tensor<float, 2, cuda> rows_device(Extents<2>{4, 4});
    copy(testing::const_view(xd).rows(3, 4), rows_device.view());
    check_close("rows", rows, rows_device, 0);
  }
  SUBCASE("from page-locked memory the caller may reuse its buffer at once") {
    float* pinned = nullptr;
    REQUIRE(cudaMallocHost(&pinned, sizeof(float) * 4096) == cudaSuccess);
    for (int i = 0; i < 4096; ++i) pinned[i] = static_cast<float>(i);
    Tensor<float, 1, cuda> device(Extents<1>{4096});
    copy(TensorView<const float, 1>(pinned, {4096}), device.view());
    for (int i = 0; i < 4096; ++i) pinned[i] = -1;  // after copy() returned: must not reach the device
    const auto host = to_host(device);
    for (int i = 0; i < 4096; ++i) REQUIRE(host[i] == static_cast<float>(i));
    cudaFreeHost(pinned);
  }
  SUBCASE("sizes must agree") {
    Tensor<float, 1> host(Extents<1>{5});
    Tensor<float, 1, cuda> device(Extents<1>{6});
    CHECK_THROWS_AS(copy(testing::const_view(host), device.view()), ShapeError);
    CHECK_THROWS_AS(copy(testing::const_view(device), host.view()), ShapeError);
  }
  SUBCASE("new device tensors are zero") {
    Tensor<float, 2, cuda> zeros(Extents<2>{3, 1000});
    CHECK(maximum(abs(zeros)) == 0);
  }
}

TEST_CASE("cuda.memory.freed_blocks_are_reused" * needs_gpu()) {
  constexpr pnn::index elements = pnn::index{1} << 22;  // 16 MiB
  // The earlier test cases leave the pool holding far more than 16 MiB free, which would serve every
  // allocation below whether freed blocks are reused or not: give the free memory back to the driver
  // first, once the frees enqueued on the streams have run.
  PNN_CUDA_CHECK(cudaDeviceSynchronize());
  PNN_CUDA_CHECK(cudaMemPoolTrimTo(cuda_memory_pool(cuda_detail::current_device()), 0));
  { Tensor<float, 1, cuda> first(Extents<1>{elements}); }
  cuda_synchronize();
  const std::uint64_t reserved = cuda_pool_reserved_bytes();
  CHECK(reserved >= sizeof(float) * elements);
  for (int round = 0; round < 20; ++round) {
    Tensor<float, 1, cuda> again(Extents<1>{elements});
    again.view() = again + 1.0f;
  }
  cuda_synchronize();
  CHECK(cuda_pool_reserved_bytes() == reserved);
}

TEST_CASE("cuda.memory.tensors_come_from_pnns_own_pool" * needs_gpu()) {
  // Not from the device's default pool, whose settings belong to every cudaMallocAsync of the process.
  const int device = cuda_detail::current_device();
  cudaMemPool_t default_pool = nullptr;
  PNN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&default_pool, device));
  REQUIRE(cuda_memory_pool(device) != default_pool);
  const auto used = [](cudaMemPool_t pool) {
    std::uint64_t bytes = 0;
    PNN_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &bytes));
    return bytes;
  };
  cuda_synchronize();
  const std::uint64_t own_before = used(cuda_memory_pool(device)), default_before = used(default_pool);
  std::uint64_t release_threshold = 0;
  PNN_CUDA_CHECK(
      cudaMemPoolGetAttribute(cuda_memory_pool(device), cudaMemPoolAttrReleaseThreshold, &release_threshold));
  CHECK(release_threshold == UINT64_MAX);  // freed blocks are kept for reuse
  {
    Tensor<float, 1, cuda> tensor(Extents<1>{pnn::index{1} << 22});  // 16 MiB
    cuda_synchronize();
    CHECK(used(cuda_memory_pool(device)) >= own_before + (std::uint64_t{16} << 20));
    CHECK(used(default_pool) == default_before);
    cudaPointerAttributes attributes{};
    PNN_CUDA_CHECK(cudaPointerGetAttributes(&attributes, tensor.data()));
    CHECK(attributes.type == cudaMemoryTypeDevice);
    CHECK(attributes.device == device);
  }
  cuda_synchronize();
  CHECK(used(cuda_memory_pool(device)) == own_before);
}

TEST_CASE("cuda.timeline.measures_the_device_not_the_host" * needs_gpu()) {
  // The first launch loads the kernel and the first mark creates an event: not what this times.
  spin_kernel<<<1, 1, 0, cuda_stream()>>>(0);
  PNN_CUDA_CHECK_LAUNCH("spin_kernel");
  Timeline<cuda> timeline;
  (void)timeline.mark();
  timeline.wait();
  timeline.clear();

  const auto host_start = std::chrono::steady_clock::now();
  const auto before = timeline.mark();
  spin_kernel<<<1, 1, 0, cuda_stream()>>>(500'000'000);  // 0.5 s
  PNN_CUDA_CHECK_LAUNCH("spin_kernel");
  const auto after = timeline.mark();
  const double enqueue_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - host_start).count();
  // Taking marks does not wait for the device. Under compute-sanitizer (scripts/gpu-check.sh says so) a
  // launch may wait for the kernel, which is the tool's doing, not pnn's.
  if (!testing::under_sanitizer()) {
    CHECK(enqueue_seconds < 0.25);
    CHECK_FALSE(timeline.ready());
    CHECK_THROWS_AS((void)timeline.seconds(before, after), CudaError);  // not passed yet: cudaErrorNotReady
  }
  timeline.wait();
  CHECK(timeline.ready());
  const double spun = timeline.seconds(before, after);
  CHECK(spun >= 0.49);
  CHECK(spun < 5.0);
  CHECK(timeline.seconds(after, before) == doctest::Approx(-spun));

  // Cleared, the timeline records its events again.
  timeline.clear();
  const auto first = timeline.mark();
  const auto second = timeline.mark();
  CHECK(second == first + 1);
  timeline.wait();
  CHECK(timeline.seconds(first, second) >= 0);
  CHECK(timeline.seconds(first, second) < 0.1);
  CHECK_THROWS_AS((void)timeline.seconds(first, 2), ArgumentError);
}
