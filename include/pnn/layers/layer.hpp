// pnn/layers/layer.hpp: the Layer concept, the Context of a pass, and the compile-time shape errors.
// The vocabulary a layer declares its parameters with is in core/parameter.hpp.
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

#include <concepts>
#include <cstdint>
#include <string>

#include "pnn/core/batch_sum.hpp"
#include "pnn/core/hash.hpp"
#include "pnn/core/parameter.hpp"
#include "pnn/core/random.hpp"
#include "pnn/core/shape.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // every layer runs on the CPU, the default device

namespace pnn {

// Completes a sum over a batch whose other rows other ranks compute (data parallelism): each rank
// passes the canonical sum of its own rows (core/batch_sum.hpp) and receives the whole batch's, the same
// bits on every rank. BatchNorm's statistics use it; null in a context means the pass holds its batch.
class BatchReduction {
 public:
  virtual void sum(TensorView<float, 1, cpu> sums) const = 0;
  virtual void sum(TensorView<double, 1, cpu> sums) const = 0;
  virtual void sum(TensorView<float, 1, cuda> sums) const = 0;
  virtual void sum(TensorView<double, 1, cuda> sums) const = 0;

 protected:
  ~BatchReduction() = default;
};

// Which samples of which training step a pass computes: rows [first_sample, first_sample + rows) of a
// global batch of `batch` rows (0: the pass's rows are the whole batch).
struct PassKey {
  std::uint64_t step = 0;
  index first_sample = 0;
  index batch = 0;
  const BatchReduction* across = nullptr;  // the ranks holding the batch's other rows, if any
};

// What a pass needs besides its input.
// Randomness belongs to samples, not to replicas: a sample's draws (its dropout masks) come from
//   random->split(step).split(layer).split(first_sample + row)
// so a sample gets the same mask whichever rank, pipeline stage or micro-batch computes it.
// Sums over the batch follow the canonical tree of the global batch (core/batch_sum.hpp): part(rows)
// says which rows of it the pass holds, so a layer's sums are the subtrees serial training computes.
struct Context {
  bool training = true;                    // dropout and batch statistics are on only while training
  const Generator* random = nullptr;       // the root of the model's per-sample streams (streams::dropout)
  std::uint64_t step = 0;                  // the training step the pass belongs to
  index first_sample = 0;                  // the index in the global batch of the pass's first row
  index batch = 0;                         // rows of the global batch; 0: the pass's rows are the whole batch
  const BatchReduction* across = nullptr;  // completes batch statistics over other ranks' rows
  std::uint64_t layer = 0;                 // the key of the layer being run: LayerStack sets it per layer
  std::size_t first_layer = 0;             // the number of the stack's first layer (a pipeline stage's offset)

  // The rows of the global batch a pass of `rows` rows holds.
  BatchPart part(index rows) const {
    return batch == 0 ? BatchPart::whole(rows) : BatchPart{batch, first_sample, rows};
  }

  // The context of a nested part (a layer of a stack, a Residual's body or shortcut): its own key.
  Context nested(std::uint64_t part) const {
    Context inner = *this;
    inner.layer = fnv1a(&part, sizeof part, layer ^ fnv1a_offset);
    inner.first_layer = 0;
    return inner;
  }
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

// Whether a layer spec (or a model) normalises with statistics over its batch (BatchNorm, and the blocks
// and models holding one): it then computes another function when a batch is cut into micro-batches.
template <class Spec>
inline constexpr bool uses_batch_statistics = requires { requires Spec::batch_statistics; };

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
