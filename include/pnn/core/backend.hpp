// pnn/core/backend.hpp: Backend<D>, everything a device supplies, in one list: adding a device is this
// checklist. Layers, losses and optimisers are written once against it and never name a device.
//
//   memory        DeviceTraits<D>: allocate, deallocate, fill_zero, copy            (core/device.hpp)
//   expressions   Executor<D>: assign, evaluate (fused), sum, maximum, minimum      (core/executor.hpp)
//   time          Timeline<D>: marks on the device's progress, for statistics       (core/timeline.hpp)
//   products      gemm(a, b, c, options), add_column_sums(m, dst)                   (core/linalg.hpp)
//   windows       im2col, col2im, max_pool_forward/backward, avg_pool_forward/backward,
//                 transpose_samples                                                   (core/window.hpp)
//   transfers     copy(host -> D), copy(D -> host), copy(D -> D)                    (core/tensor.hpp)
//
// Each device's side lives in its own folder and is checked against this concept right there:
// cpu/cpu.hpp (static_assert(Backend<cpu>)) and cuda/cuda.hpp (static_assert(Backend<cuda>)). Losses run
// their per-row arithmetic through the same seams (loss/).
#pragma once

#include <concepts>

#include "pnn/core/device.hpp"
#include "pnn/core/executor.hpp"
#include "pnn/core/linalg.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/core/timeline.hpp"
#include "pnn/core/window.hpp"

namespace pnn {

template <class D, class T = float>
concept Backend =
    Device<D> && DeviceTimeline<Timeline<D>> &&
    requires(TensorView<const T, 2, D> a, TensorView<T, 2, D> c, TensorView<T, 1, D> vector,
             TensorView<const T, 1, D> const_vector, TensorView<const T, 1, cpu> host_source,
             TensorView<T, 1, cpu> host_destination, TensorView<const SampleOffset, 2, D> argmax_source,
             TensorView<SampleOffset, 2, D> argmax, const ConvolutionGeometry& geometry, const GemmOptions& options) {
      Executor<D>::assign(c, a);
      Executor<D>::evaluate(into(c, a), into(c, a));
      { Executor<D>::sum(a) } -> std::convertible_to<T>;
      { Executor<D>::maximum(a) } -> std::convertible_to<T>;
      { Executor<D>::minimum(a) } -> std::convertible_to<T>;
      gemm(a, a, c, options);
      add_column_sums(a, vector);
      im2col(a, geometry, c);
      col2im(a, geometry, c);
      max_pool_forward(a, geometry, c, argmax);
      max_pool_backward(a, argmax_source, geometry, c);
      avg_pool_forward(a, geometry, c);
      avg_pool_backward(a, geometry, c);
      transpose_samples(a, index{1}, index{1}, c);
      copy(host_source, vector);
      copy(const_vector, host_destination);
      copy(const_vector, vector);
    };

}  // namespace pnn
