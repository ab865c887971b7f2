// pnn/cuda/loss.cuh: the losses on cuda tensors: softmax cross-entropy's kernel and its launcher, the
// eager softmax_cross_entropy for cuda views, and CudaDeviceLoss, the form of each loss that computes its
// mean into device memory (what CudaGraphStep captures). The arithmetic is not here but in loss/: the
// kernel is a grid-stride loop around softmax_cross_entropy_row (loss/softmax_cross_entropy.hpp), and
// mean squared error is its expressions (loss/mean_squared_error.hpp) run by the CUDA executor.
//
// The eager loss has the semantics of the CPU loss: the mean loss over the batch (returned on the host, so
// a synchronisation point), the gradient (softmax(z) - onehot(c)) / batch written unless the view is empty.
// One thread per row computes its row's maximum, log-sum-exp, loss and gradient exactly as the CPU loop
// does; the per-row losses (in double) are then summed by the deterministic reduction. A label outside
// [0, classes) cannot throw on the device: the row is skipped and the smallest such row is recorded
// (atomicMin), then reported as an ArgumentError naming the sample and the label when the loss value is
// read, as on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "pnn/core/tensor.hpp"
#include "pnn/cuda/executor.cuh"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"
#include "pnn/loss/mean_squared_error.hpp"
#include "pnn/loss/softmax_cross_entropy.hpp"

