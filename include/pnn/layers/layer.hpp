// pnn/layers/layer.hpp: the Layer concept, and the vocabulary a layer uses to declare its parameters.
//
// A layer is written as a spec with a nested template:
//
//   template <index Units> struct Dense {                       // what users put in Sequential<...>
//     template <class T, class D, class In> class layer;        // Dense for scalar T, device D, input In
//   };
//
// The model instantiates `Spec::layer<T, D, InputShape>` with the output shape of the layer before it,
// so every shape is known at compile time. The bound layer class satisfies Layer:
//
//   input_shape, output_shape       Shape<...> of one sample (the batch is the matrix's row count)
//   State                           what forward() keeps for backward() (a dropout mask, ...): one per pass,
//                                   so a pipeline can have several micro-batches in flight
//   declare(ParameterDeclarations&) the layer's parameters and buffers: names, shapes, initialisers
//   bind(ParameterCursor&)          receives views of its parameters in the model's flat storage
//   forward(x, y, state, context)   y = f(x); x and y are (batch, features) matrices
//   backward(x, y, dy, dx, state, context)
//       ADDS the parameter gradients into the gradient views (so micro-batches accumulate) and ASSIGNS
//       the input gradient dx, unless dx is an empty view: then nobody needs it and it is not computed.
//
// Activations are (batch, features) row-major matrices. A three-dimensional sample Shape<C, H, W> is
// stored channels-last (H, W, C): a convolution over a whole batch is then one matrix product.
#pragma once

#include <array>
#include <concepts>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pnn/core/random.hpp"
#include "pnn/core/shape.hpp"
#include "pnn/core/tensor.hpp"

namespace pnn {

// How a parameter is initialised. fan_in and fan_out come from its declaration.
enum class Init {
  zeros,
  ones,
  he_normal,       // N(0, 2 / fan_in): for layers followed by ReLU
  he_uniform,      // U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))
  xavier_uniform,  // U(-sqrt(6 / (fan_in + fan_out)), +...): for tanh and sigmoid
  xavier_normal,   // N(0, 2 / (fan_in + fan_out))
};

struct ParameterDeclaration {
  std::string name;            // full name, e.g. "3.body.0.weight"
  std::vector<index> shape;
  Init init = Init::zeros;
  index fan_in = 1;
  index fan_out = 1;
  bool trainable = true;       // false for buffers: saved and loaded, never optimised (running statistics)
  index size() const {
    index n = 1;
    for (index d : shape) n *= d;
    return n;
  }
};

// Collects the declarations of a whole model in order; nested layers push a name prefix.
class ParameterDeclarations {
 public:
  void parameter(std::string_view name, std::vector<index> shape, Init init, index fan_in = 1, index fan_out = 1) {
    entries_.push_back({prefix_ + std::string(name), std::move(shape), init, fan_in, fan_out, true});
  }
  void buffer(std::string_view name, std::vector<index> shape, Init init) {
    entries_.push_back({prefix_ + std::string(name), std::move(shape), init, 1, 1, false});
  }
  // Declarations made inside `body` get `prefix` prepended to their names.
  template <class Body>
  void scope(std::string_view prefix, Body&& body) {
    const std::string saved = prefix_;
    prefix_ += prefix;
    body();
    prefix_ = saved;
  }
  const std::vector<ParameterDeclaration>& entries() const { return entries_; }

 private:
  std::vector<ParameterDeclaration> entries_;
  std::string prefix_;
};

// A parameter (or buffer) of a model: its declaration and views of its values and gradient in the
// model's flat storage. Buffers have an empty gradient view.
template <class T, class D>
struct Parameter {
  ParameterDeclaration declaration;
  TensorView<T, 1, D> value;
  TensorView<T, 1, D> gradient;
  const std::string& name() const { return declaration.name; }
  bool trainable() const { return declaration.trainable; }
};

// Hands out parameters in declaration order; bind() takes exactly those that declare() declared.
template <class T, class D>
class ParameterCursor {
 public:
  explicit ParameterCursor(std::span<const Parameter<T, D>> slots) : slots_(slots) {}
  const Parameter<T, D>& take() {
    PNN_CHECK(next_ < slots_.size(), Error, "a layer's bind() takes more parameters than it declared");
    return slots_[next_++];
  }
  std::size_t taken() const { return next_; }

 private:
  std::span<const Parameter<T, D>> slots_;
  std::size_t next_ = 0;
};

// What a forward pass needs besides its input.
struct Context {
  bool training = true;            // dropout and batch statistics are on only while training
  Generator* random = nullptr;     // the model's dropout stream
};

template <class L>
concept Layer = requires(L& layer, typename L::State& state, ParameterDeclarations& declarations,
                         ParameterCursor<typename L::value_type, typename L::device>& cursor,
                         TensorView<const typename L::value_type, 2, typename L::device> in,
                         TensorView<typename L::value_type, 2, typename L::device> out, const Context& context) {
  typename L::value_type;
  requires Device<typename L::device>;
  requires StaticShape<typename L::input_shape>;
  requires StaticShape<typename L::output_shape>;
  typename L::State;
  { L::name() } -> std::convertible_to<std::string>;
  L::declare(declarations);
  layer.bind(cursor);
  layer.forward(in, out, state, context);
  layer.backward(in, in, in, out, state, context);
};

// A convenience base for layers without parameters or per-pass state.
struct WithoutParameters {
  static void declare(ParameterDeclarations&) {}
  template <class Cursor>
  void bind(Cursor&) {}
};

// Compile-time errors for models whose shapes do not fit. The failing instantiation names the layer
// and the offending shape, e.g. pnn::layer_input_error<pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::Shape<784>>.
template <class LayerSpec, class InputShape>
struct layer_input_error {
  static_assert(always_false<LayerSpec>,
                "this layer cannot take the output of the layer before it: see LayerSpec and InputShape in "
                "'layer_input_error<LayerSpec, InputShape>' above, and the layer's header for the shapes it accepts");
  static constexpr bool value = false;
};

// Evaluates to true when Ok holds; otherwise instantiates layer_input_error so the message names the layer.
// (A specialisation, not `Ok ? true : layer_input_error<...>::value`: naming the error's member in either
// branch of a conditional would instantiate it, and fail, for valid inputs too.)
template <bool Ok, class LayerSpec, class InputShape>
inline constexpr bool check_layer_input = true;
template <class LayerSpec, class InputShape>
inline constexpr bool check_layer_input<false, LayerSpec, InputShape> = layer_input_error<LayerSpec, InputShape>::value;

}  // namespace pnn
