// gemm(): pnn's float kernel (cpu/gemm.hpp) and the Eigen path for double against a plain triple
// loop in double precision, over transposes, awkward sizes, alpha and beta, every kernel shape and
// packing choice; plus bit-for-bit determinism across calls and thread counts, and shape checks.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <iterator>
#include <limits>
#include <cstring>
#include <pnn/core/batch_sum.hpp>
#include <pnn/cpu/cpu.hpp>
#include <random>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

using Index = pnn::index;
using pnn::Tensor;
namespace cpu_gemm = pnn::cpu_gemm;
namespace gemm_detail = pnn::cpu_gemm::detail;

namespace {

constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();

// One product to check: sizes after transposition, the options, and how C starts.
struct Problem {
  Index m, n, k;
  pnn::GemmOptions options;
};

std::string describe(const Problem& p) {
  return std::to_string(p.m) + "x" + std::to_string(p.n) + "x" + std::to_string(p.k) +
         (p.options.transpose_a ? " A^T" : " A") + (p.options.transpose_b ? " B^T" : " B") +
         " alpha=" + std::to_string(p.options.alpha) + " beta=" + std::to_string(p.options.beta);
}

// Operands with their stored shapes, values in [-1, 1], each placed between NaN guards inside a larger
// buffer: a kernel that read outside an operand and used the value would turn the result into NaN, and
// one that wrote outside C would change a guard.
struct Operands {
  static constexpr Index guard = 64;
  std::vector<float> a_storage, b_storage, c_storage;
  Index a_rows, a_columns, b_rows, b_columns;
  const Problem& problem;

  Operands(const Problem& p, unsigned seed, bool c_starts_as_nan) : problem(p) {
    a_rows = p.options.transpose_a ? p.k : p.m;
    a_columns = p.options.transpose_a ? p.m : p.k;
    b_rows = p.options.transpose_b ? p.n : p.k;
    b_columns = p.options.transpose_b ? p.k : p.n;
    std::mt19937 generator(seed);
    std::uniform_real_distribution<float> uniform(-1, 1);
    auto fill = [&](std::vector<float>& storage, Index size, bool nan_inside) {
      storage.assign(static_cast<std::size_t>(size + 2 * guard), nan_value);
      for (Index i = 0; i < size; ++i)
        storage[static_cast<std::size_t>(guard + i)] = nan_inside ? nan_value : uniform(generator);
    };
    fill(a_storage, a_rows * a_columns, false);
    fill(b_storage, b_rows * b_columns, false);
    fill(c_storage, p.m * p.n, c_starts_as_nan);
  }
  float* a() { return a_storage.data() + guard; }
  float* b() { return b_storage.data() + guard; }
  float* c() { return c_storage.data() + guard; }
  pnn::TensorView<const float, 2> a_view() { return {a(), {a_rows, a_columns}}; }
  pnn::TensorView<const float, 2> b_view() { return {b(), {b_rows, b_columns}}; }
  pnn::TensorView<float, 2> c_view() { return {c(), {problem.m, problem.n}}; }
  cpu_gemm::StridedMatrix a_strided() { return pnn::cpu_linalg::strided(a_view(), problem.options.transpose_a); }
  cpu_gemm::StridedMatrix b_strided() { return pnn::cpu_linalg::strided(b_view(), problem.options.transpose_b); }

  bool guards_intact() const {
    const Index size = problem.m * problem.n;
    for (Index i = 0; i < guard; ++i)
      if (!std::isnan(c_storage[static_cast<std::size_t>(i)]) ||
          !std::isnan(c_storage[static_cast<std::size_t>(guard + size + i)]))
        return false;
    return true;
  }
};

// The product in double precision, with the bound on float rounding for each element:
// 1e-5 * sqrt(k + 1) times the sum of the magnitudes of its terms.
struct Reference {
  std::vector<double> value, bound;
};

Reference reference(Operands& operands, const std::vector<float>& c_before) {
  const Problem& p = operands.problem;
  Reference result;
  result.value.resize(static_cast<std::size_t>(p.m * p.n));
  result.bound.resize(result.value.size());
  const float* a = operands.a();
  const float* b = operands.b();
  const double tolerance = 1e-5 * std::sqrt(static_cast<double>(p.k) + 1);
  for (Index i = 0; i < p.m; ++i)
    for (Index j = 0; j < p.n; ++j) {
      double sum = 0, magnitude = 0;
      for (Index q = 0; q < p.k; ++q) {
        const double x = p.options.transpose_a ? a[q * p.m + i] : a[i * p.k + q];
        const double y = p.options.transpose_b ? b[j * p.k + q] : b[q * p.n + j];
        sum += x * y;
        magnitude += std::abs(x * y);
      }
      const std::size_t at = static_cast<std::size_t>(i * p.n + j);
      double expected = p.options.alpha * sum;
      magnitude = std::abs(p.options.alpha) * magnitude;
      if (p.options.beta != 0) {
        expected += p.options.beta * c_before[at];
        magnitude += std::abs(p.options.beta * c_before[at]);
      }
      result.value[at] = expected;
      result.bound[at] = tolerance * magnitude + 1e-30;
    }
  return result;
}

// A problem with its operands (C holding NaN when beta is 0) and its reference result; check() runs a
// multiplication on a fresh copy of C and compares. It returns false at the first failure, after
// reporting it, so a broken kernel does not flood the log.
struct Case {
  Operands operands;
  std::vector<float> c_start;
  Reference expected;