namespace pnn {

namespace cuda_detail {

// What first_invalid_row holds while every label was in range: the bytes of a memset to 0x7f. Batches
// are kept below it, so it is never a row.
inline constexpr int no_invalid_row = 0x7f7f7f7f;
inline constexpr std::uint8_t no_invalid_row_byte = 0x7f;

inline namespace PNN_CUDA_ABI_TAG {

template <class T>
PNN_KERNEL void softmax_cross_entropy_kernel(const T* logits, const std::int32_t* labels, index batch, index classes,
                                             T scale, T* gradient, double* row_losses, int* first_invalid_row) {
  for (index i = global_thread(); i < batch; i += grid_threads()) {
    if (pnn::detail::softmax_cross_entropy_row(logits, labels, i, classes, scale, gradient, row_losses[i])) continue;
    atomicMin(first_invalid_row, static_cast<int>(i));
    row_losses[i] = 0;
  }
}

// Enqueues softmax cross-entropy on `stream`, never waiting: each row's loss into row_losses, the
// gradient (scaled by `scale`, 1 / the global batch's rows) unless `gradient` is null, and the smallest
// row whose label is out of range into *first_invalid_row (no_invalid_row if none). The one launch of the
// eager loss and of CudaDeviceLoss.
template <class T>
void enqueue_softmax_cross_entropy(TensorView<const T, 2, cuda> logits, TensorView<const std::int32_t, 1, cuda> labels,
                                   T* gradient, double* row_losses, int* first_invalid_row, int device,
                                   cudaStream_t stream, T scale) {
  const index batch = logits.dim(0), classes = logits.dim(1);
  PNN_CUDA_CHECK(cudaMemsetAsync(first_invalid_row, no_invalid_row_byte, sizeof(int), stream));
  softmax_cross_entropy_kernel<T><<<grid_blocks(batch, device), block_threads, 0, stream>>>(
      logits.data(), labels.data(), batch, classes, scale, gradient, row_losses, first_invalid_row);
  PNN_CUDA_CHECK_LAUNCH("softmax_cross_entropy_kernel");
}

}  // namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

// Softmax cross-entropy of rows [part.begin, part.begin + part.count) of a global batch (see the CPU's in
// loss/softmax_cross_entropy.hpp): the gradient scaled by 1 / part.batch, and the canonical sum of the
// rows' losses, which are copied to the host to be added up in the tree every device uses.
template <class T>
double softmax_cross_entropy_sum(TensorView<const T, 2, cuda> logits, TensorView<const std::int32_t, 1, cuda> labels,
                                 TensorView<T, 2, cuda> gradient, const BatchPart& part) {
  const index batch = logits.dim(0), classes = logits.dim(1);
  detail::check_softmax_cross_entropy(logits, labels, gradient, part);
  if (batch == 0) return 0;
  PNN_CHECK(batch < cuda_detail::no_invalid_row, ShapeError, "softmax cross-entropy on cuda: a batch of ", batch,
            " rows is too large (at most ", cuda_detail::no_invalid_row - 1, ")");
  PNN_CHECK(classes > 0, ShapeError, "softmax cross-entropy: the logits have no classes");
  const int device = cuda_detail::device_of(logits.data());
  cuda_detail::DeviceGuard guard(device);
  cudaStream_t stream = cuda_stream(device);
  Tensor<double, 1, cuda> row_losses(Extents<1>{batch});
  Buffer<int, cuda> first_invalid_row(1);
  cuda_detail::enqueue_softmax_cross_entropy(logits, labels, gradient ? gradient.data() : nullptr, row_losses.data(),
                                             first_invalid_row.data(), device, stream,
                                             T(1) / static_cast<T>(part.batch));
  int invalid_row = 0;
  std::vector<double> host_losses(static_cast<std::size_t>(batch));
  PNN_CUDA_CHECK(cudaMemcpyAsync(&invalid_row, first_invalid_row.data(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  PNN_CUDA_CHECK(cudaMemcpyAsync(host_losses.data(), row_losses.data(), sizeof(double) * host_losses.size(),
                                 cudaMemcpyDeviceToHost, stream));
  PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (invalid_row != cuda_detail::no_invalid_row) {
    std::int32_t label = 0;
    PNN_CUDA_CHECK(cudaMemcpyAsync(&label, labels.data() + invalid_row, sizeof label, cudaMemcpyDeviceToHost, stream));
    PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
    throw ArgumentError(detail::concat("softmax cross-entropy: label ", label, " of sample ", part.begin + invalid_row,
                                       " is outside [0, ", classes, ")"));
  }
  return detail::canonical_row_sum(host_losses.data(), part);
}

// ----- the loss, written to device memory ----------------------------------------------------------------

// Device memory a device-side loss writes: the mean loss of the last step, and (softmax cross-entropy)
// the first sample whose label was out of range, or cuda_detail::no_invalid_row.
template <class T>
struct CudaLossScratch {
  CudaLossScratch() = default;
  explicit CudaLossScratch(index rows)
      : row_losses(Extents<1>{rows}),
        partials(Extents<1>{PNN_CUDA_REDUCTION_BLOCKS}),
        mean(Extents<1>{1}),
        first_invalid_row(Extents<1>{1}) {}
  Tensor<double, 1, cuda> row_losses;  // per sample (softmax cross-entropy)
  Tensor<double, 1, cuda> partials;    // per block of the reduction's first pass
  Tensor<T, 1, cuda> mean;
  Tensor<int, 1, cuda> first_invalid_row;
};

namespace cuda_detail {
inline namespace PNN_CUDA_ABI_TAG {

// The reduction's second pass, as reduce_partials_kernel, finished into a T:
// *mean = T(sum(partials) / divisor) * scale.
template <class T>
PNN_KERNEL void mean_of_partials_kernel(const double* partials, unsigned count, double divisor, T scale, T* mean) {
  double value = 0;
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) value += partials[i];
  value = block_reduce<SumReduction>(value);
  if (threadIdx.x == 0) *mean = static_cast<T>(value / divisor) * scale;
}

// *mean = T(S / divisor) * scale, S the sum of the `count` values of `argument` in the executor's fixed
// order (so the same bits as its sum()), with no copy to the host. Each loss picks divisor and scale to
// finish the mean exactly as its eager form does on the host.
template <class T, class Argument>
void enqueue_mean(const Argument& argument, index count, double divisor, T scale, CudaLossScratch<T>& scratch,
                  cudaStream_t stream) {
  const index wanted = (count + block_threads - 1) / block_threads;
  const auto blocks = static_cast<unsigned>(std::clamp<index>(wanted, 1, PNN_CUDA_REDUCTION_BLOCKS));
  reduce_kernel<SumReduction><<<blocks, block_threads, 0, stream>>>(argument, count, 0.0, scratch.partials.data());
  PNN_CUDA_CHECK_LAUNCH("reduce_kernel");
  mean_of_partials_kernel<T>
      <<<1, block_threads, 0, stream>>>(scratch.partials.data(), blocks, divisor, scale, scratch.mean.data());
  PNN_CUDA_CHECK_LAUNCH("mean_of_partials_kernel");
}

}  // namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

// CudaDeviceLoss<Loss>::enqueue(loss, output, targets, gradient, scratch): the loss's gradient into
// `gradient` and its mean into scratch.mean, enqueued on pnn's stream without waiting for the device.
// Specialise it to capture a loss of your own.
template <class LossFunction>
struct CudaDeviceLoss {
  static_assert(always_false<LossFunction>,
                "CudaGraphStep has no device-side form of this loss: the eager loss returns its value to the host, "
                "which a CUDA graph cannot contain. Specialise pnn::CudaDeviceLoss<YourLoss> (pnn/cuda/loss.cuh "
                "shows SoftmaxCrossEntropy and MeanSquaredError)");
};

template <>
struct CudaDeviceLoss<SoftmaxCrossEntropy> {
  template <class T>
  static void enqueue(const SoftmaxCrossEntropy&, TensorView<const T, 2, cuda> logits,
                      TensorView<const std::int32_t, 1, cuda> labels, TensorView<T, 2, cuda> gradient,
                      CudaLossScratch<T>& scratch) {
    using namespace cuda_detail;
    const index batch = logits.dim(0);
    PNN_CHECK(labels.size() == batch && scratch.row_losses.size() == batch, ShapeError,
              "softmax cross-entropy: ", batch, " rows of logits but ", labels.size(), " labels");
    const int device = current_device();
    cudaStream_t stream = cuda_stream(device);
    // The eager loss's launch, so the gradient has pnn::train_step's bits (the loss is summed on the device
    // here, in the canonical tree on the host there: equal to rounding).
    enqueue_softmax_cross_entropy(logits, labels, gradient.data(), scratch.row_losses.data(),
                                  scratch.first_invalid_row.data(), device, stream, T(1) / static_cast<T>(batch));
    enqueue_mean(LeafArgument<double>{scratch.row_losses.data(), batch}, batch, static_cast<double>(batch), T(1),
                 scratch, stream);
  }
};

template <>
struct CudaDeviceLoss<MeanSquaredError> {
  template <class T>
  static void enqueue(const MeanSquaredError&, TensorView<const T, 2, cuda> output, TensorView<const T, 2, cuda> target,
                      TensorView<T, 2, cuda> gradient, CudaLossScratch<T>& scratch) {
    MeanSquaredError::check(output, target);
    // As MeanSquaredError's eager form: the float sum times the float scale.
    const T scale = T(1) / static_cast<T>(output.size());
    gradient = MeanSquaredError::gradient_expression(output, target, scale);
    cuda_detail::enqueue_mean(cuda_detail::to_kernel(MeanSquaredError::squared_errors(output, target)), output.size(),
                              1.0, scale, scratch, cuda_stream());
  }
};

}  // namespace pnn
