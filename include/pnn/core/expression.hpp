// pnn/core/expression.hpp: lazy element-wise expressions over tensors, evaluated in one pass.
//
//   y = relu(x + b);            // one loop over y, no temporary for x + b
//   w = w - lr * (g + wd * w);  // an optimiser update, one pass
//
// An expression is a tree of nodes: leaves are tensors, views and scalars; inner nodes apply an element
// operation. Nothing is computed until the tree is assigned to a tensor (or reduced with sum(), ...),
// and then the device's Executor (core/executor.hpp) evaluates it: the CPU executor lowers the tree onto
// Eigen arrays so Eigen's SIMD code runs it, the CUDA executor runs it per element in one kernel.
//
// Closure rule (the classic bug of lazy expressions is a node that outlives a temporary it refers to):
// named tensors are held by reference (as a TensorView), everything else by value: sub-expressions,
// views, scalars, and tensors passed as rvalues, which the node takes ownership of.
//
// Broadcasting: an operand whose shape equals the trailing dimensions of the other operand's shape is
// repeated over the leading ones, e.g. a bias of shape (N,) over a batch of shape (B, N).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <type_traits>
#include <utility>

#include "pnn/core/config.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/shape.hpp"

namespace pnn {

template <class T, std::size_t Rank, class D>
class Tensor;
template <class T, std::size_t Rank, class D>
class TensorView;

// CRTP base of every expression node and of Tensor and TensorView.
template <class Derived>
struct Expression {
  PNN_HOST_DEVICE const Derived& self() const { return static_cast<const Derived&>(*this); }
};

template <class E>
concept AnyExpression = std::is_base_of_v<Expression<std::remove_cvref_t<E>>, std::remove_cvref_t<E>>;

// How a node holds a child (see the closure rule above).
namespace detail {
template <class E>
struct closure {
  using type = std::remove_cvref_t<E>;
};
template <class T, std::size_t R, class D>
struct closure<Tensor<T, R, D>&> {
  using type = TensorView<const T, R, D>;
};
template <class T, std::size_t R, class D>
struct closure<const Tensor<T, R, D>&> {
  using type = TensorView<const T, R, D>;
};
}  // namespace detail

template <class E>
using closure_t = typename detail::closure<E>::type;

template <class E>
closure_t<E&&> capture(E&& e) {
  if constexpr (std::is_lvalue_reference_v<E> && !std::is_same_v<closure_t<E&&>, std::remove_cvref_t<E>>)
    return e.view();
  else return closure_t<E&&>(std::forward<E>(e));
}

// A scalar operand: rank 0, broadcasts against anything.
template <class T, class D>
struct ScalarLeaf : Expression<ScalarLeaf<T, D>> {
  using value_type = T;
  using device = D;
  static constexpr std::size_t rank = 0;
  T value;
  explicit ScalarLeaf(T v) : value(v) {}
  Extents<0> shape() const { return {}; }
  index size() const { return 1; }
  index broadcast_period(index full) const { return full; }
  PNN_HOST_DEVICE T coeff(index) const { return value; }
};

// ---------------------------------------------------------------------------------------------------
// Element operations. Each has a scalar form (apply), used per element on the GPU and in plain loops,
// and a lowering onto Eigen arrays (lower), used by the CPU executor so Eigen vectorises the loop.
// The operations read as a table, two lines each:
// clang-format off
namespace op {

struct Negate {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { return -x; }
  template <class X> static auto lower(const X& x) { return -x; }
};
struct Relu {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { return x > T(0) ? x : T(0); }
  template <class X> static auto lower(const X& x) { return x.max(typename X::Scalar(0)); }
};
// 1 where x > 0, else 0: the derivative of relu, applied to relu's output or input.
struct Step {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { return x > T(0) ? T(1) : T(0); }
  template <class X> static auto lower(const X& x) {
    using T = typename X::Scalar;
    // select() vectorises where a cast of the comparison does not.
    return (x > T(0)).select(X::PlainObject::Ones(x.size()), T(0));
  }
};
struct Tanh {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::tanh; return tanh(x); }
  template <class X> static auto lower(const X& x) { return x.tanh(); }
};
struct Sigmoid {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::exp; return T(1) / (T(1) + exp(-x)); }
  template <class X> static auto lower(const X& x) { return x.logistic(); }
};
struct Exp {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::exp; return exp(x); }
  template <class X> static auto lower(const X& x) { return x.exp(); }
};
struct Log {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::log; return log(x); }
  template <class X> static auto lower(const X& x) { return x.log(); }
};
struct Sqrt {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::sqrt; return sqrt(x); }
  template <class X> static auto lower(const X& x) { return x.sqrt(); }
};
struct Rsqrt {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::sqrt; return T(1) / sqrt(x); }
  template <class X> static auto lower(const X& x) { return x.rsqrt(); }
};
struct Abs {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { using std::abs; return abs(x); }
  template <class X> static auto lower(const X& x) { return x.abs(); }
};
struct Square {
  template <class T> PNN_HOST_DEVICE static T apply(T x) { return x * x; }
  template <class X> static auto lower(const X& x) { return x.square(); }
};

