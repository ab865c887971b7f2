// pnn/cuda/kernels.cuh: the convolution, pooling and flatten kernels for cuda tensors: im2col / col2im,
// max and average pooling forward and backward, the per-sample transpose, with the semantics of cpu/kernels.hpp
// (channels-last (H, W, C) samples, argmax offsets into the sample's row, ties to the first maximum in window order).
//
// One thread per output element, grid-stride, 64-bit indices. The backward kernels (col2im, pooling
// backward) GATHER: each input element adds the contributions of the windows that contain it, in the
// order of those windows (row by row), which is the order the CPU kernels add them in. No atomics, so
// the results are deterministic run to run. They can differ from the CPU's in the last bit: nvcc fuses
// average pooling's multiply-add into an FMA, and a -0 gradient comes back +0 (the sums start at 0).
#pragma once

#include "pnn/core/window.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"

namespace pnn {

namespace cuda_detail {
inline namespace PNN_CUDA_ABI_TAG {

// The windows (output rows or columns) that contain input position `position` along one axis:
// [first, last], empty when first > last. `padded` is the position plus the padding.
struct WindowRange {
  index first, last;
};
PNN_HOST_DEVICE inline WindowRange windows_containing(index padded, index kernel, index stride, index outputs) {
  const index lowest_reach = padded - (kernel - 1);  // a window starting below this ends before the position
  const index first = lowest_reach <= 0 ? 0 : (lowest_reach + stride - 1) / stride;
  const index last_start = padded / stride;
  const index last = last_start < outputs - 1 ? last_start : outputs - 1;
  return {first, last};
}

// Input element e of a batch of samples: its sample, its offset within the sample, and its (h, w, c).
struct InputPosition {
  index sample, offset, h, w, c;
};
PNN_HOST_DEVICE inline InputPosition input_position(const ConvolutionGeometry& g, index e) {
  const index row_pitch = g.width * g.channels, sample_size = g.height * row_pitch;
  const index sample = e / sample_size, offset = e - sample * sample_size;
  const index h = offset / row_pitch, within = offset - h * row_pitch;
  const index w = within / g.channels;
  return {sample, offset, h, w, within - w * g.channels};
}

// Pooled element e of a batch: its sample, and the offset within the sample of its window's first
// element (in the element's channel).
struct PooledPosition {
  index sample, corner;
};
PNN_HOST_DEVICE inline PooledPosition pooled_position(const ConvolutionGeometry& g, index e) {
  const index pooled = g.output_height * g.output_width * g.channels;
  const index sample = e / pooled, within = e - sample * pooled;
  const index position = within / g.channels, c = within - position * g.channels;
  const index oh = position / g.output_width, ow = position - oh * g.output_width;
  return {sample, (oh * g.width + ow) * g.stride * g.channels + c};
}

// What each kernel does for element e of its output, as functions the host can call too: the kernels
// below loop over their elements with them, and tests/cuda/test_kernels_on_host.cu runs them over every
// element on the CPU against cpu/kernels.hpp, so their index arithmetic is tested without a GPU.

template <class T>
PNN_HOST_DEVICE inline void im2col_element(const T* input, ConvolutionGeometry g, index e, T* columns) {
  const index run = g.kernel * g.channels, patch = g.kernel * run;
  const index positions = g.output_height * g.output_width, sample_size = g.height * g.width * g.channels;
  const index row = e / patch, column = e - row * patch;
  const index sample = row / positions, position = row - sample * positions;
  const index oh = position / g.output_width, ow = position - oh * g.output_width;
  const index kh = column / run, within = column - kh * run;
  const index kw = within / g.channels, c = within - kw * g.channels;
  const index h = oh * g.stride + kh - g.padding, w = ow * g.stride + kw - g.padding;
  const bool inside = h >= 0 && h < g.height && w >= 0 && w < g.width;
  columns[e] = inside ? input[sample * sample_size + (h * g.width + w) * g.channels + c] : T(0);
}

template <class T>
PNN_HOST_DEVICE inline void col2im_element(const T* columns, ConvolutionGeometry g, index e, T* input_gradient) {
  const index patch = g.kernel * g.kernel * g.channels;
  const InputPosition p = input_position(g, e);
  const WindowRange rows = windows_containing(p.h + g.padding, g.kernel, g.stride, g.output_height);
  const WindowRange cols = windows_containing(p.w + g.padding, g.kernel, g.stride, g.output_width);
  T sum = T(0);
  for (index oh = rows.first; oh <= rows.last; ++oh) {
    const index kh = p.h + g.padding - oh * g.stride;
    for (index ow = cols.first; ow <= cols.last; ++ow) {
      const index kw = p.w + g.padding - ow * g.stride;
      const index window = (p.sample * g.output_height + oh) * g.output_width + ow;
      sum += columns[window * patch + (kh * g.kernel + kw) * g.channels + p.c];
    }
  }
  input_gradient[e] = sum;
}

template <class T>
PNN_HOST_DEVICE inline void max_pool_forward_element(const T* input, ConvolutionGeometry g, index e, T* output,
                                                     SampleOffset* argmax) {
  const index row_pitch = g.width * g.channels, sample_size = g.height * row_pitch;
  const PooledPosition p = pooled_position(g, e);
  const T* image = input + p.sample * sample_size;
  T best = image[p.corner];
  index where = p.corner;
  for (index kh = 0; kh < g.kernel; ++kh)
    for (index kw = kh == 0 ? 1 : 0; kw < g.kernel; ++kw) {
      const index at = p.corner + kh * row_pitch + kw * g.channels;
      if (image[at] > best) {  // strict: the first maximum in window order wins ties
        best = image[at];
        where = at;
      }
    }
  output[e] = best;
  argmax[e] = static_cast<SampleOffset>(where);
}

template <class T>
PNN_HOST_DEVICE inline void max_pool_backward_element(const T* output_gradient, const SampleOffset* argmax,
                                                      ConvolutionGeometry g, index e, T* input_gradient) {
  const index pooled = g.output_height * g.output_width * g.channels;
  const InputPosition p = input_position(g, e);
  const WindowRange rows = windows_containing(p.h, g.kernel, g.stride, g.output_height);
  const WindowRange cols = windows_containing(p.w, g.kernel, g.stride, g.output_width);
  const T* gradient = output_gradient + p.sample * pooled;
  const SampleOffset* where = argmax + p.sample * pooled;
  T sum = T(0);
  for (index oh = rows.first; oh <= rows.last; ++oh)
    for (index ow = cols.first; ow <= cols.last; ++ow) {
      const index i = (oh * g.output_width + ow) * g.channels + p.c;
      if (where[i] == static_cast<SampleOffset>(p.offset)) sum += gradient[i];
    }
  input_gradient[e] = sum;
}

template <class T>
PNN_HOST_DEVICE inline void avg_pool_forward_element(const T* input, ConvolutionGeometry g, index e, T scale,
                                                     T* output) {
  const index row_pitch = g.width * g.channels, sample_size = g.height * row_pitch;
  const PooledPosition p = pooled_position(g, e);
  const T* corner = input + p.sample * sample_size + p.corner;
  T sum = T(0);
  for (index kh = 0; kh < g.kernel; ++kh)
    for (index kw = 0; kw < g.kernel; ++kw) sum += corner[kh * row_pitch + kw * g.channels];
  output[e] = sum * scale;
}

template <class T>
PNN_HOST_DEVICE inline void avg_pool_backward_element(const T* output_gradient, ConvolutionGeometry g, index e, T scale,
                                                      T* input_gradient) {
  const index pooled = g.output_height * g.output_width * g.channels;
  const InputPosition p = input_position(g, e);
  const WindowRange rows = windows_containing(p.h, g.kernel, g.stride, g.output_height);
  const WindowRange cols = windows_containing(p.w, g.kernel, g.stride, g.output_width);
  const T* gradient = output_gradient + p.sample * pooled;
  T sum = T(0);
  for (index oh = rows.first; oh <= rows.last; ++oh)
    for (index ow = cols.first; ow <= cols.last; ++ow)
      sum += scale * gradient[(oh * g.output_width + ow) * g.channels + p.c];
  input_gradient[e] = sum;
}

template <class T>
PNN_KERNEL void im2col_kernel(const T* input, ConvolutionGeometry g, index total, T* columns) {
  for (index e = global_thread(); e < total; e += grid_threads()) im2col_element(input, g, e, columns);
}

template <class T>
PNN_KERNEL void col2im_kernel(const T* columns, ConvolutionGeometry g, index total, T* input_gradient) {
  for (index e = global_thread(); e < total; e += grid_threads()) col2im_element(columns, g, e, input_gradient);
}

template <class T>
PNN_KERNEL void max_pool_forward_kernel(const T* input, ConvolutionGeometry g, index total, T* output,
                                        SampleOffset* argmax) {
  for (index e = global_thread(); e < total; e += grid_threads()) max_pool_forward_element(input, g, e, output, argmax);
}

template <class T>
PNN_KERNEL void max_pool_backward_kernel(const T* output_gradient, const SampleOffset* argmax, ConvolutionGeometry g,
                                         index total, T* input_gradient) {
  for (index e = global_thread(); e < total; e += grid_threads())
    max_pool_backward_element(output_gradient, argmax, g, e, input_gradient);
}

template <class T>
PNN_KERNEL void avg_pool_forward_kernel(const T* input, ConvolutionGeometry g, index total, T scale, T* output) {
  for (index e = global_thread(); e < total; e += grid_threads()) avg_pool_forward_element(input, g, e, scale, output);
}

template <class T>
PNN_KERNEL void avg_pool_backward_kernel(const T* output_gradient, ConvolutionGeometry g, index total, T scale,
                                         T* input_gradient) {
  for (index e = global_thread(); e < total; e += grid_threads())
    avg_pool_backward_element(output_gradient, g, e, scale, input_gradient);
}

// Output element e of a sample is (c, r) of the transpose, read from (r, c) of the input's rows x cols
// sample.
template <class T>
PNN_HOST_DEVICE inline void transpose_samples_element(const T* input, index rows, index cols, index e, T* output) {
  const index sample_size = rows * cols;
  const index sample = e / sample_size, within = e % sample_size;
  const index c = within / rows, r = within % rows;
  output[e] = input[sample * sample_size + r * cols + c];
}

template <class T>
PNN_KERNEL void transpose_samples_kernel(const T* input, index rows, index cols, index total, T* output) {
  for (index e = global_thread(); e < total; e += grid_threads())
    transpose_samples_element(input, rows, cols, e, output);
}

// The device of `memory` made current, and its stream and grid for `total` elements.
struct Launch {
  explicit Launch(const void* memory, index total)
      : device(device_of(memory)), guard(device), stream(cuda_stream(device)), blocks(grid_blocks(total, device)) {}
  int device;
  DeviceGuard guard;
  cudaStream_t stream;
  unsigned blocks;
};

// Launches kernel(arguments...) with one thread per element of `total`, on the stream of the device that
// holds `memory`; nothing for no elements. Throws CudaError naming the kernel if the launch fails.
template <class... Parameters, class... Arguments>
void launch_over(const char* kernel_name, const void* memory, index total, void (*kernel)(Parameters...),
                 Arguments... arguments) {
  if (total == 0) return;
  const Launch launch(memory, total);
  kernel<<<launch.blocks, block_threads, 0, launch.stream>>>(arguments...);
  check(cudaGetLastError(), detail::concat("launch of ", kernel_name).c_str(), __FILE__, __LINE__);
}

}  // namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

template <class T>
void im2col(TensorView<const T, 2, cuda> input, const ConvolutionGeometry& geometry, TensorView<T, 2, cuda> columns) {
  detail::check_im2col(input, geometry, columns);
  const index total = columns.size();
  cuda_detail::launch_over("im2col_kernel", columns.data(), total, cuda_detail::im2col_kernel<T>, input.data(),
                           geometry, total, columns.data());
}

template <class T>
void col2im(TensorView<const T, 2, cuda> columns, const ConvolutionGeometry& geometry,
            TensorView<T, 2, cuda> input_gradient) {
  detail::check_col2im(columns, geometry, input_gradient);
  const index total = input_gradient.size();
  cuda_detail::launch_over("col2im_kernel", input_gradient.data(), total, cuda_detail::col2im_kernel<T>, columns.data(),
                           geometry, total, input_gradient.data());
}

template <class T>
void max_pool_forward(TensorView<const T, 2, cuda> input, const ConvolutionGeometry& geometry,
                      TensorView<T, 2, cuda> output, TensorView<SampleOffset, 2, cuda> argmax) {
  detail::check_max_pool_forward(input, geometry, output, argmax);
  const index total = output.size();
  cuda_detail::launch_over("max_pool_forward_kernel", output.data(), total, cuda_detail::max_pool_forward_kernel<T>,
                           input.data(), geometry, total, output.data(), argmax.data());
}

template <class T>
void max_pool_backward(TensorView<const T, 2, cuda> output_gradient, TensorView<const SampleOffset, 2, cuda> argmax,
                       const ConvolutionGeometry& geometry, TensorView<T, 2, cuda> input_gradient) {
  detail::check_max_pool_backward(output_gradient, argmax, geometry, input_gradient);
  const index total = input_gradient.size();
  cuda_detail::launch_over("max_pool_backward_kernel", input_gradient.data(), total,
                           cuda_detail::max_pool_backward_kernel<T>, output_gradient.data(), argmax.data(), geometry,
                           total, input_gradient.data());
}

template <class T>
void avg_pool_forward(TensorView<const T, 2, cuda> input, const ConvolutionGeometry& geometry,
                      TensorView<T, 2, cuda> output) {
  detail::check_pool_forward(input, geometry, output, "avg_pool_forward");
  const index total = output.size();
  const T scale = T(1) / static_cast<T>(geometry.kernel * geometry.kernel);
  cuda_detail::launch_over("avg_pool_forward_kernel", output.data(), total, cuda_detail::avg_pool_forward_kernel<T>,
                           input.data(), geometry, total, scale, output.data());
}

template <class T>
void avg_pool_backward(TensorView<const T, 2, cuda> output_gradient, const ConvolutionGeometry& geometry,
                       TensorView<T, 2, cuda> input_gradient) {
  detail::check_pool_backward(output_gradient, geometry, input_gradient, "avg_pool_backward");
  const index total = input_gradient.size();
  const T scale = T(1) / static_cast<T>(geometry.kernel * geometry.kernel);
  cuda_detail::launch_over("avg_pool_backward_kernel", input_gradient.data(), total,
                           cuda_detail::avg_pool_backward_kernel<T>, output_gradient.data(), geometry, total, scale,
                           input_gradient.data());
}

template <class T>
void transpose_samples(TensorView<const T, 2, cuda> input, index rows, index cols, TensorView<T, 2, cuda> output) {
  detail::check_transpose_samples(input, rows, cols, output);
  const index total = output.size();
  cuda_detail::launch_over("transpose_samples_kernel", output.data(), total, cuda_detail::transpose_samples_kernel<T>,
                           input.data(), rows, cols, total, output.data());
}

}  // namespace pnn
