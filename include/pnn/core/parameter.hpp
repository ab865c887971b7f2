// pnn/core/parameter.hpp: the vocabulary of parameters, shared by layers (which declare and bind them),
// models (which own their storage), optimisers (which update them) and files (which save them):
//   Init, ParameterDeclaration(s)    what a layer declares: name, shape, initialiser, fan-in/out, layer,
//                                    and how memory holds the tensor when not as its files do (FileLayout)
//   Parameter<T, D>                  a declaration with views of its value and gradient in flat storage
//   ParameterCursor<T, D>            hands a model's parameters to its layers' bind() in order
//   initialise_parameter, parameter_stream    the initial values, drawn from a stream named after the parameter
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pnn/core/config.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/hash.hpp"
#include "pnn/core/random.hpp"
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

// How memory holds a tensor whose files (io/) hold it in PyTorch's layout, when the two differ. The
// declared shape is always PyTorch's, so a saved model loads into the torch.nn module of the same layers.
struct FileLayout {
  // Memory holds the declared shape's axes in this order, row-major: a convolution's weight, declared
  // (F, C, K, K) as PyTorch's, is held (F, K, K, C) to match channels-last images: {0, 2, 3, 1}.
  // Empty: memory is row-major over the declared shape, as files are.
  std::vector<int> memory_axes;
  // A count (BatchNorm's num_batches_tracked), held in the model's scalar type and stored in files as
  // PyTorch's int64. A float holds every count exactly up to 2^24, a double up to 2^53.
  bool count = false;
  bool operator==(const FileLayout&) const = default;
};

struct ParameterDeclaration {
  std::string name;          // full name, e.g. "3.body.0.weight"
  std::vector<index> shape;  // PyTorch's shape, as files hold it (see FileLayout for memory)
  Init init = Init::zeros;
  index fan_in = 1;
  index fan_out = 1;
  bool trainable = true;  // false for buffers: saved and loaded, never optimised (running statistics)
  std::size_t layer = 0;  // the number of the model's layer that declared it (its name's first part)
  FileLayout file{};      // how memory differs from files, if it does
  index size() const {
    index n = 1;
    for (index d : shape) n *= d;
    return n;
  }
};

// Collects the declarations of a whole model in order; nested layers push a name prefix.
class ParameterDeclarations {
 public:
  void parameter(std::string_view name, std::vector<index> shape, Init init, index fan_in = 1, index fan_out = 1,
                 std::vector<int> memory_axes = {}) {
    entries_.push_back({prefix_ + std::string(name), std::move(shape), init, fan_in, fan_out, true, layer_,
                        FileLayout{std::move(memory_axes), false}});
  }
  void buffer(std::string_view name, std::vector<index> shape, Init init) {
    entries_.push_back({prefix_ + std::string(name), std::move(shape), init, 1, 1, false, layer_, {}});
  }
  // A scalar count buffer, zero at first, that files store as int64 (FileLayout::count).
  void count(std::string_view name) {
    entries_.push_back({prefix_ + std::string(name), {}, Init::zeros, 1, 1, false, layer_, FileLayout{{}, true}});
  }
  // Declarations made inside `body` belong to layer `number` and are named "<number>.<name>". Only the
  // outermost call sets the layer: the layers inside a Residual belong to the model's layer that holds it.
  template <class Body>
  void layer(std::size_t number, Body&& body) {
    const bool outermost = !inside_layer_;
    if (outermost) layer_ = number, inside_layer_ = true;
    scope(std::to_string(number) + ".", std::forward<Body>(body));
    if (outermost) inside_layer_ = false;
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
  // The number of trainable scalars declared (buffers not counted).
  index trainable_size() const {
    index n = 0;
    for (const auto& entry : entries_)
      if (entry.trainable) n += entry.size();
    return n;
  }

 private:
  std::vector<ParameterDeclaration> entries_;
  std::string prefix_;
  std::size_t layer_ = 0;
  bool inside_layer_ = false;
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
  // Takes the next parameter into a layer's views of its value and gradient, shaped `shape` (a weight
  // matrix stored flat): what every layer with weights does in bind().
  template <std::size_t R>
  void take(TensorView<T, R, D>& value, TensorView<T, R, D>& gradient, const Extents<R>& shape) {
    const auto& parameter = take();
    value.rebind(parameter.value.reshape(shape));
    gradient.rebind(parameter.gradient.reshape(shape));
  }
  std::size_t taken() const { return next_; }

 private:
  std::span<const Parameter<T, D>> slots_;
  std::size_t next_ = 0;
};

// Fills a parameter according to its declared initialiser, from the generator given.
template <class T>
void initialise_parameter(TensorView<T, 1, cpu> value, const ParameterDeclaration& declaration, Generator random) {
  const double fan_in = static_cast<double>(declaration.fan_in), fan_out = static_cast<double>(declaration.fan_out);
  const index n = value.size();
  switch (declaration.init) {
    case Init::zeros:
      for (index i = 0; i < n; ++i) value[i] = T(0);
      break;
    case Init::ones:
      for (index i = 0; i < n; ++i) value[i] = T(1);
      break;
    case Init::he_normal: {
      const T stddev = static_cast<T>(std::sqrt(2.0 / fan_in));
      for (index i = 0; i < n; ++i) value[i] = random.normal<T>(T(0), stddev);
      break;
    }
    case Init::he_uniform: {
      const T limit = static_cast<T>(std::sqrt(6.0 / fan_in));
      for (index i = 0; i < n; ++i) value[i] = random.uniform<T>(-limit, limit);
      break;
    }
    case Init::xavier_uniform: {
      const T limit = static_cast<T>(std::sqrt(6.0 / (fan_in + fan_out)));
      for (index i = 0; i < n; ++i) value[i] = random.uniform<T>(-limit, limit);
      break;
    }
    case Init::xavier_normal: {
      const T stddev = static_cast<T>(std::sqrt(2.0 / (fan_in + fan_out)));
      for (index i = 0; i < n; ++i) value[i] = random.normal<T>(T(0), stddev);
      break;
    }
  }
}

// The stream a parameter is initialised from: derived from its name, so a pipeline stage holding layers
// 4..7 of a model draws exactly the values the whole model would.
inline std::uint64_t parameter_stream(const std::string& name) { return fnv1a(name.data(), name.size()); }

}  // namespace pnn