  explicit Case(const Problem& p)
      : operands(p, static_cast<unsigned>(p.m * 7919 + p.n * 104729 + p.k), p.options.beta == 0),
        c_start(operands.c(), operands.c() + p.m * p.n),
        expected(reference(operands, c_start)) {}

  template <class Multiply>
  bool check(Multiply&& multiply, const std::string& path) {
    const Problem& p = operands.problem;
    std::copy(c_start.begin(), c_start.end(), operands.c());
    multiply(operands);
    INFO(path, ": ", describe(p));
    if (!operands.guards_intact()) {
      FAIL_CHECK("wrote outside C");
      return false;
    }
    for (Index i = 0; i < p.m * p.n; ++i) {
      const float got = operands.c()[i];
      const std::size_t at = static_cast<std::size_t>(i);
      if (!(std::abs(got - expected.value[at]) <= expected.bound[at])) {
        FAIL_CHECK("C[", i / p.n, ", ", i % p.n, "] = ", got, ", expected ", expected.value[at], " +- ",
                   expected.bound[at]);
        return false;
      }
    }
    return true;
  }
};

template <class Multiply>
bool matches_reference(const Problem& p, Multiply&& multiply, const std::string& path) {
  Case problem_case(p);
  return problem_case.check(multiply, path);
}

// A representative sweep: each awkward size in each role against moderate other sizes, cubes, and some
// mixed large shapes; every transpose combination and four (alpha, beta) pairs.
std::vector<Problem> sweep() {
  const Index sizes[] = {0, 1, 2, 5, 7, 13, 17, 33, 64, 100, 257};
  std::vector<std::array<Index, 3>> shapes;
  for (Index s : sizes) {
    shapes.push_back({s, 17, 33});
    shapes.push_back({13, s, 7});
    shapes.push_back({33, 5, s});
    if (s <= 100) shapes.push_back({s, s, s});
  }
  for (auto shape : std::initializer_list<std::array<Index, 3>>{
           {257, 100, 64}, {100, 257, 13}, {64, 64, 257}, {7, 257, 100}, {257, 33, 2}, {1, 1, 257}, {2, 300, 600}})
    shapes.push_back(shape);
  const std::pair<double, double> scalings[] = {{1, 0}, {1, 1}, {1, 0.5}, {2, 0}, {2, 1}};
  std::vector<Problem> problems;
  std::size_t variant = 0;
  for (auto [m, n, k] : shapes)
    for (int transposes = 0; transposes < 4; ++transposes) {
      // Each shape and transpose pair gets two of the (alpha, beta) pairs, rotating through all of them.
      for (int twice = 0; twice < 2; ++twice) {
        const auto [alpha, beta] = scalings[variant++ % std::size(scalings)];
        problems.push_back({m,
                            n,
                            k,
                            {.transpose_a = (transposes & 1) != 0,
                             .transpose_b = (transposes & 2) != 0,
                             .alpha = alpha,
                             .beta = beta}});
      }
    }
  return problems;
}

// Checks one problem on a kernel shape under every packing choice for A and B.
template <class Shape>
bool check_every_plan(Case& problem_case, const std::string& name) {
  const gemm_detail::Packing choices[] = {gemm_detail::Packing::automatic, gemm_detail::Packing::pack,
                                          gemm_detail::Packing::in_place};
  const char* choice_names[] = {"automatic", "pack", "in place"};
  const Problem& p = problem_case.operands.problem;
  for (int a_choice = 0; a_choice < 3; ++a_choice)
    for (int b_choice = 0; b_choice < 3; ++b_choice) {
      const gemm_detail::Plan plan{choices[a_choice], choices[b_choice]};
      const std::string path = name + ", A " + choice_names[a_choice] + ", B " + choice_names[b_choice];
      auto multiply = [&](Operands& o) {
        gemm_detail::multiply<Shape>(p.m, p.n, p.k, static_cast<float>(p.options.alpha), o.a_strided(), o.b_strided(),
                                     static_cast<float>(p.options.beta), o.c(), p.n, 1, plan);
      };
      if (!problem_case.check(multiply, path)) return false;
    }
  return true;
}

std::vector<float> run_gemm(Operands& operands) {
  pnn::gemm<float>(operands.a_view(), operands.b_view(), operands.c_view(), operands.problem.options);
  return {operands.c(), operands.c() + operands.problem.m * operands.problem.n};
}

}  // namespace