// Binary operations. Lowering receives Eigen array expressions, or a plain scalar for a ScalarLeaf.
struct Add {
  template <class T> PNN_HOST_DEVICE static T apply(T a, T b) { return a + b; }
  template <class A, class B> static auto lower(const A& a, const B& b) { return a + b; }
};
struct Subtract {
  template <class T> PNN_HOST_DEVICE static T apply(T a, T b) { return a - b; }
  template <class A, class B> static auto lower(const A& a, const B& b) { return a - b; }
};
struct Multiply {
  template <class T> PNN_HOST_DEVICE static T apply(T a, T b) { return a * b; }
  template <class A, class B> static auto lower(const A& a, const B& b) { return a * b; }
};
struct Divide {
  template <class T> PNN_HOST_DEVICE static T apply(T a, T b) { return a / b; }
  template <class A, class B> static auto lower(const A& a, const B& b) { return a / b; }
};
struct Maximum {
  template <class T> PNN_HOST_DEVICE static T apply(T a, T b) { return a > b ? a : b; }
  template <class A, class B> static auto lower(const A& a, const B& b) {
    if constexpr (std::is_arithmetic_v<A>) return b.max(a);
    else return a.max(b);
  }
};
struct Minimum {
  template <class T> PNN_HOST_DEVICE static T apply(T a, T b) { return a < b ? a : b; }
  template <class A, class B> static auto lower(const A& a, const B& b) {
    if constexpr (std::is_arithmetic_v<A>) return b.min(a);
    else return a.min(b);
  }
};

}  // namespace op
// clang-format on

// ---------------------------------------------------------------------------------------------------
// Inner nodes.

template <class Op, class A>
struct UnaryNode : Expression<UnaryNode<Op, A>> {
  using value_type = typename A::value_type;
  using device = typename A::device;
  static constexpr std::size_t rank = A::rank;
  A operand;
  explicit UnaryNode(A a) : operand(std::move(a)) {}
  Extents<rank> shape() const { return operand.shape(); }
  index size() const { return operand.size(); }
  index broadcast_period(index full) const { return operand.broadcast_period(full); }
  PNN_HOST_DEVICE value_type coeff(index i) const { return Op::apply(operand.coeff(i)); }
};

namespace detail {
// The shape of a broadcast: equal shapes, or the lower-rank one equal to the trailing dimensions.
template <std::size_t RA, std::size_t RB>
Extents<(RA > RB ? RA : RB)> broadcast_shape(const Extents<RA>& a, const Extents<RB>& b) {
  constexpr std::size_t R = RA > RB ? RA : RB;
  Extents<R> result{};
  bool compatible = true;
  if constexpr (RA >= RB) {
    result = a;
    for (std::size_t i = 0; i < RB; ++i) compatible = compatible && a[RA - RB + i] == b[i];
  } else {
    result = b;
    for (std::size_t i = 0; i < RA; ++i) compatible = compatible && b[RB - RA + i] == a[i];
  }
  PNN_CHECK(compatible, ShapeError, "element-wise operation on incompatible shapes ", format_extents<RA>(a), " and ",
            format_extents<RB>(b), ": shapes must be equal, or one must equal the trailing dimensions of the other");
  return result;
}
}  // namespace detail

