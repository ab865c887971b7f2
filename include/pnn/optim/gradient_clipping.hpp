// pnn/optim/gradient_clipping.hpp: gradient clipping by global norm, in one order every strategy shares.
//
// As torch.nn.utils.clip_grad_norm_: with n the L2 norm of all trainable parameters' gradients together,
// every gradient is multiplied by min(1, max_norm / (n + 1e-6)) before the update. Optimizer::clip_norm
// turns it on (optim/optimizer.hpp); it acts on the gradient the update sees, after a strategy's
// reduction over ranks and a step's accumulation over micro-steps.
//
// The norm is the same bits however the model is laid out: each parameter tensor's sum of squares is
// computed in an order that depends on its length alone (gradient_squares), and the tensors' sums are
// added in the model's parameter order (global_norm). A rank that holds only some parameters (a pipeline
// stage) gathers every tensor's sum and adds them in that order, not its own subtotal (dist/pipeline.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <type_traits>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/executor.hpp"
#include "pnn/core/parameter.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // the cpu's copy and sums; a device's come from its headers

namespace pnn {

// The sum of the squares of `values`, in double. On the cpu: eight running sums over the elements by
// their index modulo 8, added as ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)), an order that does not
// depend on where the tensor lies in memory (a library sum may start with the elements before the first
// aligned one); a float's square is exact in double. On a device: its fixed-grid sum, whose order depends
// on the length alone.
template <class T, class D>
double sum_of_squares(TensorView<const T, 1, D> values) {
  if constexpr (std::is_same_v<D, cpu>) {
    constexpr index lanes = 8;
    double lane[lanes] = {};
    const T* data = values.data();
    const index n = values.size();
    index i = 0;
    for (; i + lanes <= n; i += lanes)
      for (index j = 0; j < lanes; ++j) {
        const double x = static_cast<double>(data[i + j]);
        lane[j] += x * x;
      }
    for (index j = 0; i + j < n; ++j) {
      const double x = static_cast<double>(data[i + j]);
      lane[j] += x * x;
    }
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  } else {
    return static_cast<double>(squared_norm(values));
  }
}

// Each trainable parameter's sum of squared gradients, in the parameters' order.
template <class T, class D>
std::vector<double> gradient_squares(std::span<const Parameter<T, D>> parameters) {
  std::vector<double> squares;
  for (const auto& p : parameters)
    if (p.trainable()) squares.push_back(sum_of_squares(TensorView<const T, 1, D>(p.gradient)));
  return squares;
}

// The L2 norm of a gradient from its tensors' sums of squares, added in the order given (the model's).
inline double global_norm(std::span<const double> squares) {
  double total = 0;
  for (const double s : squares) total += s;
  return std::sqrt(total);
}

// Scales every trainable gradient by min(1, max_norm / (norm + 1e-6)), norm being their global norm.
template <class T, class D>
void clip_gradients(std::span<const Parameter<T, D>> parameters, double norm, double max_norm) {
  PNN_CHECK(max_norm > 0, ArgumentError, "clip_gradients: max_norm = ", max_norm, " must be > 0");
  PNN_CHECK(std::isfinite(norm), Error, "clip_gradients: the gradient's norm is ", norm,
            "; training diverged (lower the learning rate)");
  const double factor = max_norm / (norm + 1e-6);
  if (factor >= 1) return;
  const T scale = static_cast<T>(factor);
  for (const auto& p : parameters)
    if (p.trainable()) p.gradient *= scale;
}

}  // namespace pnn
