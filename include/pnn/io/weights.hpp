// pnn/io/weights.hpp: a model's weights saved to and loaded from a safetensors file.
//
//   pnn::save(net, "net.safetensors");   every parameter and buffer under its name ("0.weight", ...)
//   pnn::load(net, "net.safetensors");   only a file holding exactly this model's tensors; on failure the
//                                        model is unchanged
//
// The format is PyTorch's (io/safetensors.hpp). A model on a device goes through a copy of itself on the
// host (Model::on<cpu>), so the file does not depend on where the model was trained. Distributed models
// have their own overloads (dist/distributed.hpp), which write the serial model's file.
#pragma once

#include <filesystem>
#include <type_traits>
#include <utility>

#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"
#include "pnn/io/safetensors.hpp"

namespace pnn {

// What save() and load() need of a model: its parameters, and a host twin to copy a device model through.
template <class M>
concept SavableModel = requires(M& model, const M& const_model) {
  typename M::value_type;
  typename M::template on<cpu>;
  model.parameters();
  const_model.parameter_values();
  const_model.buffer_values();
  { const_model.seed() } -> std::convertible_to<std::uint64_t>;
  { const_model.first_layer_index() } -> std::convertible_to<std::size_t>;
};

template <SavableModel M>
void save(const M& model, const std::filesystem::path& path) {
  using T = typename M::value_type;
  if constexpr (std::is_same_v<typename M::device, cpu>) {
    save_parameters<T>(path, model.parameters());
  } else {
    typename M::template on<cpu> host(model.seed(), model.first_layer_index());
    copy(model.parameter_values(), host.parameter_values());  // device to host: defined by the device's headers
    copy(model.buffer_values(), host.buffer_values());
    save(host, path);
  }
}

template <SavableModel M>
void load(M& model, const std::filesystem::path& path) {
  using T = typename M::value_type;
  if constexpr (std::is_same_v<typename M::device, cpu>) {
    load_parameters<T>(path, model.parameters());
  } else {
    typename M::template on<cpu> host(model.seed(), model.first_layer_index());
    load(host, path);
    copy(std::as_const(host).parameter_values(), model.parameter_values());
    copy(std::as_const(host).buffer_values(), model.buffer_values());
  }
}

}  // namespace pnn
