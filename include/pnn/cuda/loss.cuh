// pnn/cuda/loss.cuh: softmax cross-entropy for cuda tensors, with the semantics of
// loss/softmax_cross_entropy.hpp: the mean loss over the batch (returned on the host, so a
// synchronisation point), the gradient (softmax(z) - onehot(c)) / batch written unless the view is empty.
//
// One thread per row computes its row's maximum, log-sum-exp, loss and gradient exactly as the CPU loop
// does; the per-row losses (in double) are then summed by the deterministic reduction. A label outside
// [0, classes) cannot throw on the device: the row is skipped and the smallest such row is recorded
// (atomicMin), then reported as an ArgumentError naming the sample and the label when the loss value is
// read, as on the CPU.
#pragma once

#include <cstdint>

#include "pnn/core/tensor.hpp"
#include "pnn/cuda/executor.cuh"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"
#include "pnn/loss/softmax_cross_entropy.hpp"

namespace pnn {

namespace cuda_detail {

// What first_invalid_row holds while every label was in range: the bytes of a memset to 0x7f. Batches
// are kept below it, so it is never a row.
inline constexpr int no_invalid_row = 0x7f7f7f7f;
inline constexpr std::uint8_t no_invalid_row_byte = 0x7f;

inline namespace PNN_CUDA_ABI_TAG {

PNN_HOST_DEVICE inline float exp_of(float x) { return expf(x); }
PNN_HOST_DEVICE inline double exp_of(double x) { return ::exp(x); }
PNN_HOST_DEVICE inline float log_of(float x) { return logf(x); }
PNN_HOST_DEVICE inline double log_of(double x) { return ::log(x); }

// Row i: its loss into row_losses[i] and, unless gradient is null, its gradient row. A function the host
// can call too, so tests/cuda/test_kernels_on_host.cu checks it against the CPU loss without a GPU.
// Returns false, writing nothing, when the row's label is outside [0, classes).
template <class T>
PNN_HOST_DEVICE inline bool softmax_cross_entropy_row(const T* logits, const std::int32_t* labels, index i,
                                                      index classes, T scale, T* gradient, double* row_losses) {
  const std::int32_t label = labels[i];
  if (label < 0 || label >= classes) return false;
  const T* z = logits + i * classes;
  T peak = z[0];
  for (index j = 1; j < classes; ++j) peak = z[j] > peak ? z[j] : peak;
  T denominator = 0;
  for (index j = 0; j < classes; ++j) denominator += exp_of(z[j] - peak);
  const T log_denominator = log_of(denominator);
  row_losses[i] = static_cast<double>(log_denominator + peak - z[label]);
  if (gradient) {
    T* g = gradient + i * classes;
    for (index j = 0; j < classes; ++j) g[j] = exp_of(z[j] - peak - log_denominator) * scale;
    g[label] -= scale;
  }
  return true;
}

template <class T>
PNN_KERNEL void softmax_cross_entropy_kernel(const T* logits, const std::int32_t* labels, index batch, index classes,
                                             T scale, T* gradient, double* row_losses, int* first_invalid_row) {
  for (index i = global_thread(); i < batch; i += grid_threads()) {
    if (softmax_cross_entropy_row(logits, labels, i, classes, scale, gradient, row_losses)) continue;
    atomicMin(first_invalid_row, static_cast<int>(i));
    row_losses[i] = 0;
  }
}

}  // inline namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

// Mean softmax cross-entropy of a batch; writes its gradient into `gradient` unless that view is empty.
template <class T>
T softmax_cross_entropy(TensorView<const T, 2, cuda> logits, TensorView<const std::int32_t, 1, cuda> labels,
                        TensorView<T, 2, cuda> gradient) {
  const index batch = logits.dim(0), classes = logits.dim(1);
  detail::check_softmax_cross_entropy(logits, labels, gradient);
  if (batch == 0) return T(0);
  PNN_CHECK(batch < cuda_detail::no_invalid_row, ShapeError, "softmax cross-entropy on cuda: a batch of ", batch,
            " rows is too large (at most ", cuda_detail::no_invalid_row - 1, ")");
  PNN_CHECK(classes > 0, ShapeError, "softmax cross-entropy: the logits have no classes");
  const int device = cuda_detail::device_of(logits.data());
  cuda_detail::DeviceGuard guard(device);
  cudaStream_t stream = cuda_stream(device);
  Tensor<double, 1, cuda> row_losses(Extents<1>{batch});
  Buffer<int, cuda> first_invalid_row(1);
  PNN_CUDA_CHECK(cudaMemsetAsync(first_invalid_row.data(), cuda_detail::no_invalid_row_byte, sizeof(int), stream));
  const T scale = T(1) / static_cast<T>(batch);
  cuda_detail::softmax_cross_entropy_kernel<T><<<cuda_detail::grid_blocks(batch, device), cuda_detail::block_threads,
                                                 0, stream>>>(logits.data(), labels.data(), batch, classes, scale,
                                                              gradient ? gradient.data() : nullptr, row_losses.data(),
                                                              first_invalid_row.data());
  PNN_CUDA_CHECK_LAUNCH("softmax_cross_entropy_kernel");
  int invalid_row = 0;
  PNN_CUDA_CHECK(cudaMemcpyAsync(&invalid_row, first_invalid_row.data(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  const double total = sum(row_losses);  // synchronises the stream, so invalid_row has arrived too
  if (invalid_row != cuda_detail::no_invalid_row) {
    std::int32_t label = 0;
    PNN_CUDA_CHECK(cudaMemcpyAsync(&label, labels.data() + invalid_row, sizeof label, cudaMemcpyDeviceToHost, stream));
    PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
    throw ArgumentError(detail::concat("softmax cross-entropy: label ", label, " of sample ", invalid_row,
                                       " is outside [0, ", classes, ")"));
  }
  return static_cast<T>(total / static_cast<double>(batch));
}

}  // namespace pnn