TEST_CASE("gemm.float_matches_reference") {
  for (const Problem& p : sweep())
    if (!matches_reference(
            p, [&](Operands& o) { run_gemm(o); }, std::string("gemm<float>, ") + cpu_gemm::kernel_name()))
      break;
}

TEST_CASE("gemm.double_matches_reference") {
  for (const Problem& p : sweep()) {
    if (p.m * p.n * p.k > 300000) continue;
    Operands operands(p, 5, p.options.beta == 0);
    Tensor<double, 2> a(operands.a_rows, operands.a_columns), b(operands.b_rows, operands.b_columns), c(p.m, p.n);
    for (Index i = 0; i < a.size(); ++i) a[i] = operands.a()[i];
    for (Index i = 0; i < b.size(); ++i) b[i] = operands.b()[i];
    for (Index i = 0; i < c.size(); ++i) c[i] = operands.c()[i];
    const std::vector<float> c_before(operands.c(), operands.c() + p.m * p.n);
    const Reference expected = reference(operands, c_before);
    pnn::gemm<double>(a.view(), b.view(), c.view(), p.options);
    INFO(describe(p));
    for (Index i = 0; i < c.size(); ++i)
      REQUIRE(std::abs(c[i] - expected.value[static_cast<std::size_t>(i)]) <=
              1e-9 * (1 + std::abs(expected.value[static_cast<std::size_t>(i)])));
  }
}

// Every kernel shape runs here, whichever one this machine's flags select for gemm(): the AVX-512 and
// portable shapes are compiled with plain vector extensions where their instructions are missing, so
// their blocking, edge handling and packing are checked on any machine. Each packing choice is forced
// on every shape (an operand that cannot be read in place is packed whatever the plan says).
TEST_CASE("gemm.every_kernel_shape_and_packing_choice") {
  for (const Problem& p : sweep()) {
    Case problem_case(p);
    if (!check_every_plan<cpu_gemm::Avx2Shape>(problem_case, "6x16 shape") ||
        !check_every_plan<cpu_gemm::Avx512Shape>(problem_case, "12x32 shape") ||
        !check_every_plan<cpu_gemm::PortableShape>(problem_case, "6x8 shape"))
      break;
  }
}

TEST_CASE("gemm.long_depth") {
  // Batch-sized depths split into many slices, with C small: the weight gradients of convolutions.
  for (bool transpose_a : {false, true})
    for (Index k : {1000, 3001}) {
      const Problem p{16, 25, k, {.transpose_a = transpose_a, .transpose_b = false, .alpha = 1, .beta = 1}};
      CHECK(matches_reference(
          p, [&](Operands& o) { run_gemm(o); }, "gemm<float>"));
    }
}

TEST_CASE("gemm.beta_zero_ignores_nan_in_c_and_alpha_zero_ignores_a_and_b") {
  Problem p{13, 17, 33, {.transpose_a = false, .transpose_b = true, .alpha = 1, .beta = 0}};
  Operands operands(p, 3, true);
  run_gemm(operands);
  for (Index i = 0; i < p.m * p.n; ++i) REQUIRE(!std::isnan(operands.c()[i]));

  // With alpha == 0 the product is not formed: NaN in A and B does not reach C.
  Problem scaled{13, 17, 33, {.transpose_a = false, .transpose_b = false, .alpha = 0, .beta = 0.5}};
  Operands poisoned(scaled, 4, false);
  for (Index i = 0; i < 13 * 33; ++i) poisoned.a()[i] = nan_value;
  const std::vector<float> before(poisoned.c(), poisoned.c() + 13 * 17);
  run_gemm(poisoned);
  for (Index i = 0; i < 13 * 17; ++i) REQUIRE(poisoned.c()[i] == 0.5f * before[static_cast<std::size_t>(i)]);
}

