// pnn/dist/model_signature.hpp: hashes that let ranks check they hold the same model.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/dist/communicator.hpp"

namespace pnn {

inline std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t hash = 1469598103934665603ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ULL;
  return hash;
}

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

// The model's parameter and buffer values, bit for bit.
template <class Model>
std::uint64_t value_hash(const Model& model) {
  const auto values = model.parameter_values();
  const auto buffers = model.buffer_values();
  std::uint64_t hash = fnv1a(values.data(), sizeof(*values.data()) * static_cast<std::size_t>(values.size()));
  return fnv1a(buffers.data(), sizeof(*buffers.data()) * static_cast<std::size_t>(buffers.size()), hash);
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
