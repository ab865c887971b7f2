// pnn/layers/batch_norm.hpp: BatchNorm<Options...>, batch normalisation of features or of channels, with
// its options Momentum<Numerator, Denominator> and Epsilon<Numerator, Denominator>.
//
//   BatchNorm<>                        momentum 0.1 and epsilon 1e-5, PyTorch's defaults
//   BatchNorm<Momentum<1, 100>>        the running statistics move 1% of the way to each batch's
//   BatchNorm<Epsilon<1, 1000>>        epsilon 1e-3
//
// The options are fractions of integers because floating-point template arguments are not accepted by
// every compiler pnn supports (nvcc).
//
// Input Shape<N> (PyTorch's BatchNorm1d): each feature is normalised over the batch. Input Shape<C, H, W>
// (BatchNorm2d): each channel over the batch and all H x W positions. Samples are stored channels-last,
// so a batch of (H, W, C) samples viewed as a (batch * H * W, C) matrix has one channel per column, and
// every per-channel statistic is a column sum. The output has the input's shape:
//   y = (x - mean) / sqrt(variance + epsilon) * weight + bias
// While training, mean and (biased) variance are the batch's, and the running statistics are updated as
// PyTorch does, with the unbiased variance:
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * variance * n / (n - 1)
// In inference (Context::training false) the running statistics are used instead.
//
// The parameters "weight" (ones) and "bias" (zeros) and the buffers "running_mean" (zeros),
// "running_var" (ones) and "num_batches_tracked" (the training passes that updated the running
// statistics, saved as int64) are PyTorch's, so a saved model's tensors load into torch.nn.BatchNorm.
#pragma once

#include <initializer_list>
#include <string>
#include <type_traits>

#include "pnn/core/linalg.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

// BatchNorm's option: the weight Numerator / Denominator of each batch in the running statistics.
template <index Numerator, index Denominator>
struct Momentum {
  static_assert(Denominator > 0 && Numerator >= 0 && Numerator <= Denominator,
                "Momentum<Numerator, Denominator> must lie in [0, 1], e.g. Momentum<1, 10> for PyTorch's 0.1");
  static constexpr double value = static_cast<double>(Numerator) / static_cast<double>(Denominator);
  static std::string name() {
    return "Momentum<" + std::to_string(Numerator) + ", " + std::to_string(Denominator) + ">";
  }
};

// BatchNorm's option: Numerator / Denominator added to the variance before its square root.
template <index Numerator, index Denominator>
struct Epsilon {
  static_assert(Denominator > 0 && Numerator > 0,
                "Epsilon<Numerator, Denominator> must be positive, e.g. Epsilon<1, 100000> for PyTorch's 1e-5");
  static constexpr double value = static_cast<double>(Numerator) / static_cast<double>(Denominator);
  static std::string name() {
    return "Epsilon<" + std::to_string(Numerator) + ", " + std::to_string(Denominator) + ">";
  }
};

namespace detail {
template <class Option>
inline constexpr bool is_momentum = false;
template <index N, index D>
inline constexpr bool is_momentum<Momentum<N, D>> = true;
template <class Option>
inline constexpr bool is_epsilon = false;
template <index N, index D>
inline constexpr bool is_epsilon<Epsilon<N, D>> = true;

// The option of the kind Is among Options, or Default.
template <template <class> class Is, class Default, class... Options>
struct find_option {
  using type = Default;
};
template <template <class> class Is, class Default, class First, class... Rest>
struct find_option<Is, Default, First, Rest...> {
  using type = std::conditional_t<Is<First>::value, First, typename find_option<Is, Default, Rest...>::type>;
};
template <class Option>
struct is_momentum_option : std::bool_constant<is_momentum<Option>> {};
template <class Option>
struct is_epsilon_option : std::bool_constant<is_epsilon<Option>> {};

template <class... Options>
struct batch_norm_options {
  static_assert(((is_momentum<Options> || is_epsilon<Options>)&&...),
                "BatchNorm<Options...> takes only pnn::Momentum<N, D> and pnn::Epsilon<N, D> as options");
  static_assert((index{0} + ... + index{is_momentum<Options>}) <= 1, "BatchNorm takes at most one Momentum<N, D>");
  static_assert((index{0} + ... + index{is_epsilon<Options>}) <= 1, "BatchNorm takes at most one Epsilon<N, D>");
  using momentum = typename find_option<is_momentum_option, Momentum<1, 10>, Options...>::type;
  using epsilon = typename find_option<is_epsilon_option, Epsilon<1, 100000>, Options...>::type;
};

// The number of normalised channels of a sample shape: its features for Shape<N>, C for Shape<C, H, W>,
// and 0 for shapes BatchNorm does not take.
template <class In>
constexpr index normalised_channels() {
  if constexpr (In::rank == 1 || In::rank == 3) return In::dims[0];
  else return 0;
}
}  // namespace detail

