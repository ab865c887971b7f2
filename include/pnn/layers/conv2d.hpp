// pnn/layers/conv2d.hpp: Conv2D<Filters, Kernel, Pad<P>, Stride<S>>, the 2-D convolution, with its
// options Pad and Stride.
//
//   Conv2D<16, 5, Pad<2>>            5x5 kernels, 16 filters, "same" padding: Shape<C, 28, 28> -> Shape<16, 28, 28>
//   Conv2D<64, 3, Pad<1>, Stride<2>> halves the height and width
//
// Input Shape<C, H, W>, output Shape<Filters, (H + 2P - K) / S + 1, (W + 2P - K) / S + 1>. The weight
// has PyTorch's shape (Filters, C, K, K), in files too (torch.nn.Conv2d loads it as it is); memory holds
// it (Filters, K, K, C), channels-last like the activations, and io/ converts (FileLayout). The bias is
// (Filters,).
//
// Samples are stored channels-last, so im2col turns a chunk of samples into one matrix whose rows are the
// flattened windows, and the convolution of the whole chunk is one matrix product:
//   y = columns W^T + b,  dW += dy^T columns,  db += column sums of dy,  dx = col2im(dy W).
// The batch is processed in chunks of samples whose columns matrix stays in cache; backward rebuilds a
// chunk's columns rather than keeping the whole batch's, which measured faster (and takes far less memory).
#pragma once

#include <algorithm>
#include <concepts>
#include <string>

#include "pnn/core/window.hpp"
#include "pnn/core/linalg.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

// Conv2D's option: P zeros added on every side of the input.
template <index P>
struct Pad {
  static_assert(P >= 0, "Pad<P> needs P >= 0: it is the number of zeros added on each side");
  static constexpr index value = P;
};

// Conv2D's option: the step between windows.
template <index S>
struct Stride {
  static_assert(S > 0, "Stride<S> needs S > 0");
  static constexpr index value = S;
};

namespace detail {
template <class Option>
inline constexpr index padding_of = 0;
template <index P>
inline constexpr index padding_of<Pad<P>> = P;
template <class Option>
inline constexpr bool is_padding = false;
template <index P>
inline constexpr bool is_padding<Pad<P>> = true;
template <class Option>
inline constexpr index stride_of = 1;
template <index S>
inline constexpr index stride_of<Stride<S>> = S;
template <class Option>
inline constexpr bool is_stride = false;
template <index S>
inline constexpr bool is_stride<Stride<S>> = true;

template <class... Options>
struct convolution_options {
  static_assert(((is_padding<Options> || is_stride<Options>)&&...),
                "Conv2D<Filters, Kernel, Options...> takes only pnn::Pad<P> and pnn::Stride<S> as options");
  static_assert((index{0} + ... + index{is_padding<Options>}) <= 1, "Conv2D takes at most one Pad<P>");
  static_assert((index{0} + ... + index{is_stride<Options>}) <= 1, "Conv2D takes at most one Stride<S>");
  static constexpr index padding = (index{0} + ... + padding_of<Options>);
  static constexpr index stride = (index{1} * ... * stride_of<Options>);
};
}  // namespace detail

template <index Filters, index Kernel, class... Options>
struct Conv2D {
  static_assert(Filters > 0, "Conv2D<Filters, Kernel> needs Filters > 0");
  static_assert(Kernel > 0, "Conv2D<Filters, Kernel> needs Kernel > 0 (the side of the square kernel)");
  using options = detail::convolution_options<Options...>;
  static constexpr index padding = options::padding;
  static constexpr index stride = options::stride;

  static std::string name() {
    std::string text = "Conv2D<" + std::to_string(Filters) + ", " + std::to_string(Kernel);
    if (padding != 0) text += ", Pad<" + std::to_string(padding) + ">";
    if (stride != 1) text += ", Stride<" + std::to_string(stride) + ">";
    return text + ">";
  }

  template <class T, class D, class In>
  class layer;
};

template <index Filters, index Kernel, class... Options>
template <class T, class D, class In>
class Conv2D<Filters, Kernel, Options...>::layer {
  static constexpr ConvolutionGeometry geometry = window_geometry<In>(Kernel, stride, padding);
  // Naming input_fits below instantiates the check, which reports an input that does not fit as
  // layer_input_error<Conv2D<...>, In>. The output shape tests geometry.fits() first, so it stays a valid
  // constant even then (clang takes the failed check's value as non-constant) and no further errors follow.
  static constexpr bool input_fits = check_layer_input<geometry.fits(), Conv2D, In>;
  static constexpr bool valid = geometry.fits() && input_fits;

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = Shape<Filters, valid ? geometry.output_height : 1, valid ? geometry.output_width : 1>;
  static constexpr index channels = valid ? geometry.channels : 1;
  static constexpr index positions = output_shape::dims[1] * output_shape::dims[2];  // output pixels per sample
  static constexpr index patch = Kernel * Kernel * channels;                         // one row of the columns matrix
  // Bytes of columns matrix per chunk of samples. On the CPU small enough to stay in L2 between im2col
  // and gemm; a GPU has no such cache to keep and wants the largest gemm it can get, each chunk being a
  // kernel launch, so there the budget is 64 MiB.
  static constexpr index columns_budget_bytes = std::same_as<D, cpu> ? index{1} << 18 : index{1} << 26;

