// pnn/cpu/kernels.hpp: the CPU kernels behind the convolution, pooling and flatten layers: im2col /
// col2im, max and average pooling forward and backward, the per-sample transpose (their geometry and
// argument checks: core/window.hpp).
//
// Every kernel here walks windows with the channel index innermost, so its inner loops run over
// contiguous memory and vectorise. No loop tests borders per element: im2col reads from a zero-bordered
// copy of each sample, col2im clips each window row once. The vector code uses GCC/Clang vector
// extensions (as pnn already relies on GNU extensions elsewhere), never intrinsics, so it follows the
// target flags.
//
// Each kernel is a free function overloaded on the device through its TensorView arguments. The layers
// call them unqualified with the view's device, so each backend adds its overloads (cuda/kernels.cuh)
// and the layers stay unchanged.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/device.hpp"
#include "pnn/core/window.hpp"

namespace pnn {

namespace detail {
// One vector of values of type T and a matching vector of offsets, as GCC/Clang vector extensions: the
// compiler maps them onto the widest registers the target flags allow (one AVX register, two SSE ones)
// with no intrinsics and no instruction-set checks here. They appear only as local variables, so no
// function's calling convention depends on the target.
template <class T>
struct Lanes {
  static_assert(std::is_floating_point_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "pnn's CPU kernels take float or double elements");
  static constexpr index count = 32 / static_cast<index>(sizeof(T));
  using Offset = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;  // same width: selects line up
  using Values [[gnu::vector_size(32)]] = T;
  using Offsets [[gnu::vector_size(32)]] = Offset;
  using StoredOffsets [[gnu::vector_size(count * sizeof(SampleOffset))]] = SampleOffset;
};

// Copies `vectors` whole vectors of values. Each is a fixed-size memcpy, which the compiler turns into a
// vector load and store instead of a library call.
template <class T>
inline void copy_vectors(const T* source, T* destination, index vectors) {
  constexpr index lanes = Lanes<T>::count;
  for (index v = 0; v < vectors; ++v)
    std::memcpy(destination + v * lanes, source + v * lanes, sizeof(typename Lanes<T>::Values));
}

// destination[i] += source[i] for i < count, a vector at a time.
template <class T>
inline void add_into(const T* source, T* destination, index count) {
  using Values = typename Lanes<T>::Values;
  constexpr index lanes = Lanes<T>::count;
  index i = 0;
  for (; i + lanes <= count; i += lanes) {
    Values sum, addend;
    std::memcpy(&sum, destination + i, sizeof sum);
    std::memcpy(&addend, source + i, sizeof addend);
    sum += addend;
    std::memcpy(destination + i, &sum, sizeof sum);
  }
  for (; i < count; ++i) destination[i] += source[i];
}

// Whether every input element lies in exactly one window: backward can then write each input gradient
// once instead of clearing the whole gradient and adding into it.
inline bool windows_tile_input(const ConvolutionGeometry& g) {
  return g.stride == g.kernel && g.output_height * g.kernel == g.height && g.output_width * g.kernel == g.width;
}
}  // namespace detail

// columns(s * OH * OW + oh * OW + ow, (kh * K + kw) * C + c) = padded input s at (oh*S + kh, ow*S + kw, c).
// input is (samples, H*W*C); columns is (samples * OH*OW, K*K*C). A convolution is then columns * W^T
// with the weights held (filters, K, K, C) in memory (files hold PyTorch's (filters, C, K, K): io/).
//
// Each sample is first copied into a zero-bordered image, so every window row is one contiguous run with
// no border cases. Runs are copied in whole vector blocks, spilling into the start of the next run (which
// is written afterwards) instead of finishing with a scalar loop: a 5x5 kernel on one channel has runs
// of only 5 values. Only the runs at the very end of `columns` are copied exactly.
template <class T>
void im2col(TensorView<const T, 2, cpu> input, const ConvolutionGeometry& geometry, TensorView<T, 2, cpu> columns) {
  detail::check_im2col(input, geometry, columns);
  constexpr index lanes = detail::Lanes<T>::count;
  const index channels = geometry.channels, width = geometry.width, kernel = geometry.kernel;
  const index stride = geometry.stride, padding = geometry.padding;
  const index padded_width = width + 2 * padding, padded_height = geometry.height + 2 * padding;
  const index run = kernel * channels;  // one kernel row of a window: contiguous in the padded image
  const index run_vectors = (run + lanes - 1) / lanes;
  // The zero border stays zero from one sample to the next; the slack lets the last run's blocks spill.
  std::vector<T> padded(static_cast<std::size_t>(padded_height * padded_width * channels + lanes), T(0));
  const index samples = input.dim(0);
  T* out = columns.data();
  T* const exact_from = columns.data() + std::max<index>(columns.size() - run_vectors * lanes, 0);
  for (index s = 0; s < samples; ++s) {
    const T* image = input.data() + s * geometry.input_size();
    for (index h = 0; h < geometry.height; ++h)
      std::memcpy(padded.data() + ((h + padding) * padded_width + padding) * channels, image + h * width * channels,
                  sizeof(T) * static_cast<std::size_t>(width * channels));
    for (index oh = 0; oh < geometry.output_height; ++oh) {
      for (index ow = 0; ow < geometry.output_width; ++ow) {
        const T* window = padded.data() + (oh * stride * padded_width + ow * stride) * channels;
        for (index kh = 0; kh < kernel; ++kh, out += run) {
          const T* source = window + kh * padded_width * channels;
          if (out < exact_from) [[likely]]
            detail::copy_vectors(source, out, run_vectors);
          else std::copy_n(source, run, out);
        }
      }
    }
  }
}

// The adjoint of im2col: input_gradient = sum over the windows of their column rows, each added back to
// the pixels it was copied from (padding discarded). Assigns input_gradient.
template <class T>
void col2im(TensorView<const T, 2, cpu> columns, const ConvolutionGeometry& geometry,
            TensorView<T, 2, cpu> input_gradient) {
  detail::check_col2im(columns, geometry, input_gradient);
  const index channels = geometry.channels, height = geometry.height, width = geometry.width;
  const index kernel = geometry.kernel, stride = geometry.stride, padding = geometry.padding;
  const index run = kernel * channels;
  const index samples = input_gradient.dim(0);
  std::fill_n(input_gradient.data(), input_gradient.size(), T(0));
  const T* in = columns.data();
  for (index s = 0; s < samples; ++s) {
    T* image = input_gradient.data() + s * geometry.input_size();
    for (index oh = 0; oh < geometry.output_height; ++oh) {
      const index top = oh * stride - padding;
      for (index ow = 0; ow < geometry.output_width; ++ow) {
        // The part of each window row inside the image (not in the padding): [inside_begin, inside_end) of the run.
        const index left = ow * stride - padding;
        const index inside_begin = std::clamp<index>(-left, 0, kernel) * channels;
        const index inside_end = std::clamp<index>(width - left, 0, kernel) * channels;
        for (index kh = 0; kh < kernel; ++kh, in += run) {
          const index row = top + kh;
          if (row < 0 || row >= height) continue;
          const index origin = (row * width + left) * channels;  // where the run would start, padding included
          detail::add_into(in + inside_begin, image + (origin + inside_begin), inside_end - inside_begin);
        }
      }
    }
  }
}

// output(s, (oh * OW + ow) * C + c) = max of the window at (oh, ow) in channel c; argmax receives the
// offset of that maximum within the sample's input row (the first one, in window order, on ties).
// input is (samples, H*W*C); output and argmax are (samples, OH*OW*C).
template <class T>
void max_pool_forward(TensorView<const T, 2, cpu> input, const ConvolutionGeometry& geometry,
                      TensorView<T, 2, cpu> output, TensorView<SampleOffset, 2, cpu> argmax) {
  detail::check_max_pool_forward(input, geometry, output, argmax);
  using Lanes = detail::Lanes<T>;
  using Offset = typename Lanes::Offset;
  typename Lanes::Offsets lane;  // 0, 1, 2, ...: added to a window's offset, the offset of every lane
  for (index l = 0; l < Lanes::count; ++l) lane[l] = static_cast<Offset>(l);
  const index channels = geometry.channels, kernel = geometry.kernel, stride = geometry.stride;
  const index row_pitch = geometry.width * channels;
  const index vector_channels = channels / Lanes::count * Lanes::count;
  const index samples = input.dim(0);
  T* best_out = output.data();
  SampleOffset* where_out = argmax.data();
  for (index s = 0; s < samples; ++s) {
    const T* image = input.data() + s * geometry.input_size();
    for (index oh = 0; oh < geometry.output_height; ++oh) {
      for (index ow = 0; ow < geometry.output_width; ++ow, best_out += channels, where_out += channels) {
        const index corner = oh * stride * row_pitch + ow * stride * channels;
        // Channels a vector at a time: the running maxima and their offsets stay in registers.
        for (index c = 0; c < vector_channels; c += Lanes::count) {
          typename Lanes::Values best, value;
          std::memcpy(&best, image + corner + c, sizeof best);
          typename Lanes::Offsets where = lane + static_cast<Offset>(corner + c);
          for (index kh = 0; kh < kernel; ++kh) {
            for (index kw = kh == 0 ? 1 : 0; kw < kernel; ++kw) {
              const index offset = corner + kh * row_pitch + kw * channels + c;
              std::memcpy(&value, image + offset, sizeof value);
              const auto greater = value > best;  // strict: the first maximum in window order wins ties
              best = greater ? value : best;
              where = greater ? lane + static_cast<Offset>(offset) : where;
            }
          }
          std::memcpy(best_out + c, &best, sizeof best);
          const auto stored = __builtin_convertvector(where, typename Lanes::StoredOffsets);
          std::memcpy(where_out + c, &stored, sizeof stored);
        }
        for (index c = vector_channels; c < channels; ++c) {
          T best = image[corner + c];
          index where = corner + c;
          for (index kh = 0; kh < kernel; ++kh) {
            for (index kw = kh == 0 ? 1 : 0; kw < kernel; ++kw) {
              const index offset = corner + kh * row_pitch + kw * channels + c;
              if (image[offset] > best) {
                best = image[offset];
                where = offset;
              }
            }
          }
          best_out[c] = best;
          where_out[c] = static_cast<SampleOffset>(where);
        }
      }
    }
  }
}

// Routes each output gradient to the input element that was the maximum. Assigns input_gradient.
template <class T>
void max_pool_backward(TensorView<const T, 2, cpu> output_gradient, TensorView<const SampleOffset, 2, cpu> argmax,
                       const ConvolutionGeometry& geometry, TensorView<T, 2, cpu> input_gradient) {
  detail::check_max_pool_backward(output_gradient, argmax, geometry, input_gradient);
  const index channels = geometry.channels, kernel = geometry.kernel, stride = geometry.stride;
  const index row_pitch = geometry.width * channels;
  const index samples = input_gradient.dim(0), pooled = geometry.pooled_size();
  if (!detail::windows_tile_input(geometry)) std::fill_n(input_gradient.data(), input_gradient.size(), T(0));
  for (index s = 0; s < samples; ++s) {
    T* image = input_gradient.data() + s * geometry.input_size();
    const T* gradient = output_gradient.data() + s * pooled;
    const SampleOffset* where = argmax.data() + s * pooled;
    if (stride < kernel) {
      // Overlapping windows can pick the same element: accumulate.
      for (index i = 0; i < pooled; ++i) image[where[i]] += gradient[i];
      continue;
    }
    // Disjoint windows: write every element of each window once, the gradient where the maximum was.
    for (index oh = 0; oh < geometry.output_height; ++oh) {
      for (index ow = 0; ow < geometry.output_width; ++ow, gradient += channels, where += channels) {
        const index corner = oh * stride * row_pitch + ow * stride * channels;
        for (index kh = 0; kh < kernel; ++kh)
          for (index kw = 0; kw < kernel; ++kw) {
            const index offset = corner + kh * row_pitch + kw * channels;
            for (index c = 0; c < channels; ++c)
              image[offset + c] = where[c] == static_cast<SampleOffset>(offset + c) ? gradient[c] : T(0);
          }
      }
    }
  }
}

// output = the mean of each window, per channel. Shapes as for max_pool_forward.
template <class T>
void avg_pool_forward(TensorView<const T, 2, cpu> input, const ConvolutionGeometry& geometry,
                      TensorView<T, 2, cpu> output) {
  detail::check_pool_forward(input, geometry, output, "avg_pool_forward");
  const index channels = geometry.channels, kernel = geometry.kernel, stride = geometry.stride;
  const index row_pitch = geometry.width * channels;
  const index samples = input.dim(0);
  const T scale = T(1) / static_cast<T>(kernel * kernel);
  T* mean = output.data();
  for (index s = 0; s < samples; ++s) {
    const T* image = input.data() + s * geometry.input_size();
    for (index oh = 0; oh < geometry.output_height; ++oh) {
      for (index ow = 0; ow < geometry.output_width; ++ow, mean += channels) {
        const index corner = oh * stride * row_pitch + ow * stride * channels;
        for (index c = 0; c < channels; ++c) mean[c] = T(0);
        for (index kh = 0; kh < kernel; ++kh)
          for (index kw = 0; kw < kernel; ++kw) {
            const T* pixel = image + corner + kh * row_pitch + kw * channels;
            for (index c = 0; c < channels; ++c) mean[c] += pixel[c];
          }
        for (index c = 0; c < channels; ++c) mean[c] *= scale;
      }
    }
  }
}

// Spreads each output gradient evenly over its window. Assigns input_gradient.
template <class T>
void avg_pool_backward(TensorView<const T, 2, cpu> output_gradient, const ConvolutionGeometry& geometry,
                       TensorView<T, 2, cpu> input_gradient) {
  detail::check_pool_backward(output_gradient, geometry, input_gradient, "avg_pool_backward");
  const index channels = geometry.channels, kernel = geometry.kernel, stride = geometry.stride;
  const index row_pitch = geometry.width * channels;
  const index samples = input_gradient.dim(0);
  const T scale = T(1) / static_cast<T>(kernel * kernel);
  const bool tiles = detail::windows_tile_input(geometry);  // then each element is written exactly once
  if (!tiles) std::fill_n(input_gradient.data(), input_gradient.size(), T(0));
  const T* gradient = output_gradient.data();
  for (index s = 0; s < samples; ++s) {
    T* image = input_gradient.data() + s * geometry.input_size();
    for (index oh = 0; oh < geometry.output_height; ++oh) {
      for (index ow = 0; ow < geometry.output_width; ++ow, gradient += channels) {
        const index corner = oh * stride * row_pitch + ow * stride * channels;
        for (index kh = 0; kh < kernel; ++kh)
          for (index kw = 0; kw < kernel; ++kw) {
            T* pixel = image + corner + kh * row_pitch + kw * channels;
            if (tiles)
              for (index c = 0; c < channels; ++c) pixel[c] = scale * gradient[c];
            else
              for (index c = 0; c < channels; ++c) pixel[c] += scale * gradient[c];
          }
      }
    }
  }
}

// output row = the transpose of the input row's rows x cols matrix, for every sample. Tiles of 8 x 8 keep
// both the reads and the writes of a tile within a few cache lines.
template <class T>
void transpose_samples(TensorView<const T, 2, cpu> input, index rows, index cols, TensorView<T, 2, cpu> output) {
  detail::check_transpose_samples(input, rows, cols, output);
  constexpr index tile = 8;
  const index sample_size = rows * cols;
  for (index s = 0; s < input.dim(0); ++s) {
    const T* from = input.data() + s * sample_size;
    T* to = output.data() + s * sample_size;
    for (index r0 = 0; r0 < rows; r0 += tile)
      for (index c0 = 0; c0 < cols; c0 += tile) {
        const index r1 = std::min(r0 + tile, rows), c1 = std::min(c0 + tile, cols);
        for (index r = r0; r < r1; ++r)
          for (index c = c0; c < c1; ++c) to[c * rows + r] = from[r * cols + c];
      }
  }
}

}  // namespace pnn
