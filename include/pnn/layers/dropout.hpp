// pnn/layers/dropout.hpp: Dropout<Percent>, inverted dropout that zeroes Percent% of the values while training.
//
//   Dropout<20>    drops each value with probability 0.2 and scales the kept ones by 1 / 0.8
//
// The rate is an integer percentage because floating-point template arguments are not accepted by every
// compiler pnn supports (nvcc). While training, y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p), so
// the expected output equals the input and inference needs no rescaling: there y = x. Each row's mask is
// drawn from that sample's own stream (Context: keyed by the seed, the step, the layer and the sample's
// index in the global batch), so a sample is dropped alike whichever rank or micro-batch computes it and
// whatever rows share its batch. The mask is kept in the pass's State for backward.
#pragma once

#include <string>
#include <type_traits>

#include "pnn/core/random.hpp"
#include "pnn/layers/layer.hpp"

namespace pnn {

// Fills mask with 0 (probability rate) or 1 / (1 - rate): row i from the stream of sample
// context.first_sample + i, one number per element. The numbers are drawn on the host for every device,
// so a device model drops the units a cpu model drops.
template <class T, class D>
void draw_dropout_mask(const Context& context, double rate, TensorView<T, 2, D> mask) {
  const T kept = static_cast<T>(1 / (1 - rate));
  const Generator layer_streams = context.random->split(context.step).split(context.layer);
  auto fill = [&](TensorView<T, 2, cpu> host) {
    const index features = host.dim(1);
    for (index row = 0; row < host.dim(0); ++row) {
      Generator sample = layer_streams.split(static_cast<std::uint64_t>(context.first_sample + row));
      T* values = host.data() + row * features;
      for (index j = 0; j < features; ++j) values[j] = sample.uniform<double>() < rate ? T(0) : kept;
    }
  };
  if constexpr (std::is_same_v<D, cpu>) {
    fill(mask);
  } else {
    Tensor<T, 2, cpu> host(mask.shape());
    fill(host.view());
    copy(TensorView<const T, 2, cpu>(host.view()), mask);  // host to device: defined by the device's headers
  }
}

template <index Percent>
struct Dropout {
  static_assert(Percent >= 0 && Percent < 100,
                "Dropout<Percent> takes the drop rate in percent, in [0, 100): e.g. Dropout<50> drops half the values");
  static constexpr double rate = static_cast<double>(Percent) / 100;

  static std::string name() { return "Dropout<" + std::to_string(Percent) + ">"; }

  template <class T, class D, class In>
  class layer;
};

template <index Percent>
template <class T, class D, class In>
class Dropout<Percent>::layer : public WithoutParameters {
 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = In;

  struct State {
    Tensor<T, 2, D> mask;  // 0 or 1 / (1 - p) per value
    bool dropped = false;  // whether the forward pass applied the mask (training) or passed x through
  };

  static std::string name() { return Dropout::name(); }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State& state, const Context& context) const {
    state.dropped = Percent != 0 && context.training;
    if (!state.dropped) {
      y = x;
      return;
    }
    PNN_CHECK(context.random != nullptr, ArgumentError,
              "Dropout needs a random generator while training: set Context::random (the model's dropout stream)");
    state.mask.resize(x.shape());
    draw_dropout_mask<T, D>(context, rate, state.mask.view());
    y = x * state.mask;
  }

  void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State& state, const Context&) const {
    if (!dx) return;
    if (state.dropped) dx = dy * state.mask;
    else dx = dy;
  }
};

static_assert(Layer<Dropout<50>::layer<float, cpu, Shape<128>>>);

}  // namespace pnn
