// pnn/cuda/linalg.cuh: matrix products on cuda tensor views through cuBLAS, and add_column_sums.
//
//   gemm<T>(a, b, c, {.transpose_b = true, .beta = 1})     C = alpha op(A) op(B) + beta C, float or double
//
// pnn's matrices are row-major and cuBLAS's column-major. A row-major matrix is the column-major
// storage of its transpose, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T, i.e. cuBLAS is
// called with the operands swapped and each one's own transpose flag: no copy, no transposition.
//
// Each thread keeps one cuBLAS handle per device, bound to pnn's compute stream of that device. Float
// products use TF32 tensor cores only when cuda_settings().allow_tf32 is set (off by default).
//
// add_column_sums (the bias gradient: dst[j] += the sum of column j) is a kernel of its own: columns
// across the threads of a warp (coalesced), rows split into a number of chunks fixed by the row count,
// each chunk's partial sums combined in a fixed order, so the result is deterministic.
#pragma once

#include <cublas_v2.h>

#include <climits>
#include <type_traits>

#include "pnn/core/linalg.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"

namespace pnn {

namespace cuda_detail {

inline void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw CudaError(detail::concat(call, " failed: ", cublasGetStatusString(status), " (", cublasGetStatusName(status),
                                   ") at ", file, ":", line));
}

// This thread's cuBLAS handle for `device`, bound to pnn's compute stream of that device.
inline cublasHandle_t cublas_handle(int device) {
  struct Handles {
    std::array<cublasHandle_t, max_devices> handles{};
    ~Handles() {
      for (cublasHandle_t handle : handles)
        if (handle) (void)cublasDestroy(handle);  // at thread exit; the runtime may already be gone at process exit
    }
  };
  thread_local Handles cache;
  PNN_CHECK(device >= 0 && device < max_devices, CudaError, "CUDA device ", device, " is outside the ", max_devices,
            " devices pnn supports");
  cublasHandle_t& handle = cache.handles[static_cast<std::size_t>(device)];
  if (!handle) {
    DeviceGuard guard(device);
    cublasHandle_t created = nullptr;
    PNN_CUDA_CHECK(cublasCreate(&created));
    handle = created;
    PNN_CUDA_CHECK(cublasSetStream(handle, cuda_stream(device)));
  }
  return handle;
}

inline int cublas_dimension(index value, const char* what) {
  PNN_CHECK(value <= INT_MAX, ArgumentError, "gemm on cuda: ", what, " = ", value,
            " exceeds cuBLAS's 32-bit dimensions; split the product");
  return static_cast<int>(std::max<index>(value, 0));
}

template <class T>
constexpr cudaDataType_t cublas_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else return CUDA_R_64F;
}

// The operands of the cublasGemmEx call that computes the row-major C = op(A) op(B) (m x n, inner size k)
// in column-major terms: C^T (n x m, leading dimension n) = op(B)^T (n x k) * op(A)^T (k x m). Each stored
// row-major matrix is the column-major storage of its transpose with its row length as leading dimension,
// so B comes first and each operand keeps its own transpose flag. Named as cuBLAS names them. A function
// of its own so that tests/cuda/test_kernels_on_host.cu checks the mapping against BLAS's definition of
// gemm without a GPU.
template <class T>
struct CublasProduct {
  cublasOperation_t transa, transb;
  int m, n, k;
  const T* A;
  int lda;
  const T* B;
  int ldb;
  T* C;
  int ldc;
};

template <class T>
CublasProduct<T> cublas_product(TensorView<const T, 2, cuda> a, TensorView<const T, 2, cuda> b,
                                TensorView<T, 2, cuda> c, const GemmOptions& options) {
  const auto [m, n, k] = detail::gemm_shape(a, b, c, options);
  return {options.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
          options.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N,
          cublas_dimension(n, "n"),
          cublas_dimension(m, "m"),
          cublas_dimension(k, "k"),
          b.data(),
          std::max(1, cublas_dimension(b.dim(1), "the leading dimension of B")),
          a.data(),
          std::max(1, cublas_dimension(a.dim(1), "the leading dimension of A")),
          c.data(),
          std::max(1, cublas_dimension(n, "n"))};
}

}  // namespace cuda_detail

