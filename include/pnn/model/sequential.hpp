// pnn/model/sequential.hpp: Sequential<Input<...>, Layers...>, a model as a flat compile-time list of layers.
//
//   using Net = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, ...>;
//   Net net(/*seed=*/42);
//   float loss = pnn::train_step(net, images, labels, optimizer, pnn::SoftmaxCrossEntropy{});  // train/
//   pnn::save(net, "net.safetensors");                                                         // io/
//
// The model knows no file format, optimiser or loss: training steps are train/train_step.hpp's, saving
// and loading io/weights.hpp's.
//
// Every layer's shapes are fixed at compile time; a layer that cannot take its predecessor's output is
// a compile-time error naming both. The model owns all trainable parameters in one flat, aligned buffer
// and their gradients in another (so a data-parallel all-reduce is one contiguous range per bucket, and
// an optimiser walks plain arrays); non-trainable buffers (running statistics) sit in a third.
//
// Sequential is float on the CPU. BasicSequential<Scalar, Device, Input<...>, Layers...> is the general
// form, and Net::on<pnn::cuda> or Net::with_scalar<double> rebinds a model type.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pnn/core/parameter.hpp"
#include "pnn/core/random.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/layers/layer_stack.hpp"
#include "pnn/model/input.hpp"

namespace pnn {

namespace detail {
// The sample shape an Input<...> names; a placeholder otherwise, so a missing Input gives one error.
template <class First>
struct input_shape_of {
  using type = Shape<1>;
};
template <index... Dims>
struct input_shape_of<Input<Dims...>> {
  using type = Shape<Dims...>;
};
}  // namespace detail

template <class T, class D, class First, class... Rest>
class BasicSequential {
  static_assert(is_input<First>,
                "Sequential<...> must start with Input<dims...>, the shape of one sample, e.g. "
                "Sequential<Input<1, 28, 28>, Conv2D<16, 5>, ...> or Sequential<Input<784>, Dense<10>>");

 public:
  using Stack = LayerStack<T, D, typename detail::input_shape_of<First>::type, Rest...>;
  using Trace = typename Stack::Trace;
  using value_type = T;
  using device = D;
  using input_shape = typename Stack::input_shape;
  using output_shape = typename Stack::output_shape;
  static constexpr std::size_t layer_count = Stack::layer_count;
  static constexpr bool batch_statistics = (uses_batch_statistics<Rest> || ...);  // any BatchNorm inside
  template <class OtherDevice>
  using on = BasicSequential<T, OtherDevice, First, Rest...>;
  template <class OtherScalar>
  using with_scalar = BasicSequential<OtherScalar, D, First, Rest...>;

  // Parameters are drawn from `seed`. first_layer_index names the layers from that number on, for a
  // model that is a slice of a larger one (a pipeline stage): names and initial values then match.
  explicit BasicSequential(std::uint64_t seed = 0, std::size_t first_layer_index = 0)
      : seed_(seed), first_layer_index_(first_layer_index) {
    allocate();
    initialize(seed);
  }
  BasicSequential(const BasicSequential& other) : BasicSequential(other.seed_, other.first_layer_index_) {
    copy_state_from(other);
  }
  BasicSequential& operator=(const BasicSequential& other) {
    if (this != &other) copy_state_from(other);
    return *this;
  }
  BasicSequential(BasicSequential&&) noexcept = default;  // views stay valid: the heap storage moves with them
  BasicSequential& operator=(BasicSequential&&) noexcept = default;

