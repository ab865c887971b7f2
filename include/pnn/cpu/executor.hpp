// pnn/cpu/executor.hpp: Executor<cpu>, which evaluates expression trees by lowering them onto Eigen.
//
// The tree is evaluated in segments: contiguous runs of at most `chunk` elements that never cross a
// broadcast period, so every leaf maps to one contiguous Eigen::Map (a broadcast leaf maps to its own
// storage at offset % its size). Each segment becomes a single Eigen array expression, which Eigen runs
// with its SIMD packet code (vectorised exp, tanh, logistic included).
#pragma once

#include "pnn/cpu/simd.hpp"
#include <algorithm>
#include <limits>

#include "pnn/core/executor.hpp"
#include "pnn/core/expression.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/device.hpp"

namespace pnn {

namespace cpu_lowering {

template <class T>
using ArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Where a segment lies in the flat index space of the full (broadcast) shape.
struct Segment {
  index offset;
  index length;
  index full;  // element count of the destination
};

template <class T>
ArrayMap<std::remove_const_t<T>> leaf(const T* data, index size, const Segment& s) {
  const index start = size < s.full ? s.offset % size : s.offset;
  return ArrayMap<std::remove_const_t<T>>(data + start, s.length);
}

template <class T, std::size_t R>
auto lower(const TensorView<T, R, cpu>& e, const Segment& s) {
  return leaf(e.data(), e.size(), s);
}
template <class T, std::size_t R>
auto lower(const Tensor<T, R, cpu>& e, const Segment& s) {
  return leaf(e.data(), e.size(), s);
}
template <class T>
T lower(const ScalarLeaf<T, cpu>& e, const Segment&) {
  return e.value;
}
template <class Op, class A>
auto lower(const UnaryNode<Op, A>& e, const Segment& s) {
  return Op::lower(lower(e.operand, s));
}
template <class Op, class A, class B>
auto lower(const BinaryNode<Op, A, B>& e, const Segment& s) {
  return Op::lower(lower(e.left, s), lower(e.right, s));
}

// A reduction over a scalar-only tree still has to produce an array.
template <class T, class X>
auto as_array(const X& x, index length) {
  if constexpr (std::is_arithmetic_v<X>) return Eigen::Array<T, Eigen::Dynamic, 1>::Constant(length, x);
  else return x;
}

// Calls visit(segment) for consecutive segments covering [0, full).
template <class Visit>
void for_each_segment(index full, index period, index chunk, Visit&& visit) {
  if (full <= 0) return;
  period = std::max<index>(1, std::min(period, full));
  for (index base = 0; base < full; base += period)
    for (index j = 0; j < period; j += chunk) visit(Segment{base + j, std::min(chunk, period - j), full});
}

}  // namespace cpu_lowering

template <>
struct Executor<cpu> {
  // Elements per segment when several assignments are fused: small enough that all of one segment's
  // operands stay in L1/L2 between the assignments.
  static constexpr index fused_chunk = 2048;

  template <class T, std::size_t R, class E>
  static void assign(const TensorView<T, R, cpu>& destination, const E& expression) {
    static_assert(std::is_same_v<typename E::device, cpu>, "cannot assign a non-cpu expression to a cpu tensor");
    detail::check_assignment_shape(destination, expression);
    const index full = destination.size();
    using V = std::remove_const_t<T>;
    cpu_lowering::for_each_segment(full, expression.broadcast_period(full), full, [&](const cpu_lowering::Segment& s) {
      Eigen::Map<Eigen::Array<V, Eigen::Dynamic, 1>>(destination.data() + s.offset, s.length) =
          cpu_lowering::as_array<V>(cpu_lowering::lower(expression, s), s.length);
    });
  }

  template <class... A>
  static void evaluate(const A&... assignments) {
    const index full = (assignments.destination.size(), ...);
    index period = full;
    auto check = [&](const auto& a) {
      PNN_CHECK(a.destination.size() == full, ShapeError,
                "evaluate(): fused assignments need destinations of equal size, got ", full, " and ",
                a.destination.size());
      detail::check_assignment_shape(a.destination, a.expression);
      period = std::min(period, a.expression.broadcast_period(full));
    };
    (check(assignments), ...);
    cpu_lowering::for_each_segment(full, period, fused_chunk,
                                   [&](const cpu_lowering::Segment& s) { (assign_segment(assignments, s), ...); });
  }

  template <class E>
  static auto sum(const E& e) {
    using V = typename E::value_type;
    double total = 0;  // per-segment sums are accumulated in double: long sums stay accurate
    reduce(e, [&](const auto& segment) { total += static_cast<double>(segment.sum()); });
    return static_cast<V>(total);
  }
  template <class E>
  static auto maximum(const E& e) {
    using V = typename E::value_type;
    V best = -std::numeric_limits<V>::infinity();
    reduce(e, [&](const auto& segment) { best = std::max(best, static_cast<V>(segment.maxCoeff())); });
    return best;
  }
  template <class E>
  static auto minimum(const E& e) {
    using V = typename E::value_type;
    V best = std::numeric_limits<V>::infinity();
    reduce(e, [&](const auto& segment) { best = std::min(best, static_cast<V>(segment.minCoeff())); });
    return best;
  }

 private:
  template <class A>
  static void assign_segment(const A& a, const cpu_lowering::Segment& s) {
    using V = typename std::remove_cvref_t<decltype(a.destination)>::value_type;
    Eigen::Map<Eigen::Array<V, Eigen::Dynamic, 1>>(a.destination.data() + s.offset, s.length) =
        cpu_lowering::as_array<V>(cpu_lowering::lower(a.expression, s), s.length);
  }

  template <class E, class Visit>
  static void reduce(const E& e, Visit&& visit) {
    using V = typename E::value_type;
    const index full = e.size();
    constexpr index chunk = 1 << 14;
    cpu_lowering::for_each_segment(full, e.broadcast_period(full), chunk, [&](const cpu_lowering::Segment& s) {
      visit(cpu_lowering::as_array<V>(cpu_lowering::lower(e, s), s.length));
    });
  }
};

}  // namespace pnn