TEST_CASE("gemm.zero_depth_scales_c") {
  for (double beta : {0.0, 1.0, 0.5}) {
    Problem p{5, 7, 0, {.transpose_a = false, .transpose_b = false, .alpha = 1, .beta = beta}};
    Operands operands(p, 9, false);
    const std::vector<float> before(operands.c(), operands.c() + 35);
    run_gemm(operands);
    for (Index i = 0; i < 35; ++i)
      REQUIRE(operands.c()[i] == static_cast<float>(beta) * before[static_cast<std::size_t>(i)]);
  }
}

TEST_CASE("gemm.deterministic") {
  const Problem problems[] = {
      {257, 100, 300, {.transpose_a = false, .transpose_b = true, .alpha = 1, .beta = 1}},
      {100, 257, 600, {.transpose_a = true, .transpose_b = false, .alpha = 1, .beta = 0}},
      {520, 70, 64, {.transpose_a = false, .transpose_b = false, .alpha = 2, .beta = 0.5}},
      {24, 1000, 300, {.transpose_a = true, .transpose_b = true, .alpha = 1, .beta = 0}},
  };
  for (const Problem& p : problems) {
    INFO(describe(p));
    Operands operands(p, 11, false);
    const std::vector<float> c_start(operands.c(), operands.c() + p.m * p.n);
    auto run_with = [&](int threads) {
      std::copy(c_start.begin(), c_start.end(), operands.c());
      gemm_detail::multiply<cpu_gemm::NativeShape>(p.m, p.n, p.k, static_cast<float>(p.options.alpha),
                                                   operands.a_strided(), operands.b_strided(),
                                                   static_cast<float>(p.options.beta), operands.c(), p.n, threads);
      return std::vector<float>(operands.c(), operands.c() + p.m * p.n);
    };
    const std::vector<float> first = run_with(1);
    // memcmp-equal, not approximately equal: the same bits on every call.
    CHECK(run_with(1) == first);
#if defined(_OPENMP)
    for (int threads : {2, 3, 4, 7}) {
      INFO(threads, " threads");
      // The product is large enough to be split, so the comparison is between different partitions of C.
      CHECK(gemm_detail::choose_split<cpu_gemm::NativeShape>(p.m, p.n, p.k, threads).threads() > 1);
      CHECK(run_with(threads) == first);
    }
#endif
  }
}

#if defined(_OPENMP)
TEST_CASE("gemm.thread_count_from_eigen_and_openmp") {
  // gemm() takes its thread count from Eigen::nbThreads(), i.e. OpenMP's unless Eigen's is set.
  const Problem p{257, 257, 257, {.transpose_a = false, .transpose_b = false, .alpha = 1, .beta = 0}};
  Operands operands(p, 13, true);
  const int openmp_threads = omp_get_max_threads();
  Eigen::setNbThreads(1);
  const std::vector<float> serial = run_gemm(operands);
  Eigen::setNbThreads(2);
  const std::vector<float> two = run_gemm(operands);
  Eigen::setNbThreads(0);  // back to OpenMP's count
  omp_set_num_threads(2);
  const std::vector<float> openmp_two = run_gemm(operands);
  omp_set_num_threads(openmp_threads);
  CHECK(two == serial);
  CHECK(openmp_two == serial);
}
#endif

TEST_CASE("gemm.shape_mismatch_throws") {
  Tensor<float, 2> a(3, 4), b(5, 6), c(3, 6);
  CHECK_THROWS_AS(pnn::gemm<float>(a.view(), b.view(), c.view()), pnn::ShapeError);
  Tensor<float, 2> b_ok(4, 6), c_wrong(3, 5);
  CHECK_THROWS_AS(pnn::gemm<float>(a.view(), b_ok.view(), c_wrong.view()), pnn::ShapeError);
  CHECK_THROWS_AS(pnn::gemm<float>(a.view(), b_ok.view(), c.view(), {.transpose_a = true}), pnn::ShapeError);
  CHECK_NOTHROW(pnn::gemm<float>(a.view(), b_ok.view(), c.view()));
  Tensor<double, 2> ad(3, 4), bd(5, 6), cd(3, 6);
  CHECK_THROWS_AS(pnn::gemm<double>(ad.view(), bd.view(), cd.view()), pnn::ShapeError);
}

