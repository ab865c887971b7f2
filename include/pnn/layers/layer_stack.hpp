// pnn/layers/layer_stack.hpp: a flat compile-time list of layers, run forward and backward in order.
//
// LayerStack<T, D, InputShape, Specs...> binds each spec to the output shape of the one before it (a
// linear walk over the pack, no nested layer types) and runs them with fold expressions. It is the body
// of Sequential and of Residual. Per-pass data lives in a separate Trace, so several passes (pipeline
// micro-batches) can be in flight at once through the same layers.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <tuple>
#include <utility>

#include "pnn/layers/layer.hpp"

namespace pnn {

namespace detail {
template <class T, class D, class In, class... Specs>
struct bind_layers {
  using type = std::tuple<>;
  using output_shape = In;
};
template <class T, class D, class In, class Spec, class... Rest>
struct bind_layers<T, D, In, Spec, Rest...> {
  using first = typename Spec::template layer<T, D, In>;
  static_assert(Layer<first>, "this layer spec's layer<T, D, In> does not satisfy pnn::Layer (layers/layer.hpp)");
  using rest = bind_layers<T, D, typename first::output_shape, Rest...>;
  using type = decltype(std::tuple_cat(std::declval<std::tuple<first>>(), std::declval<typename rest::type>()));
  using output_shape = typename rest::output_shape;
};

template <class Layers>
struct layer_states;
template <class... L>
struct layer_states<std::tuple<L...>> {
  using type = std::tuple<typename L::State...>;
};
}  // namespace detail

// Called after each layer's backward with the layer's index: its parameter gradients are then final.
struct NoGradientHook {
  void operator()(std::size_t) const {}
};

template <class T, class D, class In, class... Specs>
class LayerStack {
  static_assert(sizeof...(Specs) > 0, "a model needs at least one layer after its Input<...>");
  using binding = detail::bind_layers<T, D, In, Specs...>;

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = typename binding::output_shape;
  using Layers = typename binding::type;
  static constexpr std::size_t layer_count = sizeof...(Specs);
  template <std::size_t I>
  using layer_type = std::tuple_element_t<I, Layers>;

  // What one forward pass leaves for its backward pass, and the backward pass's own scratch: all a pass
  // writes besides the parameter gradients, so passes through the same layers never share a buffer.
  struct Trace {
    TensorView<const T, 2, D> input;
    std::array<Tensor<T, 2, D>, layer_count> outputs;
    typename detail::layer_states<Layers>::type states;
    // The gradients between layers flow through two buffers used in turn: layer I reads what layer I+1 wrote.
    std::array<Tensor<T, 2, D>, 2> gradients;
    // The loss's gradient with respect to the output, for whoever computes it (a training step, a
    // pipeline's last stage) to pass to backward.
    Tensor<T, 2, D> output_gradient;
    // Which rows of which step the forward pass computed: its backward pass sums over the same rows.
    PassKey key;
    index batch() const { return input.dim(0); }
    TensorView<const T, 2, D> output() const { return outputs.back().view(); }
  };

  // Declares every layer's parameters, named "<index>.<name>" like PyTorch's nn.Sequential, the indices
  // counting from first_index.
  static void declare(ParameterDeclarations& declarations, std::size_t first_index = 0) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (declarations.layer(first_index + I, [&] { layer_type<I>::declare(declarations); }), ...);
    }(std::make_index_sequence<layer_count>{});
  }
  void bind(ParameterCursor<T, D>& cursor) {
    std::apply([&](auto&... layer) { (layer.bind(cursor), ...); }, layers_);
  }

  void forward(TensorView<const T, 2, D> x, Trace& trace, const Context& context) {
    PNN_CHECK(x.dim(1) == In::size, ShapeError, "the input has ", x.dim(1), " features per sample but the model's ",
              "input shape ", format_shape<In>(), " has ", In::size);
    trace.input.rebind(x);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (forward_layer<I>(trace, context), ...);
    }(std::make_index_sequence<layer_count>{});
  }

  // dy is the gradient of the loss with respect to the output of the forward pass recorded in trace.
  // dx receives the gradient with respect to its input, or is an empty view when nobody needs it (the
  // first layer then skips that product).
  template <class Hook = NoGradientHook>
  void backward(TensorView<const T, 2, D> dy, TensorView<T, 2, D> dx, Trace& trace, const Context& context,
                Hook&& on_gradients_ready = {}) {
    PNN_CHECK(dy.dim(0) == trace.batch() && dy.dim(1) == output_shape::size, ShapeError,
              "backward: the output gradient has shape ", format_extents<2>(dy.shape()), " but the forward pass made ",
              format_extents<2>(trace.output().shape()));
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (backward_layer<layer_count - 1 - I>(dy, dx, trace, context, on_gradients_ready), ...);
    }(std::make_index_sequence<layer_count>{});
  }

  Layers& layers() { return layers_; }
  const Layers& layers() const { return layers_; }

  // One line per layer: name and output shape.
  static std::string summary(const std::string& indent = "") {
    std::string text;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((text += indent + std::to_string(I) + "  " + layer_type<I>::name() + "  -> " +
                format_shape<typename layer_type<I>::output_shape>() + "\n"),
       ...);
    }(std::make_index_sequence<layer_count>{});
    return text;
  }

 private:
  template <std::size_t I>
  TensorView<const T, 2, D> layer_input(const Trace& trace) const {
    if constexpr (I == 0) return trace.input;
    else return trace.outputs[I - 1].view();
  }

  template <std::size_t I>
  void forward_layer(Trace& trace, const Context& context) {
    using L = layer_type<I>;
    Tensor<T, 2, D>& out = trace.outputs[I];
    out.resize({trace.batch(), L::output_shape::size});
    // Each layer draws from its own streams, keyed by its number in the whole model.
    std::get<I>(layers_).forward(layer_input<I>(trace), out.view(), std::get<I>(trace.states),
                                 context.nested(context.first_layer + I));
  }

  template <std::size_t I, class Hook>
  void backward_layer(TensorView<const T, 2, D> dy_last, TensorView<T, 2, D> dx_first, Trace& trace,
                      const Context& context, Hook& on_gradients_ready) {
    using L = layer_type<I>;
    const TensorView<const T, 2, D> dy = [&] {
      if constexpr (I + 1 < layer_count) return TensorView<const T, 2, D>(trace.gradients[(I + 1) % 2].view());
      else return dy_last;
    }();
    const TensorView<T, 2, D> dx = [&] {
      if constexpr (I == 0) {
        return dx_first;
      } else {
        Tensor<T, 2, D>& buffer = trace.gradients[I % 2];
        buffer.resize({trace.batch(), L::input_shape::size});
        return buffer.view();
      }
    }();
    std::get<I>(layers_).backward(layer_input<I>(trace), trace.outputs[I].view(), dy, dx, std::get<I>(trace.states),
                                  context.nested(context.first_layer + I));
    on_gradients_ready(I);
  }

  Layers layers_;
};

}  // namespace pnn