  // The columns matrix of one chunk of samples. It lives in the pass's state, not in the layer, so
  // passes in flight at the same time (pipeline micro-batches) never share it.
  struct State {
    Tensor<T, 2, D> columns;
    BatchSum<T, D> weight_sum, bias_sum;  // the canonical trees of the gradients' sums over the batch
  };

  static std::string name() { return Conv2D::name(); }

  static void declare(ParameterDeclarations& declarations) {
    declarations.parameter("weight", {Filters, channels, Kernel, Kernel}, Init::he_normal, patch,
                           Filters * Kernel * Kernel, /*memory_axes=*/{0, 2, 3, 1});
    declarations.parameter("bias", {Filters}, Init::zeros, patch, Filters * Kernel * Kernel);
  }
  void bind(ParameterCursor<T, D>& cursor) {
    cursor.take(weight_, weight_gradient_, Extents<2>{Filters, patch});
    cursor.take(bias_, bias_gradient_, Extents<1>{Filters});
  }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State& state, const Context&) const {
    for_each_chunk(0, x.dim(0), state, [&](index first, index count, TensorView<T, 2, D> columns) {
      im2col<T>(x.rows(first, count), geometry, columns);
      const TensorView<T, 2, D> out = y.rows(first, count).reshape(Extents<2>{count * positions, Filters});
      out = bias_;  // b at every output pixel, then accumulate columns W^T on top
      gemm<T>(columns, weight_, out, {.transpose_b = true, .beta = 1});
    });
  }

  // The weight gradient's leaf for each piece of the batch (core/batch_sum.hpp) is the sum of its
  // chunks' products, chunked from the piece's first sample, so a piece adds up alike wherever it is.
  void backward(TensorView<const T, 2, D> x, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State& state, const Context& context) const {
    const BatchPieces pieces = batch_pieces(context.part(x.dim(0)));
    add_batch_column_sums<T>(dy.reshape(Extents<2>{x.dim(0) * positions, Filters}), bias_gradient_, pieces, positions,
                             state.bias_sum);
    state.weight_sum.start(weight_gradient_.size());
    for (int piece = 0; piece < pieces.count; ++piece) {
      const index piece_begin = pieces.begin(piece), piece_samples = pieces.end(piece) - piece_begin;
      const TensorView<T, 2, D> leaf = (piece_samples > 0 ? state.weight_sum.leaf() : state.weight_sum.zeroed_leaf())
                                           .reshape(Extents<2>{Filters, patch});
      double beta = 0;  // the piece's first product starts its leaf
      for_each_chunk(piece_begin, piece_samples, state, [&](index first, index count, TensorView<T, 2, D> columns) {
        const auto gradient = dy.rows(first, count).reshape(Extents<2>{count * positions, Filters});
        im2col<T>(x.rows(first, count), geometry, columns);
        gemm<T>(gradient, columns, leaf, {.transpose_a = true, .beta = beta});  // dW += dy^T columns
        beta = 1;
        if (dx) {
          gemm<T>(gradient, weight_, columns, {});  // the columns' gradient replaces the columns
          col2im<T>(columns, geometry, dx.rows(first, count));
        }
      });
      state.weight_sum.push();
    }
    state.weight_sum.add_to(TensorView<T, 1, D>(weight_gradient_.data(), Extents<1>{weight_gradient_.size()}));
  }

 private:
  // Calls body(first sample, sample count, columns matrix for those samples) over samples
  // [begin, begin + samples), in chunks of at most columns_budget_bytes of columns.
  template <class Body>
  static void for_each_chunk(index begin, index samples, State& state, Body&& body) {
    const index sample_bytes = static_cast<index>(sizeof(T)) * positions * patch;
    const index per_chunk = std::clamp<index>(columns_budget_bytes / sample_bytes, 1, std::max<index>(samples, 1));
    state.columns.resize({per_chunk * positions, patch});
    for (index first = 0; first < samples; first += per_chunk) {
      const index count = std::min(per_chunk, samples - first);
      body(begin + first, count, state.columns.view().rows(0, count * positions));
    }
  }

  TensorView<T, 2, D> weight_, weight_gradient_;
  TensorView<T, 1, D> bias_, bias_gradient_;
};

static_assert(Layer<Conv2D<16, 5, Pad<2>>::layer<float, cpu, Shape<1, 28, 28>>>);
static_assert(Layer<Conv2D<8, 3, Stride<2>, Pad<1>>::layer<double, cpu, Shape<3, 9, 7>>>);

}  // namespace pnn