  // Draws every parameter afresh from `seed`, resets buffers and gradients.
  void initialize(std::uint64_t seed) {
    seed_ = seed;
    const Generator root = Generator(seed).split(streams::initialisation);
    for (const auto& p : parameters_) {
      if constexpr (std::is_same_v<D, cpu>) {
        initialise_parameter<T>(p.value, p.declaration, root.split(parameter_stream(p.name())));
      } else {
        Tensor<T, 1, cpu> host(Extents<1>{p.value.size()});
        initialise_parameter<T>(host.view(), p.declaration, root.split(parameter_stream(p.name())));
        copy(TensorView<const T, 1, cpu>(host.view()), p.value);  // host to device: defined by the device's headers
      }
    }
    gradients_.fill_zero();
    dropout_random_ = Generator(seed).split(streams::dropout);
    passes_ = 0;
  }

  // ----- forward and backward --------------------------------------------------------------------------
  // x is (batch, input features); the result is (batch, output features) and stays valid until the next
  // forward pass through the same trace. x must stay alive until the matching backward().
  // `key` says which samples of which training step x holds: their dropout masks depend on nothing else
  // (layers/layer.hpp, Context), and the sums over the batch are their subtrees of the global batch's
  // canonical tree (core/batch_sum.hpp). Without a key, a training pass is the model's next step, and
  // its rows are the whole batch.
  TensorView<const T, 2, D> forward(TensorView<const T, 2, D> x, Trace& trace, bool training, PassKey key) {
    trace.key = key;
    stack_.forward(x, trace, context(key, training));
    return trace.output();
  }
  TensorView<const T, 2, D> forward(TensorView<const T, 2, D> x, Trace& trace, bool training = true) {
    return forward(x, trace, training, PassKey{training ? passes_++ : passes_, 0});
  }
  TensorView<const T, 2, D> forward(TensorView<const T, 2, D> x, bool training = true) {
    return forward(x, trace_, training);
  }
  // Inference: no dropout, batch statistics replaced by running ones.
  TensorView<const T, 2, D> predict(TensorView<const T, 2, D> x) { return forward(x, inference_trace_, false); }

  // Adds the parameter gradients of the pass recorded in trace; writes the input gradient into dx unless
  // dx is empty. on_gradients_ready(layer) is called as each layer's gradients become final.
  template <class Hook = NoGradientHook>
  void backward(TensorView<const T, 2, D> dy, TensorView<T, 2, D> dx, Trace& trace, Hook&& on_gradients_ready = {}) {
    stack_.backward(dy, dx, trace, context(trace.key, true), std::forward<Hook>(on_gradients_ready));
  }
  void backward(TensorView<const T, 2, D> dy) { backward(dy, TensorView<T, 2, D>{}, trace_); }

  void zero_grad() { gradients_.fill_zero(); }

  // ----- parameters ------------------------------------------------------------------------------------
  // Every parameter and buffer, in declaration order, named "<layer>.<name>".
  std::span<const Parameter<T, D>> parameters() const { return parameters_; }
  // The flat storage of all trainable parameters and of their gradients (with alignment padding, which
  // stays zero), and of the buffers.
  TensorView<T, 1, D> parameter_values() { return values_.view(); }
  TensorView<const T, 1, D> parameter_values() const { return values_.view(); }
  TensorView<T, 1, D> parameter_gradients() { return gradients_.view(); }
  TensorView<const T, 1, D> parameter_gradients() const { return gradients_.view(); }
  TensorView<T, 1, D> buffer_values() { return buffers_.view(); }
  TensorView<const T, 1, D> buffer_values() const { return buffers_.view(); }
  // For each layer, the range [begin, end) of the flat gradient buffer its parameters occupy ({0, 0}
  // for layers without parameters). Layers occupy increasing ranges in layer order.
  const std::vector<std::pair<index, index>>& layer_gradient_ranges() const { return layer_gradient_ranges_; }
  // The number of trainable scalars.
  index parameter_count() const { return trainable_count_; }
  std::uint64_t seed() const { return seed_; }
  std::size_t first_layer_index() const { return first_layer_index_; }

  // The trace forward(x) and backward(dy) record into; train_step (train/train_step.hpp) uses it too.
  Trace& trace() { return trace_; }
  Stack& layers() { return stack_; }
  static std::string summary() { return Stack::summary("  "); }

