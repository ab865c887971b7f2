// pnn/core/executor.hpp: the seam between expressions and devices.
//
// Executor<Device> is the only place where an expression tree meets a device. It provides
//   assign(destination, expression)      evaluate into a tensor view of the same shape
//   evaluate(into(a, e1), into(b, e2))   several assignments fused into one pass over memory
//   sum / maximum / minimum(expression)  reductions to a scalar
// The cpu executor is in cpu/executor.hpp; the cuda one in cuda/executor.cuh.
#pragma once

#include <utility>

#include "pnn/core/expression.hpp"

namespace pnn {

template <class D>
struct Executor {
  static_assert(always_false<D>,
                "pnn has no Executor for this device. For pnn::cpu, include <pnn/cpu/cpu.hpp>; for pnn::cuda, "
                "include <pnn/cuda/cuda.hpp> in a .cu file compiled by nvcc.");
};

namespace detail {
// Every executor's check: the expression's shape must equal the destination's, or its trailing
// dimensions (it is then repeated over the leading ones: a bias assigned to every row of a batch).
template <class Destination, class E>
void check_assignment_shape(const Destination& destination, const E& expression) {
  constexpr std::size_t R = Destination::rank;
  static_assert(E::rank <= R, "the expression has a higher rank than the destination: reshape one of them");
  const auto shape = expression.shape();
  bool fits = true;
  for (std::size_t i = 0; i < E::rank; ++i) fits = fits && shape[i] == destination.shape()[R - E::rank + i];
  PNN_CHECK(fits, ShapeError, "cannot assign an expression of shape ", format_extents<E::rank>(shape),
            " to a tensor of shape ", format_extents<R>(destination.shape()));
}
}  // namespace detail

// One destination and the expression to evaluate into it, for evaluate().
template <class View, class E>
struct Assignment {
  View destination;
  E expression;
};

template <class T>
inline constexpr bool is_assignment = false;
template <class View, class E>
inline constexpr bool is_assignment<Assignment<View, E>> = true;

// into(destination, expression): an assignment to be run by evaluate() together with others.
template <class Destination, AnyExpression E>
auto into(Destination&& destination, E&& expression) {
  auto view = destination.view();
  return Assignment<decltype(view), closure_t<E&&>>{view, capture(std::forward<E>(expression))};
}

// Runs the assignments chunk by chunk, in order, so a later one reads what an earlier one wrote while it
// is still in cache: an optimiser's velocity and weight updates cost one pass over memory, not two. Every
// destination must have the same number of elements, and each expression may read its own and earlier
// destinations only at the element it writes.
// Constrained to assignments so that a call like evaluate(model, data, 7) finds train/fit.hpp's overload.
template <class First, class... Rest>
  requires(is_assignment<First> && (is_assignment<Rest> && ...))
void evaluate(const First& first, const Rest&... rest) {
  using D = typename decltype(first.destination)::device;
  Executor<D>::evaluate(first, rest...);
}

template <AnyExpression E>
auto sum(const E& e) {
  return Executor<typename E::device>::sum(e.self());
}
template <AnyExpression E>
auto maximum(const E& e) {
  return Executor<typename E::device>::maximum(e.self());
}
template <AnyExpression E>
auto minimum(const E& e) {
  return Executor<typename E::device>::minimum(e.self());
}
template <AnyExpression E>
auto squared_norm(const E& e) {
  return sum(square(e.self()));
}
template <AnyExpression E>
auto norm(const E& e) {
  using std::sqrt;
  return sqrt(squared_norm(e));
}

}  // namespace pnn
