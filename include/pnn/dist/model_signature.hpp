// pnn/dist/model_signature.hpp: hashes that let ranks check they hold the same model.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/hash.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/dist/communicator.hpp"

namespace pnn {

// The model's architecture: its layers, and its parameters' names and shapes.
template <class Model>
std::uint64_t architecture_hash(const Model& model) {
  std::string text = Model::summary();
  for (const auto& p : model.parameters()) {
    text += p.name() + "(";
    for (index d : p.declaration.shape) text += std::to_string(d) + ",";
    text += ")";
  }
  return fnv1a(text.data(), text.size());
}

// The bytes of a vector of values, hashed where they can be read: on the host, so a device's values are
// copied there first (through the copy its headers define).
template <class T, class D>
std::uint64_t fnv1a(TensorView<const T, 1, D> values, std::uint64_t hash) {
  if constexpr (std::is_same_v<D, cpu>) {
    return fnv1a(values.data(), sizeof(T) * static_cast<std::size_t>(values.size()), hash);
  } else {
    Tensor<T, 1> host(values.shape());
    copy(values, host.view());
    return fnv1a(TensorView<const T, 1>(host.view()), hash);
  }
}

// The model's parameter and buffer values, bit for bit.
template <class Model>
std::uint64_t value_hash(const Model& model) {
  return fnv1a(model.buffer_values(), fnv1a(model.parameter_values(), fnv1a_offset));
}

// Every rank contributes a hash; throws on every rank, naming the first rank that differs from rank 0.
template <class Comm>
void require_equal_across_ranks(Comm& comm, std::uint64_t hash, const std::string& what) {
  Tensor<double, 1> hashes(Extents<1>{comm.size()});
  hashes[comm.rank()] = static_cast<double>(hash >> 11);  // 53 bits: exact in a double
  comm.all_reduce(hashes.view());
  for (int r = 1; r < comm.size(); ++r)
    PNN_CHECK(hashes[r] == hashes[0], ArgumentError, "rank ", r, "'s ", what, " differs from rank 0's (hash ",
              static_cast<std::uint64_t>(hashes[r]), " against ", static_cast<std::uint64_t>(hashes[0]),
              "): every rank must build the same model from the same seed");
}

}  // namespace pnn
