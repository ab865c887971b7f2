// pnn/core/linalg.hpp: what every device's matrix product shares: GemmOptions, for
// C = alpha * op(A) * op(B) + beta * C, and the shape check. Each device supplies
//   gemm(a, b, c, options)       on its TensorViews (cpu/linalg.hpp, cuda/linalg.cuh)
//   add_column_sums(m, dst)      dst[j] += sum over rows of m(i, j): a bias gradient
// Layers call them unqualified and never Eigen or cuBLAS themselves, so a layer is written once.
#pragma once

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"

namespace pnn {

struct GemmOptions {
  bool transpose_a = false;
  bool transpose_b = false;
  double alpha = 1;
  double beta = 0;  // 1 accumulates into C
};

namespace detail {
struct GemmShape {
  index m, n, k;  // op(A) is m x k, op(B) is k x n, C is m x n
};
// The shape of C = op(A) op(B) for every device's gemm(); a ShapeError if the operands disagree.
template <class A, class B, class C>
GemmShape gemm_shape(const A& a, const B& b, const C& c, const GemmOptions& options) {
  const index m = options.transpose_a ? a.dim(1) : a.dim(0);
  const index k = options.transpose_a ? a.dim(0) : a.dim(1);
  const index kb = options.transpose_b ? b.dim(1) : b.dim(0);
  const index n = options.transpose_b ? b.dim(0) : b.dim(1);
  PNN_CHECK(k == kb && c.dim(0) == m && c.dim(1) == n, ShapeError, "gemm: op(A) is ", m, "x", k, ", op(B) is ", kb, "x",
            n, " and C is ", c.dim(0), "x", c.dim(1));
  return {m, n, k};
}
}  // namespace detail

}  // namespace pnn
