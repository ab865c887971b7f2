// pnn/core/linalg.hpp: matrix products on tensor views, C = alpha * op(A) * op(B) + beta * C.
//
// The CPU version maps the views into Eigen without copying (Eigen::Map) so Eigen's blocked GEMM runs
// directly on pnn's storage; the CUDA version (include/pnn/cuda/) calls cuBLAS. Layers call gemm() and
// never Eigen or cuBLAS themselves, so a layer is written once for every device.
#pragma once

#include <Eigen/Core>

#include "pnn/core/tensor.hpp"

namespace pnn {

struct GemmOptions {
  bool transpose_a = false;
  bool transpose_b = false;
  double alpha = 1;
  double beta = 0;  // 1 accumulates into C
};

namespace cpu_linalg {
template <class T>
using RowMajorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using ConstRowMajorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

template <class T>
ConstRowMajorMap<T> map(TensorView<const T, 2, cpu> m) {
  return ConstRowMajorMap<T>(m.data(), m.dim(0), m.dim(1));
}
}  // namespace cpu_linalg

template <class T>
void gemm(TensorView<const T, 2, cpu> a, TensorView<const T, 2, cpu> b, TensorView<T, 2, cpu> c,
          const GemmOptions& options = {}) {
  const index m = options.transpose_a ? a.dim(1) : a.dim(0);
  const index k = options.transpose_a ? a.dim(0) : a.dim(1);
  const index kb = options.transpose_b ? b.dim(1) : b.dim(0);
  const index n = options.transpose_b ? b.dim(0) : b.dim(1);
  PNN_CHECK(k == kb && c.dim(0) == m && c.dim(1) == n, ShapeError, "gemm: op(A) is ", m, "x", k, ", op(B) is ", kb,
            "x", n, " and C is ", c.dim(0), "x", c.dim(1));
  cpu_linalg::RowMajorMap<T> cm(c.data(), m, n);
  if (m == 0 || n == 0) return;
  const T alpha = static_cast<T>(options.alpha);
  if (options.beta == 0) {
    if (k == 0) { cm.setZero(); return; }
  } else if (options.beta != 1) {
    cm *= static_cast<T>(options.beta);
  }
  if (k == 0) return;
  const auto am = cpu_linalg::map<T>(a);
  const auto bm = cpu_linalg::map<T>(b);
  auto run = [&](const auto& lhs, const auto& rhs) {
    if (options.beta == 0)
      cm.noalias() = alpha * lhs * rhs;
    else
      cm.noalias() += alpha * lhs * rhs;
  };
  if (!options.transpose_a && !options.transpose_b) run(am, bm);
  else if (!options.transpose_a && options.transpose_b) run(am, bm.transpose());
  else if (options.transpose_a && !options.transpose_b) run(am.transpose(), bm);
  else run(am.transpose(), bm.transpose());
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