template <class... Options>
struct BatchNorm {
  static constexpr bool batch_statistics = true;  // uses_batch_statistics (layers/layer.hpp)
  using options = detail::batch_norm_options<Options...>;
  static constexpr double momentum = options::momentum::value;
  static constexpr double epsilon = options::epsilon::value;

  static std::string name() {
    std::string text = "BatchNorm<";
    ((text += (text.back() == '<' ? "" : ", ") + Options::name()), ...);
    return text + ">";
  }

  template <class T, class D, class In>
  class layer;
};

template <class... Options>
template <class T, class D, class In>
class BatchNorm<Options...>::layer {
  static constexpr bool input_fits = check_layer_input<detail::normalised_channels<In>() != 0, BatchNorm, In>;

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = In;
  static constexpr index channels = input_fits ? detail::normalised_channels<In>() : 1;
  static constexpr index positions = In::size / channels;  // values of one channel in one sample (H * W)

  struct State {
    // The statistics the forward pass normalised with, per channel, for its backward pass.
    Tensor<T, 1, D> mean, inverse_deviation;  // inverse_deviation = 1 / sqrt(variance + epsilon)
    bool batch_statistics = true;             // false when the running statistics were used (inference)
    // Per-channel values repeated over the positions of one sample, so that an expression over the
    // batch broadcasts them with a period of a whole sample rather than of `channels` values: the CPU
    // executor then evaluates long contiguous runs (several times faster for 16 channels).
    Tensor<T, 1, D> mean_row, scale_row, offset_row, slope_row;
    Tensor<T, 1, D> gradient_sum, normalised_gradient_sum;  // per channel: sum(dy), sum(dy * x_hat)
    Tensor<T, 2, D> scratch;                                // dy * x_hat when dx is not wanted, so cannot hold it
    BatchSum<T, D> channel_sum;                             // the canonical tree of a per-channel sum over the batch
  };

  static std::string name() { return BatchNorm::name(); }

  static void declare(ParameterDeclarations& declarations) {
    declarations.parameter("weight", {channels}, Init::ones);
    declarations.parameter("bias", {channels}, Init::zeros);
    declarations.buffer("running_mean", {channels}, Init::zeros);
    declarations.buffer("running_var", {channels}, Init::ones);
    declarations.count("num_batches_tracked");
  }
  void bind(ParameterCursor<T, D>& cursor) {
    cursor.take(weight_, weight_gradient_, Extents<1>{channels});
    cursor.take(bias_, bias_gradient_, Extents<1>{channels});
    running_mean_.rebind(cursor.take().value);
    running_variance_.rebind(cursor.take().value);
    batches_tracked_.rebind(cursor.take().value);
  }

