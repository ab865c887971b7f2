// pnn/cuda/cuda.hpp: the CUDA backend in one include, for .cu files compiled by nvcc.
//
//   #include <pnn/cuda/cuda.hpp>
//   using Net = pnn::Sequential<pnn::Input<784>, pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>::on<pnn::cuda>;
//
// It brings in pnn/pnn.hpp and, for pnn::cuda tensors: device memory and host <-> device copies
// (memory.cuh), the fused expression executor (executor.cuh), cuBLAS matrix products and column sums
// (linalg.cuh), the convolution and pooling kernels (kernels.cuh), softmax cross-entropy (loss.cuh), and
// the events the strategies time the device with (timeline.cuh).
// The layers, losses and optimisers call these through the same free functions as on the CPU (the
// Backend concept, core/backend.hpp, checked below), so every layer runs on cuda unchanged. The NCCL communicator is
// separate: <pnn/cuda/nccl.cuh>.
#pragma once

#include "pnn/pnn.hpp"
#include "pnn/cuda/executor.cuh"
#include "pnn/cuda/kernels.cuh"
#include "pnn/cuda/linalg.cuh"
#include "pnn/cuda/loss.cuh"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"
#include "pnn/cuda/timeline.cuh"

namespace pnn {
static_assert(Backend<cuda, float>, "the CUDA backend must supply everything core/backend.hpp lists");
}  // namespace pnn
