// pnn/loss/loss.hpp: the Loss concept.
//
// A loss maps the model's output and the batch's targets to the mean loss over the batch and writes the
// gradient of that mean with respect to the output. Taking the mean makes a data-parallel all-reduce
// weighted by each rank's sample count give exactly the gradient of the whole batch.
#pragma once

#include <concepts>

#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // every loss runs on the CPU, the default device

namespace pnn {

template <class L, class T, class D>
concept Loss = requires(const L& loss, TensorView<const T, 2, D> output, typename L::template target_type<T, D> target,
                        TensorView<T, 2, D> gradient) {
  { loss(output, target, gradient) } -> std::convertible_to<T>;
};

}  // namespace pnn
