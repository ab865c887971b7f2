// pnn/core/linalg.hpp: what every device's matrix product shares: GemmOptions, for
// C = alpha * op(A) * op(B) + beta * C, and the shape check. Each device supplies
//   gemm(a, b, c, options)       on its TensorViews (cpu/linalg.hpp, cuda/linalg.cuh)
//   add_column_sums(m, dst)      dst[j] += sum over rows of m(i, j): a bias gradient
// Layers call them unqualified and never Eigen or cuBLAS themselves, so a layer is written once.
// The sums over a batch that gradients are (dW += dy^T x, db += column sums of dy) go through
// add_batch_product and add_batch_column_sums below, which add in the canonical order of
// core/batch_sum.hpp on every device.
#pragma once

#include "pnn/core/batch_sum.hpp"
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

// dst += the sum over a pass's rows of m's rows, in the canonical tree: one leaf per piece of the pass's
// part of the global batch (batch_pieces), each leaf the device's column sums of the piece's rows.
// `rows_per_sample` rows of m belong to each sample (a convolution's output positions).
template <class T, class D>
void add_batch_column_sums(TensorView<const T, 2, D> m, TensorView<T, 1, D> dst, const BatchPieces& pieces,
                           index rows_per_sample, BatchSum<T, D>& sum) {
  // A device whose kernel adds up the tree itself says so here (cpu/linalg.hpp).
  if constexpr (requires { add_batch_column_sums_in_one_pass(m, dst, pieces, rows_per_sample); }) {
    add_batch_column_sums_in_one_pass(m, dst, pieces, rows_per_sample);
    return;
  }
  sum.start(dst.size());
  for (int i = 0; i < pieces.count; ++i) {
    const index begin = pieces.begin(i) * rows_per_sample, rows = pieces.end(i) * rows_per_sample - begin;
    add_column_sums<T>(m.rows(begin, rows), sum.zeroed_leaf());
    sum.push();
  }
  sum.add_to(dst);
}

// c += the sum over a pass's rows of op(a)^T b's terms: c += a^T b where a and b have a row per term (a
// weight gradient dW += dy^T x), in the canonical tree, each leaf one product over a piece's rows. A pass
// of one piece multiplies straight into c, which gives the leaf-then-add bits because c is zero there
// (every strategy zeroes the gradients before a pass's backward and adds passes up in the tree itself).
template <class T, class D>
void add_batch_product(TensorView<const T, 2, D> a, TensorView<const T, 2, D> b, TensorView<T, 2, D> c,
                       const BatchPieces& pieces, index rows_per_sample, BatchSum<T, D>& sum) {
  if (pieces.count == 1) {
    gemm<T>(a, b, c, {.transpose_a = true, .beta = 1});
    return;
  }
  // A device whose kernel can add up the tree itself, in one pass over c, says so here (cpu/linalg.hpp).
  if constexpr (requires { add_batch_product_in_one_pass(a, b, c, pieces, rows_per_sample); }) {
    if (add_batch_product_in_one_pass(a, b, c, pieces, rows_per_sample)) return;
  }
  sum.start(c.size());
  for (int i = 0; i < pieces.count; ++i) {
    const index begin = pieces.begin(i) * rows_per_sample, rows = pieces.end(i) * rows_per_sample - begin;
    gemm<T>(a.rows(begin, rows), b.rows(begin, rows), sum.leaf().reshape(c.shape()), {.transpose_a = true});
    sum.push();
  }
  const TensorView<T, 1, D> flat(c.data(), Extents<1>{c.size()});
  sum.add_to(flat);
}

}  // namespace pnn
