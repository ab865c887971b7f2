// pnn/model/input.hpp: Input<Dims...>, the first entry of a Sequential: the shape of one sample.
#pragma once

#include "pnn/core/shape.hpp"

namespace pnn {

// Input<784> for vectors, Input<1, 28, 28> for (channels, height, width) images.
template <index... Dims>
struct Input {
  using shape = Shape<Dims...>;
};

namespace detail {
template <index... Dims>
Input<Dims...> input_for_shape(Shape<Dims...>);
}  // namespace detail

// The Input<...> whose samples have shape S.
template <class S>
using InputFor = decltype(detail::input_for_shape(S{}));

template <class T>
inline constexpr bool is_input = false;
template <index... Dims>
inline constexpr bool is_input<Input<Dims...>> = true;

}  // namespace pnn