template <class Op, class A, class B>
struct BinaryNode : Expression<BinaryNode<Op, A, B>> {
  static_assert(std::is_same_v<typename A::value_type, typename B::value_type>,
                "pnn expressions do not mix element types: convert one operand first");
  static_assert(std::is_same_v<typename A::device, typename B::device>,
                "pnn expressions cannot mix devices: copy one operand to the other's device with pnn::copy");
  using value_type = typename A::value_type;
  using device = typename A::device;
  static constexpr std::size_t rank = A::rank > B::rank ? A::rank : B::rank;
  A left;
  B right;
  Extents<rank> extents;
  BinaryNode(A a, B b) : left(std::move(a)), right(std::move(b)) {
    extents = detail::broadcast_shape<A::rank, B::rank>(left.shape(), right.shape());
  }
  Extents<rank> shape() const { return extents; }
  index size() const { return element_count<rank>(extents); }
  index broadcast_period(index full) const {
    return std::min(left.broadcast_period(full), right.broadcast_period(full));
  }
  PNN_HOST_DEVICE value_type coeff(index i) const { return Op::apply(left.coeff(i), right.coeff(i)); }
};

// ---------------------------------------------------------------------------------------------------
// Building expressions.

namespace detail {
template <class Op, class E>
auto make_unary(E&& e) {
  return UnaryNode<Op, closure_t<E&&>>(capture(std::forward<E>(e)));
}
template <class Op, class A, class B>
auto make_binary(A&& a, B&& b) {
  return BinaryNode<Op, closure_t<A&&>, closure_t<B&&>>(capture(std::forward<A>(a)), capture(std::forward<B>(b)));
}
template <class E>
using scalar_leaf_for =
    ScalarLeaf<typename std::remove_cvref_t<E>::value_type, typename std::remove_cvref_t<E>::device>;
}  // namespace detail

template <class E>
concept Arithmetic = std::is_arithmetic_v<std::remove_cvref_t<E>>;

#define PNN_DEFINE_UNARY(function, Op)                     \
  template <AnyExpression E>                               \
  auto function(E&& e) {                                   \
    return detail::make_unary<op::Op>(std::forward<E>(e)); \
  }
PNN_DEFINE_UNARY(operator-, Negate)
PNN_DEFINE_UNARY(relu, Relu)
PNN_DEFINE_UNARY(step, Step)
PNN_DEFINE_UNARY(tanh, Tanh)
PNN_DEFINE_UNARY(sigmoid, Sigmoid)
PNN_DEFINE_UNARY(exp, Exp)
PNN_DEFINE_UNARY(log, Log)
PNN_DEFINE_UNARY(sqrt, Sqrt)
PNN_DEFINE_UNARY(rsqrt, Rsqrt)
PNN_DEFINE_UNARY(abs, Abs)
PNN_DEFINE_UNARY(square, Square)
#undef PNN_DEFINE_UNARY

// Each binary operation takes two expressions, or an expression and a number on either side.
#define PNN_DEFINE_BINARY(function, Op)                                                                      \
  template <AnyExpression A, AnyExpression B>                                                                \
  auto function(A&& a, B&& b) {                                                                              \
    return detail::make_binary<op::Op>(std::forward<A>(a), std::forward<B>(b));                              \
  }                                                                                                          \
  template <AnyExpression A, Arithmetic S>                                                                   \
  auto function(A&& a, S s) {                                                                                \
    using Leaf = detail::scalar_leaf_for<A>;                                                                 \
    return detail::make_binary<op::Op>(std::forward<A>(a), Leaf(static_cast<typename Leaf::value_type>(s))); \
  }                                                                                                          \
  template <Arithmetic S, AnyExpression B>                                                                   \
  auto function(S s, B&& b) {                                                                                \
    using Leaf = detail::scalar_leaf_for<B>;                                                                 \
    return detail::make_binary<op::Op>(Leaf(static_cast<typename Leaf::value_type>(s)), std::forward<B>(b)); \
  }
PNN_DEFINE_BINARY(operator+, Add)
PNN_DEFINE_BINARY(operator-, Subtract)
PNN_DEFINE_BINARY(operator*, Multiply)
PNN_DEFINE_BINARY(operator/, Divide)
PNN_DEFINE_BINARY(max, Maximum)
PNN_DEFINE_BINARY(min, Minimum)
#undef PNN_DEFINE_BINARY

}  // namespace pnn
