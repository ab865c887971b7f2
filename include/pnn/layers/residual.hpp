// pnn/layers/residual.hpp: Residual<Layers...>, y = F(x) + x, and Residual<Shortcut<Layers...>, Layers...>,
// y = F(x) + S(x), the blocks of a residual network.
//
//   Residual<Conv2D<16, 3, Pad<1>>, BatchNorm<>, ReLU, Conv2D<16, 3, Pad<1>>, BatchNorm<>>
//   Residual<Shortcut<Conv2D<32, 1, Stride<2>>, BatchNorm<>>,                  // S: a projection
//            Conv2D<32, 3, Pad<1>, Stride<2>>, BatchNorm<>, ReLU, Conv2D<32, 3, Pad<1>>, BatchNorm<>>
//
// The body F (and the shortcut S) is a flat list of layers run as a LayerStack, as in Sequential. F(x)
// must have the input's shape, or, with a shortcut, S(x)'s shape: anything else is a compile-time error
// naming the Residual and both shapes. Parameters are named "body.<i>.<name>" and "shortcut.<i>.<name>",
// so inside a Sequential they read "3.body.0.weight".
//
// backward: dx = dF/dx(dy) + dS/dx(dy), with dS/dx(dy) = dy for the identity shortcut. When nobody needs
// dx (the Residual is a model's first layer), neither F's nor S's first layer computes its own.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "pnn/layers/layer.hpp"
#include "pnn/layers/relu.hpp"  // relu.hpp and tanh.hpp only for the Layer checks at the end
#include "pnn/layers/tanh.hpp"
#include "pnn/layers/layer_stack.hpp"

namespace pnn {

// Residual's optional first argument: the layers of the shortcut S, replacing the identity.
template <class... Layers>
struct Shortcut {
  static_assert(sizeof...(Layers) > 0, "Shortcut<Layers...> needs at least one layer; leave it out for the identity");
  static constexpr bool batch_statistics = (uses_batch_statistics<Layers> || ...);
};

namespace detail {
template <class Spec>
inline constexpr bool is_shortcut = false;
template <class... Layers>
inline constexpr bool is_shortcut<Shortcut<Layers...>> = true;

template <class... Specs>
struct type_list {};

// Splits Residual's arguments into the shortcut's layers (an empty list for the identity) and the body's.
template <class... Specs>
struct residual_parts {
  using shortcut = type_list<>;
  using body = type_list<Specs...>;
};
template <class... ShortcutLayers, class... Body>
struct residual_parts<Shortcut<ShortcutLayers...>, Body...> {
  using shortcut = type_list<ShortcutLayers...>;
  using body = type_list<Body...>;
};

// The identity shortcut, in the shape of a LayerStack so a Residual without Shortcut<...> reads the same.
template <class In>
struct IdentityStack {
  using output_shape = In;
  struct Trace {};
};

template <class T, class D, class In, class List>
struct stack_of;
template <class T, class D, class In>
struct stack_of<T, D, In, type_list<>> {
  using type = IdentityStack<In>;
};
template <class T, class D, class In, class... Specs>
struct stack_of<T, D, In, type_list<Specs...>> {
  using type = LayerStack<T, D, In, Specs...>;
};

// Names of a stack's layers, separated by ", ".
template <class Stack>
std::string layer_names() {
  std::string text;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((text += (I == 0 ? "" : ", ") + Stack::template layer_type<I>::name()), ...);
  }(std::make_index_sequence<Stack::layer_count>{});
  return text;
}
}  // namespace detail

// The compile-time error for a body whose output does not have the shortcut's shape. The failing
// instantiation names the block and both shapes, e.g.
// pnn::residual_shape_error<pnn::Residual<pnn::Dense<5>>, pnn::Shape<5>, pnn::Shape<6>>.
template <class ResidualSpec, class BodyOutput, class ShortcutOutput>
struct residual_shape_error {
  static_assert(always_false<ResidualSpec>,
                "the body of this Residual does not produce the shape of its shortcut (its input, without a "
                "Shortcut<...>): see BodyOutput and ShortcutOutput in 'residual_shape_error<ResidualSpec, BodyOutput, "
                "ShortcutOutput>' above; change the body's last layers or add a Shortcut<...> that projects the input");
  static constexpr bool value = false;
};