namespace {
// dW += dy^T x with the depth (the batch) cut into a part's pieces (core/batch_sum.hpp): the kernel's tree
// against a product per piece, each into its own leaf, added up by BatchSum.
template <class Shape>
bool check_depth_pieces(Index m, Index n, const pnn::BatchPart& part, const gemm_detail::Plan& plan, int threads,
                        const std::string& name) {
  const Index k = part.count;
  std::mt19937 random(static_cast<unsigned>(m * 1000 + n * 10 + k));
  std::uniform_real_distribution<float> uniform(-1, 1);
  Tensor<float, 2> dy(k, m), x(k, n), c(m, n);
  for (Index i = 0; i < dy.size(); ++i) dy[i] = uniform(random) * std::pow(10.0f, uniform(random) * 3);
  for (Index i = 0; i < x.size(); ++i) x[i] = uniform(random);
  for (Index i = 0; i < c.size(); ++i) c[i] = uniform(random);
  const pnn::BatchPieces pieces = pnn::batch_pieces(part);

  pnn::BatchSum<float, pnn::cpu> sum;
  sum.start(m * n);
  for (int piece = 0; piece < pieces.count; ++piece) {
    const Index begin = pieces.begin(piece), rows = pieces.end(piece) - begin;
    const auto leaf = sum.leaf();
    gemm_detail::multiply<Shape>(m, n, rows, 1.0f, {dy.data() + begin * m, 1, m}, {x.data() + begin * n, n, 1}, 0.0f,
                                 leaf.data(), n, threads, plan);
    sum.push();
  }
  Tensor<float, 2> expected(c);
  const pnn::TensorView<float, 1> expected_flat(expected.data(), pnn::Extents<1>{m * n});
  sum.add_to(expected_flat);

  cpu_gemm::DepthPieces depth;
  depth.count = pieces.count;
  for (int i = 0; i < pieces.count; ++i) depth.ends[i] = pieces.end(i);
  // The tree on the product kernel's tile and on the tree kernel's (half the rows): a chain per element
  // does not depend on the tile.
  Tensor<float, 2> narrow(c);
  gemm_detail::multiply<Shape>(m, n, k, 1.0f, {dy.data(), 1, m}, {x.data(), n, 1}, 1.0f, c.data(), n, threads, plan,
                               &depth);
  gemm_detail::multiply<cpu_gemm::TreeShapeOf<Shape>>(m, n, k, 1.0f, {dy.data(), 1, m}, {x.data(), n, 1}, 1.0f,
                                                      narrow.data(), n, threads, plan, &depth);
  INFO(name << ": " << m << "x" << n << ", rows [" << part.begin << ", " << part.begin + part.count << ") of "
            << part.batch << ", " << threads << " thread(s)");
  const auto bytes = sizeof(float) * static_cast<std::size_t>(c.size());
  const bool same =
      std::memcmp(c.data(), expected.data(), bytes) == 0 && std::memcmp(narrow.data(), expected.data(), bytes) == 0;
  CHECK(same);
  return same;
}
}  // namespace

TEST_CASE("gemm.depth_pieces_give_products_per_piece_added_in_the_tree") {
  const gemm_detail::Packing choices[] = {gemm_detail::Packing::automatic, gemm_detail::Packing::pack,
                                          gemm_detail::Packing::in_place};
  const pnn::BatchPart parts[] = {pnn::BatchPart::whole(64),
                                  pnn::BatchPart::whole(13),
                                  pnn::BatchPart::whole(5),
                                  {60, 0, 30},
                                  {60, 20, 20},
                                  {96, 48, 48}};
  const std::array<std::array<Index, 2>, 4> sizes{{{1, 1}, {7, 13}, {37, 70}, {256, 128}}};
  for (const auto& part : parts)
    for (const auto& [m, n] : sizes)
      for (const auto a_choice : choices)
        for (const auto b_choice : choices)
          for (const int threads : {1, 2}) {
            const gemm_detail::Plan plan{a_choice, b_choice};
            if (!check_depth_pieces<cpu_gemm::Avx2Shape>(m, n, part, plan, threads, "6x16 shape") ||
                !check_depth_pieces<cpu_gemm::Avx512Shape>(m, n, part, plan, threads, "12x32 shape") ||
                !check_depth_pieces<cpu_gemm::PortableShape>(m, n, part, plan, threads, "6x8 shape"))
              return;
          }
  // The public entry point declines a depth beyond one slice, where pieces would be cut into slices.
  Tensor<float, 2> a(1000, 4), b(1000, 4), c(4, 4);
  cpu_gemm::DepthPieces two;
  two.count = 2;
  two.ends[0] = 500;
  two.ends[1] = 1000;
  CHECK_FALSE(cpu_gemm::sgemm_pieces(4, 4, 1000, 1.0f, {a.data(), 1, 4}, {b.data(), 4, 1}, 1.0f, c.data(), 4, 1, two));
}
