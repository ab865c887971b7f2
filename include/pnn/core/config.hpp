// pnn/core/config.hpp: the index type, version and the host/device annotation shared by every header.
#pragma once

#include <cstddef>
#include <cstdint>

#define PNN_VERSION_MAJOR 0
#define PNN_VERSION_MINOR 1
#define PNN_VERSION_PATCH 0

// Expression nodes are evaluated per element on the GPU as well, so their element accessors carry
// __host__ __device__ when nvcc compiles them and nothing otherwise: CPU-only users never need nvcc.
#if defined(__CUDACC__)
#define PNN_HOST_DEVICE __host__ __device__
#else
#define PNN_HOST_DEVICE
#endif

namespace pnn {

// Signed like Eigen::Index, so sizes and differences mix without casts.
using index = std::ptrdiff_t;

// Used to make a static_assert in a primary template depend on its argument.
template <class...>
inline constexpr bool always_false = false;

}  // namespace pnn