template <class... Specs>
struct Residual {
  static_assert(sizeof...(Specs) > 0, "Residual<Layers...> needs at least one layer in its body");
  static constexpr bool batch_statistics = (uses_batch_statistics<Specs> || ...);
  using parts = detail::residual_parts<Specs...>;
  static constexpr bool has_shortcut = !std::is_same_v<typename parts::shortcut, detail::type_list<>>;
  static_assert(!has_shortcut || sizeof...(Specs) > 1,
                "Residual<Shortcut<...>, Layers...> needs at least one layer in its body after the Shortcut");
  static_assert((index{0} + ... + index{detail::is_shortcut<Specs>}) == index{has_shortcut},
                "Shortcut<...> may only be Residual's first argument, and only once");

  template <class T, class D, class In>
  class layer;
};

template <class... Specs>
template <class T, class D, class In>
class Residual<Specs...>::layer {
 public:
  using Body = typename detail::stack_of<T, D, In, typename parts::body>::type;
  using ShortcutStack = typename detail::stack_of<T, D, In, typename parts::shortcut>::type;

 private:
  using shortcut_shape = typename ShortcutStack::output_shape;
  // Instantiating the error reports a misfit body as residual_shape_error<...>; output_shape below reads
  // this flag so the check is always made, and stays valid regardless, so that is the only error.
  static constexpr bool shapes_match =
      std::conditional_t<std::is_same_v<typename Body::output_shape, shortcut_shape>, std::true_type,
                         residual_shape_error<Residual, typename Body::output_shape, shortcut_shape>>::value;

 public:
  using value_type = T;
  using device = D;
  using input_shape = In;
  using output_shape = std::conditional_t<shapes_match, typename Body::output_shape, typename Body::output_shape>;

  // The keys of the body's and the shortcut's random streams (Context::nested): their layers are
  // numbered from 0 in each, so the two paths need keys of their own.
  static constexpr std::uint64_t body_part = 1, shortcut_part = 2;

  struct State {
    typename Body::Trace body;
    typename ShortcutStack::Trace shortcut;
    Tensor<T, 2, D> shortcut_gradient;  // dS/dx(dy), added to the body's dx (with a Shortcut only)
  };

  static std::string name() {
    std::string text = "Residual<";
    if constexpr (has_shortcut) text += "Shortcut<" + detail::layer_names<ShortcutStack>() + ">, ";
    return text + detail::layer_names<Body>() + ">";
  }

  static void declare(ParameterDeclarations& declarations) {
    declarations.scope("body.", [&] { Body::declare(declarations); });
    if constexpr (has_shortcut) declarations.scope("shortcut.", [&] { ShortcutStack::declare(declarations); });
  }
  void bind(ParameterCursor<T, D>& cursor) {
    body_.bind(cursor);
    if constexpr (has_shortcut) shortcut_.bind(cursor);
  }

  void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State& state, const Context& context) {
    body_.forward(x, state.body, context.nested(body_part));
    if constexpr (has_shortcut) {
      shortcut_.forward(x, state.shortcut, context.nested(shortcut_part));
      y = state.body.output() + state.shortcut.output();
    } else {
      y = state.body.output() + x;
    }
  }

  void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                TensorView<T, 2, D> dx, State& state, const Context& context) {
    body_.backward(dy, dx, state.body, context.nested(body_part));
    if constexpr (has_shortcut) {
      TensorView<T, 2, D> shortcut_dx;
      if (dx) {
        state.shortcut_gradient.resize(dx.shape());
        shortcut_dx.rebind(state.shortcut_gradient.view());
      }
      shortcut_.backward(dy, shortcut_dx, state.shortcut, context.nested(shortcut_part));
      if (dx) dx += state.shortcut_gradient;
    } else {
      if (dx) dx += dy;
    }
  }

  Body& body() { return body_; }

 private:
  Body body_;
  [[no_unique_address]] ShortcutStack shortcut_;
};

static_assert(Layer<Residual<ReLU, Tanh>::layer<float, cpu, Shape<8>>>);
static_assert(Layer<Residual<Shortcut<Tanh>, ReLU>::layer<float, cpu, Shape<4, 3, 3>>>);

}  // namespace pnn
