// pnn/cpu/linalg.hpp: the CPU's matrix products, C = alpha * op(A) * op(B) + beta * C, and column sums.
//
// Float products run pnn's own packed GEMM (cpu/gemm.hpp), which is faster than Eigen's on the skinny
// shapes of training; other element types map the views into Eigen without copying (Eigen::Map) so
// Eigen's blocked GEMM runs directly on pnn's storage. Both use Eigen::nbThreads() OpenMP threads.
#pragma once

#include "pnn/cpu/simd.hpp"
#include <algorithm>
#include <vector>

#include "pnn/core/canonical_sum.hpp"
#include "pnn/core/linalg.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/device.hpp"
#include "pnn/cpu/gemm.hpp"

namespace pnn {

namespace cpu_linalg {
template <class T>
using RowMajorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using ConstRowMajorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

template <class T>
ConstRowMajorMap<T> map(TensorView<const T, 2, cpu> m) {
  return ConstRowMajorMap<T>(m.data(), m.dim(0), m.dim(1));
}

// The m x k view op(A) of a stored matrix, as cpu_gemm reads it: a transpose swaps the strides.
inline cpu_gemm::StridedMatrix strided(TensorView<const float, 2, cpu> stored, bool transpose) {
  return transpose ? cpu_gemm::StridedMatrix{stored.data(), 1, stored.dim(1)}
                   : cpu_gemm::StridedMatrix{stored.data(), stored.dim(1), 1};
}

// C = alpha * op(A) * op(B) + beta * C through Eigen, for shapes already checked by gemm(). This is the
// path for every element type but float, and the reference pnn's float kernel is measured against.
template <class T>
void eigen_gemm(TensorView<const T, 2, cpu> a, TensorView<const T, 2, cpu> b, TensorView<T, 2, cpu> c,
                const GemmOptions& options) {
  const index m = c.dim(0), n = c.dim(1);
  const index k = options.transpose_a ? a.dim(0) : a.dim(1);
  RowMajorMap<T> cm(c.data(), m, n);
  if (m == 0 || n == 0) return;
  const T alpha = static_cast<T>(options.alpha);
  if (options.beta == 0) {
    if (k == 0) {
      cm.setZero();
      return;
    }
  } else if (options.beta != 1) {
    cm *= static_cast<T>(options.beta);
  }
  if (k == 0) return;
  const auto am = map<T>(a);
  const auto bm = map<T>(b);
  auto run = [&](const auto& lhs, const auto& rhs) {
    if (options.beta == 0) cm.noalias() = alpha * lhs * rhs;
    else cm.noalias() += alpha * lhs * rhs;
  };
  if (!options.transpose_a && !options.transpose_b) run(am, bm);
  else if (!options.transpose_a && options.transpose_b) run(am, bm.transpose());
  else if (options.transpose_a && !options.transpose_b) run(am.transpose(), bm);
  else run(am.transpose(), bm.transpose());
}
}  // namespace cpu_linalg

template <class T>
void gemm(TensorView<const T, 2, cpu> a, TensorView<const T, 2, cpu> b, TensorView<T, 2, cpu> c,
          const GemmOptions& options = {}) {
  const auto [m, n, k] = detail::gemm_shape(a, b, c, options);
  if constexpr (std::is_same_v<T, float>) {
    cpu_gemm::sgemm(m, n, k, static_cast<float>(options.alpha), cpu_linalg::strided(a, options.transpose_a),
                    cpu_linalg::strided(b, options.transpose_b), static_cast<float>(options.beta), c.data(), n,
                    Eigen::nbThreads());
  } else {
    cpu_linalg::eigen_gemm<T>(a, b, c, options);
  }
}

// c += a^T b over a batch's pieces, in the canonical tree (core/linalg.hpp's add_batch_product): pnn's
// float kernel keeps each tile's subtrees on a short stack in L1 (cpu/gemm.hpp, DepthPieces), so a weight
// gradient costs one pass over c rather than a product and an addition per piece. False, computing
// nothing, where the kernel cannot (a depth beyond one slice): add_batch_product then adds up leaves.
inline bool add_batch_product_in_one_pass(TensorView<const float, 2, cpu> a, TensorView<const float, 2, cpu> b,
                                          TensorView<float, 2, cpu> c, const BatchPieces& pieces,
                                          index rows_per_sample) {
  const auto [m, n, k] = detail::gemm_shape(a, b, c, {.transpose_a = true});
  if (pieces.count > cpu_gemm::DepthPieces::max_pieces) return false;
  cpu_gemm::DepthPieces depth;
  depth.count = pieces.count;
  for (int i = 0; i < pieces.count; ++i) depth.ends[i] = pieces.end(i) * rows_per_sample;
  return cpu_gemm::sgemm_pieces(m, n, k, 1.0f, cpu_linalg::strided(a, true), cpu_linalg::strided(b, false), 1.0f,
                                c.data(), n, Eigen::nbThreads(), depth);
}

// dst += the canonical batch sum of m's rows (core/linalg.hpp's add_batch_column_sums) in one pass: each
// piece's rows are added in order into a leaf, from zero, and the leaves merge on a stack of rows in
// scratch memory, as BatchSum merges them, without a call per leaf.
template <class T>
void add_batch_column_sums_in_one_pass(TensorView<const T, 2, cpu> m, TensorView<T, 1, cpu> dst,
                                       const BatchPieces& pieces, index rows_per_sample) {
  const index n = m.dim(1);
  PNN_CHECK(dst.size() == n, ShapeError, "add_batch_column_sums: ", n, " columns into ", dst.size(), " elements");
  thread_local std::vector<T> scratch;
  scratch.resize(static_cast<std::size_t>((batch_chunks + 2) * n));
  auto slot = [&](std::size_t i) { return scratch.data() + static_cast<index>(i) * n; };
  auto add = [&](std::size_t left, std::size_t right) {
    T* into = slot(left);
    const T* from = slot(right);
    for (index j = 0; j < n; ++j) into[j] = into[j] + from[j];
    return left;
  };
  BinaryCounterTree<std::size_t, decltype(add)> tree(add);
  for (int piece = 0; piece < pieces.count; ++piece) {
    T* leaf = slot(tree.depth());
    std::fill(leaf, leaf + n, T(0));
    for (index i = pieces.begin(piece) * rows_per_sample; i < pieces.end(piece) * rows_per_sample; ++i) {
      const T* row = m.data() + i * n;
      for (index j = 0; j < n; ++j) leaf[j] = leaf[j] + row[j];
    }
    tree.push(tree.depth());
  }
  if (pieces.count == 0) return;
  const T* total = slot(tree.total());
  T* out = dst.data();
  for (index j = 0; j < n; ++j) out[j] = out[j] + total[j];
}

// dst[j] += sum over rows i of m(i, j): the bias gradient of a batch.
template <class T>
void add_column_sums(TensorView<const T, 2, cpu> m, TensorView<T, 1, cpu> dst) {
  PNN_CHECK(dst.size() == m.dim(1), ShapeError, "add_column_sums: ", m.dim(1), " columns into ", dst.size(),
            " elements");
  Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>> out(dst.data(), m.dim(1));
  for (index i = 0; i < m.dim(0); ++i)
    out += Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(m.data() + i * m.dim(1), m.dim(1));
}

}  // namespace pnn