  // The statistics are the whole batch's: over the pass's rows, and with Context::across (data parallelism)
  // completed over the other ranks' rows too, so every rank normalises with serial training's bits. A
  // pipeline's micro-batch has no `across`: it normalises over its own rows (StatisticsPerMicrobatch).
  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State& state, const Context& context) const {
    const BatchPart part = context.part(x.dim(0));
    const index count = (context.across ? part.batch : x.dim(0)) * positions;  // values per channel
    allocate(state);
    state.batch_statistics = context.training;
    if (context.training) {
      PNN_CHECK(count > 1, ShapeError,
                "BatchNorm needs more than one value per channel while training, got a batch of ", part.batch,
                " sample(s) of shape ", format_shape<In>());
      const BatchPieces pieces = batch_pieces(part);
      batch_channel_sums(x, pieces, state, state.mean, context.across);
      state.mean *= T(1) / static_cast<T>(count);
      // Two passes (centre, then square) keep the variance accurate when the mean is large. y holds the
      // squares until it receives the output.
      tile(state.mean_row, state.mean);
      y = square(x - state.mean_row);
      auto& variance = state.inverse_deviation;
      batch_channel_sums(y, pieces, state, variance, context.across);
      variance *= T(1) / static_cast<T>(count);
      const T keep = static_cast<T>(1 - momentum), take = static_cast<T>(momentum);
      running_mean_ = running_mean_ * keep + state.mean * take;
      running_variance_ =
          running_variance_ * keep + variance * (take * static_cast<T>(count) / static_cast<T>(count - 1));
      batches_tracked_ = batches_tracked_ + T(1);
      variance = rsqrt(variance + static_cast<T>(epsilon));
    } else {
      state.mean = running_mean_;
      state.inverse_deviation = rsqrt(running_variance_ + static_cast<T>(epsilon));
      tile(state.mean_row, state.mean);
    }
    tile(state.scale_row, state.inverse_deviation * weight_);
    tile(state.offset_row, bias_);
    y = (x - state.mean_row) * state.scale_row + state.offset_row;
  }

  // Per channel, over its n values, with x_hat = (x - mean) * inverse_deviation:
  //   d weight = sum(dy * x_hat),  d bias = sum(dy)
  // With batch statistics the mean and variance depend on every input, so
  //   dx = weight * inverse_deviation * (dy - mean(dy) - x_hat * mean(dy * x_hat));
  // with running statistics they are constants and dx = weight * inverse_deviation * dy.
  // The parameter gradients get this pass's sums (a data-parallel all-reduce adds the ranks' later);
  // dx needs the whole batch's, completed over Context::across.
  void backward(TensorView<const T, 2, D> x, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State& state, const Context& context) const {
    const BatchPart part = context.part(x.dim(0));
    const index count = (context.across ? part.batch : x.dim(0)) * positions;
    const BatchPieces pieces = batch_pieces(part);
    batch_channel_sums(dy, pieces, state, state.gradient_sum, nullptr);
    bias_gradient_ += state.gradient_sum;

    // dx, when wanted, holds dy * x_hat until it receives its own value.
    if (!dx) state.scratch.resize(x.shape());
    const TensorView<T, 2, D> product = dx ? dx : state.scratch.view();
    tile(state.mean_row, state.mean);
    tile(state.slope_row, state.inverse_deviation);
    product = dy * ((x - state.mean_row) * state.slope_row);
    batch_channel_sums(product, pieces, state, state.normalised_gradient_sum, nullptr);
    weight_gradient_ += state.normalised_gradient_sum;

    if (!dx) return;
    tile(state.scale_row, state.inverse_deviation * weight_);
    if (state.batch_statistics) {
      if (context.across) {
        context.across->sum(state.gradient_sum.view());
        context.across->sum(state.normalised_gradient_sum.view());
      }
      // x_hat * mean(dy * x_hat) = (x - mean) * inverse_deviation * mean(dy * x_hat)
      const T per_value = T(1) / static_cast<T>(count);
      tile(state.offset_row, state.gradient_sum * per_value);
      tile(state.slope_row, state.inverse_deviation * state.normalised_gradient_sum * per_value);
      dx = (dy - state.offset_row - (x - state.mean_row) * state.slope_row) * state.scale_row;
    } else {
      dx = dy * state.scale_row;
    }
  }

 private:
  static void allocate(State& state) {
    for (Tensor<T, 1, D>* channel :
         {&state.mean, &state.inverse_deviation, &state.gradient_sum, &state.normalised_gradient_sum})
      channel->resize({channels});
    for (Tensor<T, 1, D>* row : {&state.mean_row, &state.scale_row, &state.offset_row, &state.slope_row})
      row->resize({In::size});
  }

  // sums[c] = the sum of channel c over a pass's (rows, In::size) matrix: each piece of the batch
  // (core/batch_sum.hpp) sums its rows' values of the channel, and the pieces add up in the canonical
  // tree; with `across`, over the other ranks' rows too.
  static void batch_channel_sums(TensorView<const T, 2, D> batch, const BatchPieces& pieces, State& state,
                                 Tensor<T, 1, D>& sums, const BatchReduction* across) {
    sums.fill_zero();
    add_batch_column_sums<T>(batch.reshape(Extents<2>{batch.dim(0) * positions, channels}), sums.view(), pieces,
                             positions, state.channel_sum);
    if (across) across->sum(sums.view());
  }

  // Writes the per-channel values at every position of one sample's row.
  template <class PerChannel>
  static void tile(Tensor<T, 1, D>& row, const PerChannel& values) {
    row.reshape(Extents<2>{positions, channels}) = values;
  }

  TensorView<T, 1, D> weight_, weight_gradient_, bias_, bias_gradient_;
  TensorView<T, 1, D> running_mean_, running_variance_;
  TensorView<T, 1, D> batches_tracked_;  // one element
};

static_assert(Layer<BatchNorm<>::layer<float, cpu, Shape<16, 7, 7>>>);
static_assert(Layer<BatchNorm<Momentum<1, 100>>::layer<float, cpu, Shape<10>>>);

}  // namespace pnn
