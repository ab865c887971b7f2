// pnn/core/shape.hpp: compile-time sample shapes (Shape<C, H, W>) and run-time tensor extents.
//
// A layer's input and output shapes are types, so a model's shapes are checked by the compiler. The batch
// dimension is not part of a Shape: it is only known at run time.
#pragma once

#include <array>
#include <cstddef>
#include <ostream>
#include <sstream>
#include <string>

#include "pnn/core/config.hpp"

namespace pnn {

// The shape of one sample. Three dimensions read (channels, height, width).
template <index... Dims>
struct Shape {
  static_assert(sizeof...(Dims) > 0, "Shape<> needs at least one dimension");
  static_assert(((Dims > 0) && ...), "every dimension of a Shape must be positive");
  static constexpr std::size_t rank = sizeof...(Dims);
  static constexpr index size = (index{1} * ... * Dims);
  static constexpr std::array<index, rank> dims{Dims...};
};

template <class S>
inline constexpr bool is_shape = false;
template <index... Dims>
inline constexpr bool is_shape<Shape<Dims...>> = true;

template <class S>
concept StaticShape = is_shape<S>;

// Run-time extents of a tensor, outermost dimension first (row-major).
template <std::size_t Rank>
using Extents = std::array<index, Rank>;

template <std::size_t Rank>
constexpr index element_count(const Extents<Rank>& extents) {
  index count = 1;
  for (index e : extents) count *= e;
  return count;
}

template <std::size_t Rank>
std::string format_extents(const Extents<Rank>& extents) {
  std::ostringstream out;
  out << '(';
  for (std::size_t i = 0; i < Rank; ++i) out << (i ? ", " : "") << extents[i];
  if (Rank == 1) out << ',';
  out << ')';
  return out.str();
}

template <class S>
std::string format_shape() {
  return format_extents<S::rank>(S::dims);
}

}  // namespace pnn