 private:
  // Parameters start at multiples of this many elements (64 bytes for float).
  static constexpr index alignment = 16;

  static index align(index n) { return (n + alignment - 1) / alignment * alignment; }

  void allocate() {
    ParameterDeclarations declarations;
    Stack::declare(declarations, first_layer_index_);
    index trainable = 0, buffers = 0;
    for (const auto& d : declarations.entries()) (d.trainable ? trainable : buffers) += align(d.size());
    trainable_count_ = declarations.trainable_size();
    values_ = Tensor<T, 1, D>(Extents<1>{trainable});
    gradients_ = Tensor<T, 1, D>(Extents<1>{trainable});
    buffers_ = Tensor<T, 1, D>(Extents<1>{buffers});
    parameters_.clear();
    index value_offset = 0, buffer_offset = 0;
    for (const auto& d : declarations.entries()) {
      if (d.trainable) {
        parameters_.push_back({d, TensorView<T, 1, D>(values_.data() + value_offset, {d.size()}),
                               TensorView<T, 1, D>(gradients_.data() + value_offset, {d.size()})});
        value_offset += align(d.size());
      } else {
        parameters_.push_back({d, TensorView<T, 1, D>(buffers_.data() + buffer_offset, {d.size()}), {}});
        buffer_offset += align(d.size());
      }
    }
    // Each layer's range of the flat gradient buffer, from the layer each parameter was declared by.
    layer_gradient_ranges_.assign(layer_count, {0, 0});
    std::vector<bool> seen(layer_count, false);
    for (const auto& p : parameters_) {
      if (!p.trainable()) continue;
      const std::size_t layer = p.declaration.layer - first_layer_index_;
      PNN_CHECK(p.declaration.layer >= first_layer_index_ && layer < layer_count, Error, "parameter ", p.name(),
                " was declared by layer ", p.declaration.layer, ", outside this model's layers");
      const index begin = p.gradient.data() - gradients_.data(), end = begin + align(p.gradient.size());
      auto& range = layer_gradient_ranges_[layer];
      range =
          seen[layer] ? std::pair{std::min(range.first, begin), std::max(range.second, end)} : std::pair{begin, end};
      seen[layer] = true;
    }
    ParameterCursor<T, D> cursor(parameters_);
    stack_.bind(cursor);
    PNN_CHECK(cursor.taken() == parameters_.size(), Error, "a layer's bind() took fewer parameters than it declared");
  }

  void copy_state_from(const BasicSequential& other) {
    PNN_CHECK(other.first_layer_index_ == first_layer_index_, ArgumentError,
              "cannot assign models whose layers are numbered from different indices");
    copy(other.values_.view(), values_.view());
    copy(other.buffers_.view(), buffers_.view());
    copy(other.gradients_.view(), gradients_.view());
    seed_ = other.seed_;
    dropout_random_ = other.dropout_random_;
    passes_ = other.passes_;
  }

  std::uint64_t seed_;
  std::size_t first_layer_index_;
  Stack stack_;
  Tensor<T, 1, D> values_, gradients_, buffers_;
  std::vector<Parameter<T, D>> parameters_;
  std::vector<std::pair<index, index>> layer_gradient_ranges_;
  index trainable_count_ = 0;
  Trace trace_, inference_trace_;
  Generator dropout_random_;  // the root of the per-sample streams; never advanced
  Context context(const PassKey& key, bool training) const {
    return Context{.training = training,
                   .random = &dropout_random_,
                   .step = key.step,
                   .first_sample = key.first_sample,
                   .batch = key.batch,
                   .across = key.across,
                   .first_layer = first_layer_index_};
  }

  std::uint64_t passes_ = 0;  // training passes made without a PassKey: their step numbers
};

template <class... Layers>
using Sequential = BasicSequential<float, cpu, Layers...>;

}  // namespace pnn
