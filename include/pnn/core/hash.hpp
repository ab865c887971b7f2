// pnn/core/hash.hpp: FNV-1a, the one hash pnn uses: for the streams parameters are initialised from
// (core/parameter.hpp) and for the signatures ranks compare (dist/model_signature.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pnn {

inline constexpr std::uint64_t fnv1a_offset = 1469598103934665603ULL;

inline std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t hash = fnv1a_offset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ULL;
  return hash;
}

}  // namespace pnn