template <class T>
void gemm(TensorView<const T, 2, cuda> a, TensorView<const T, 2, cuda> b, TensorView<T, 2, cuda> c,
          const GemmOptions& options = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "gemm on cuda takes float or double matrices (cuBLAS's S and D products)");
  const auto [m, n, k] = detail::gemm_shape(a, b, c, options);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // no products: C = beta C, with beta 0 overwriting whatever C held (NaN included)
    if (options.beta == 0) DeviceTraits<cuda>::fill_zero(c.data(), sizeof(T) * static_cast<std::size_t>(c.size()));
    else if (options.beta != 1) c = c * static_cast<T>(options.beta);
    return;
  }
  const int device = cuda_detail::device_of(c.data());
  cuda_detail::DeviceGuard guard(device);
  cublasHandle_t handle = cuda_detail::cublas_handle(device);
  const T alpha = static_cast<T>(options.alpha), beta = static_cast<T>(options.beta);
  const cublasComputeType_t compute = std::is_same_v<T, double>    ? CUBLAS_COMPUTE_64F
                                      : cuda_settings().allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                   : CUBLAS_COMPUTE_32F;
  const cuda_detail::CublasProduct<T> p = cuda_detail::cublas_product(a, b, c, options);
  PNN_CUDA_CHECK(cublasGemmEx(handle, p.transa, p.transb, p.m, p.n, p.k, &alpha, p.A, cuda_detail::cublas_type<T>(),
                              p.lda, p.B, cuda_detail::cublas_type<T>(), p.ldb, &beta, p.C,
                              cuda_detail::cublas_type<T>(), p.ldc, compute, CUBLAS_GEMM_DEFAULT));
}

namespace cuda_detail {
inline namespace PNN_CUDA_ABI_TAG {

// Rows per chunk of add_column_sums, and the most chunks: the chunk count depends on the row count only.
inline constexpr index column_sum_rows_per_chunk = 256;
inline constexpr index column_sum_max_chunks = 256;
inline constexpr int column_sum_columns = 32;  // per block: one warp across the columns
inline constexpr int column_sum_lanes = 8;     // per block: threads down the rows of the chunk

// Block (x, chunk): columns [32x, 32x + 32) over the rows of the chunk. Thread (column, lane) adds rows
// lane, lane + 8, ... of the chunk; the 8 lanes are then added in order. With one chunk the sum goes
// straight into destination; otherwise into partials[chunk][column].
template <class T>
PNN_KERNEL_WITH_BLOCK(column_sum_columns* column_sum_lanes)
void column_sums_kernel(const T* matrix, index rows, index columns, index rows_per_chunk, T* partials, T* destination) {
  __shared__ T lanes[column_sum_lanes][column_sum_columns];
  const index column = static_cast<index>(blockIdx.x) * column_sum_columns + threadIdx.x;
  const index begin = static_cast<index>(blockIdx.y) * rows_per_chunk;
  const index end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
  T sum = T(0);
  if (column < columns)
    for (index row = begin + threadIdx.y; row < end; row += column_sum_lanes) sum += matrix[row * columns + column];
  lanes[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || column >= columns) return;
  T total = lanes[0][threadIdx.x];
  for (int lane = 1; lane < column_sum_lanes; ++lane) total += lanes[lane][threadIdx.x];
  if (gridDim.y == 1) destination[column] += total;
  else partials[static_cast<index>(blockIdx.y) * columns + column] = total;
}

// destination[column] += the chunks' partial sums, in chunk order.
template <class T>
PNN_KERNEL void add_partials_kernel(const T* partials, index chunks, index columns, T* destination) {
  for (index column = global_thread(); column < columns; column += grid_threads()) {
    T total = T(0);
    for (index chunk = 0; chunk < chunks; ++chunk) total += partials[chunk * columns + column];
    destination[column] += total;
  }
}

}  // namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

// dst[j] += sum over rows i of m(i, j): the bias gradient of a batch.
template <class T>
void add_column_sums(TensorView<const T, 2, cuda> m, TensorView<T, 1, cuda> dst) {
  using namespace cuda_detail;
  PNN_CHECK(dst.size() == m.dim(1), ShapeError, "add_column_sums: ", m.dim(1), " columns into ", dst.size(),
            " elements");
  const index rows = m.dim(0), columns = m.dim(1);
  if (rows == 0 || columns == 0) return;
  const index chunks =
      std::min(column_sum_max_chunks, (rows + column_sum_rows_per_chunk - 1) / column_sum_rows_per_chunk);
  const index rows_per_chunk = (rows + chunks - 1) / chunks;
  const index column_blocks = (columns + column_sum_columns - 1) / column_sum_columns;
  PNN_CHECK(column_blocks <= INT_MAX, ArgumentError, "add_column_sums: ", columns, " columns are too many");
  const int device = device_of(dst.data());
  DeviceGuard guard(device);
  cudaStream_t stream = cuda_stream(device);
  Buffer<T, cuda> partials(chunks > 1 ? chunks * columns : 0);
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(chunks));
  const dim3 block(column_sum_columns, column_sum_lanes);
  column_sums_kernel<T>
      <<<grid, block, 0, stream>>>(m.data(), rows, columns, rows_per_chunk, partials.data(), dst.data());
  PNN_CUDA_CHECK_LAUNCH("column_sums_kernel");
  if (chunks > 1) {
    add_partials_kernel<T>
        <<<grid_blocks(columns, device), block_threads, 0, stream>>>(partials.data(), chunks, columns, dst.data());
    PNN_CUDA_CHECK_LAUNCH("add_partials_kernel");
  }
}

}  // namespace pnn
