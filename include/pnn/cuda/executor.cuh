// pnn/cuda/executor.cuh: Executor<cuda>, which evaluates expression trees on the GPU.
//
//   y = relu(x + b);                              one kernel: y[i] = relu(x[i] + b[i % N])
//   evaluate(into(v, mu * v + g), into(w, w - lr * v));   one kernel doing both, in order, per element
//   sum(square(w))                                two fixed-grid passes, the result copied to the host
//
// Before a launch the tree is turned into its kernel form (to_kernel): every tensor leaf becomes a plain
// (pointer, size) pair, scalars stay values, and inner nodes keep their operation. An expression may own
// a Tensor (an rvalue moved into a node); the kernel form only points at its memory, which the
// expression keeps alive until the launch has been enqueued, and which is freed in stream order after.
//
// Element i of a leaf of `size` elements is data[i % size] (broadcasting repeats a trailing-shape operand
// over the leading dimensions); the modulo is only computed when i >= size, i.e. for broadcast leaves.
// Loops are grid-stride with 64-bit indices. Reductions add in an order fixed by the element count
// alone, in double for sums, so they are deterministic and give the same bits on every GPU; their
// result is returned on the host, which makes every reduction a synchronisation point.
#pragma once

#include <limits>
#include <type_traits>

#include "pnn/core/executor.hpp"
#include "pnn/core/expression.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"

namespace pnn {

namespace cuda_detail {
inline namespace PNN_CUDA_ABI_TAG {

// ----- kernel forms of expression nodes ------------------------------------------------------------
// Host-callable too: tests/cuda/test_kernels_on_host.cu evaluates kernel forms element by element on the
// CPU against the CPU executor, so the translation of every node is tested without a GPU.

template <class V>
struct LeafArgument {
  const V* data;
  index size;
  PNN_HOST_DEVICE V coeff(index i) const { return i < size ? data[i] : data[i % size]; }
};

template <class V>
struct ScalarArgument {
  V value;
  PNN_HOST_DEVICE V coeff(index) const { return value; }
};

template <class Op, class A>
struct UnaryArgument {
  A operand;
  PNN_HOST_DEVICE auto coeff(index i) const { return Op::apply(operand.coeff(i)); }
};

template <class Op, class A, class B>
struct BinaryArgument {
  A left;
  B right;
  PNN_HOST_DEVICE auto coeff(index i) const { return Op::apply(left.coeff(i), right.coeff(i)); }
};

// The kernel form of each node type. Static members of one class, so each overload sees all the others
// whatever the order of their definitions (a node's form is built from its children's).
struct KernelForms {
  template <class T, std::size_t R>
  static LeafArgument<std::remove_const_t<T>> of(const TensorView<T, R, cuda>& view) {
    return {view.data(), view.size()};
  }
  template <class T, std::size_t R>
  static LeafArgument<T> of(const Tensor<T, R, cuda>& tensor) {
    return {tensor.data(), tensor.size()};
  }
  template <class T>
  static ScalarArgument<T> of(const ScalarLeaf<T, cuda>& scalar) {
    return {scalar.value};
  }
  template <class Op, class A>
  static auto of(const UnaryNode<Op, A>& node) {
    using Operand = decltype(of(node.operand));
    return UnaryArgument<Op, Operand>{of(node.operand)};
  }
  template <class Op, class A, class B>
  static auto of(const BinaryNode<Op, A, B>& node) {
    using Left = decltype(of(node.left));
    using Right = decltype(of(node.right));
    return BinaryArgument<Op, Left, Right>{of(node.left), of(node.right)};
  }
};

template <class E>
auto to_kernel(const E& expression) {
  return KernelForms::of(expression);
}

template <class E>
using kernel_form = decltype(to_kernel(std::declval<const E&>()));

// One destination and its expression in kernel form.
template <class V, class Argument>
struct AssignmentArgument {
  V* destination;
  Argument expression;
  PNN_HOST_DEVICE void run(index i) const { destination[i] = expression.coeff(i); }
};

// ----- kernels and launchers -------------------------------------------------------------------------

// Runs every assignment at element i, in the order given, for every i: an assignment may read what an
// earlier one wrote at the same element.
template <class... Assignments>
PNN_KERNEL void assign_kernel(index count, Assignments... assignments) {
  for (index i = global_thread(); i < count; i += grid_threads()) (assignments.run(i), ...);
}

// On the current device's stream, as reductions: an expression names no device, and asking each operand
// which device holds it would cost a driver call per operand per launch. So a thread works on the
// tensors of its current device; Distributed makes each rank's device current on the rank's thread.
// (Launches that take one tensor, in kernels.cuh and linalg.cuh, follow that tensor's device.)
template <class... Assignments>
void launch_assign(index count, const Assignments&... assignments) {
  if (count == 0) return;
  const int device = current_device();
  assign_kernel<<<grid_blocks(count, device), block_threads, 0, cuda_stream(device)>>>(count, assignments...);
  PNN_CUDA_CHECK_LAUNCH("assign_kernel");
}

struct SumReduction {
  template <class V>
  using accumulator = std::conditional_t<std::is_floating_point_v<V>, double, V>;  // long sums stay accurate
  template <class A>
  __device__ static A combine(A a, A b) {
    return a + b;
  }
};
struct MaximumReduction {
  template <class V>
  using accumulator = V;
  template <class A>
  __device__ static A combine(A a, A b) {
    return b > a ? b : a;
  }
};
struct MinimumReduction {
  template <class V>
  using accumulator = V;
  template <class A>
  __device__ static A combine(A a, A b) {
    return b < a ? b : a;
  }
};

// Combines the block's values in shared memory in a fixed tree order; thread 0 ends with the result.
template <class Reduction, class A>
__device__ A block_reduce(A value) {
  __shared__ A shared[block_threads];
  shared[threadIdx.x] = value;
  __syncthreads();
  for (unsigned width = block_threads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) shared[threadIdx.x] = Reduction::combine(shared[threadIdx.x], shared[threadIdx.x + width]);
    __syncthreads();
  }
  return shared[0];
}

// Pass 1: block b reduces elements b*T + t, b*T + t + G*T, ... (T threads, G blocks) into partials[b].
template <class Reduction, class A, class Argument>
PNN_KERNEL void reduce_kernel(Argument expression, index count, A identity, A* partials) {
  A value = identity;
  for (index i = global_thread(); i < count; i += grid_threads())
    value = Reduction::combine(value, static_cast<A>(expression.coeff(i)));
  value = block_reduce<Reduction>(value);
  if (threadIdx.x == 0) partials[blockIdx.x] = value;
}

// Pass 2: one block reduces the partials in a fixed order into *result.
template <class Reduction, class A>
PNN_KERNEL void reduce_partials_kernel(const A* partials, unsigned count, A identity, A* result) {
  A value = identity;
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) value = Reduction::combine(value, partials[i]);
  value = block_reduce<Reduction>(value);
  if (threadIdx.x == 0) *result = value;
}

// Reduces the expression to one value, returned on the host (a synchronisation point).
template <class Reduction, class E>
auto reduce(const E& expression, typename Reduction::template accumulator<typename E::value_type> identity) {
  using V = typename E::value_type;
  using A = typename Reduction::template accumulator<V>;
  const index count = expression.size();
  if (count == 0) return static_cast<V>(identity);
  const index wanted = (count + block_threads - 1) / block_threads;
  const auto blocks = static_cast<unsigned>(std::min<index>(wanted, PNN_CUDA_REDUCTION_BLOCKS));
  const int device = current_device();
  cudaStream_t stream = cuda_stream(device);
  Buffer<A, cuda> scratch(static_cast<index>(blocks) + 1);  // the partials, then the result
  A* partials = scratch.data();
  A* result = scratch.data() + blocks;
  reduce_kernel<Reduction><<<blocks, block_threads, 0, stream>>>(to_kernel(expression), count, identity, partials);
  PNN_CUDA_CHECK_LAUNCH("reduce_kernel");
  reduce_partials_kernel<Reduction><<<1, block_threads, 0, stream>>>(partials, blocks, identity, result);
  PNN_CUDA_CHECK_LAUNCH("reduce_partials_kernel");
  A host = identity;
  PNN_CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(A), cudaMemcpyDeviceToHost, stream));
  PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return static_cast<V>(host);
}

template <class A>
auto assignment_argument(const A& assignment) {
  using V = typename std::remove_cvref_t<decltype(assignment.destination)>::value_type;
  return AssignmentArgument<V, kernel_form<std::remove_cvref_t<decltype(assignment.expression)>>>{
      assignment.destination.data(), to_kernel(assignment.expression)};
}

}  // namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

template <>
struct Executor<cuda> {
  template <class T, std::size_t R, class E>
  static void assign(const TensorView<T, R, cuda>& destination, const E& expression) {
    static_assert(std::is_same_v<typename E::device, cuda>,
                  "cannot assign an expression over another device to a cuda tensor: copy its operands with pnn::copy");
    static_assert(!std::is_const_v<T>, "cannot assign to a view of const elements");
    detail::check_assignment_shape(destination, expression);
    cuda_detail::launch_assign(destination.size(), cuda_detail::AssignmentArgument<T, cuda_detail::kernel_form<E>>{
                                                       destination.data(), cuda_detail::to_kernel(expression)});
  }

  template <class... A>
  static void evaluate(const A&... assignments) {
    const index full = (assignments.destination.size(), ...);
    auto check = [&](const auto& a) {
      static_assert(std::is_same_v<typename std::remove_cvref_t<decltype(a.destination)>::device, cuda>,
                    "evaluate(): every destination must be on the same device");
      static_assert(std::is_same_v<typename std::remove_cvref_t<decltype(a.expression)>::device, cuda>,
                    "evaluate(): an expression over another device cannot be assigned to a cuda tensor");
      PNN_CHECK(a.destination.size() == full, ShapeError,
                "evaluate(): fused assignments need destinations of equal size, got ", full, " and ",
                a.destination.size());
      detail::check_assignment_shape(a.destination, a.expression);
    };
    (check(assignments), ...);
    cuda_detail::launch_assign(full, cuda_detail::assignment_argument(assignments)...);
  }

  template <class E>
  static auto sum(const E& e) {
    static_assert(std::is_floating_point_v<typename E::value_type>, "pnn's cuda reductions take float or double");
    return cuda_detail::reduce<cuda_detail::SumReduction>(e, 0.0);
  }
  template <class E>
  static auto maximum(const E& e) {
    using V = typename E::value_type;
    static_assert(std::is_floating_point_v<V>, "pnn's cuda reductions take float or double");
    return cuda_detail::reduce<cuda_detail::MaximumReduction>(e, -std::numeric_limits<V>::infinity());
  }
  template <class E>
  static auto minimum(const E& e) {
    using V = typename E::value_type;
    static_assert(std::is_floating_point_v<V>, "pnn's cuda reductions take float or double");
    return cuda_detail::reduce<cuda_detail::MinimumReduction>(e, std::numeric_limits<V>::infinity());
  }
};

}  // namespace pnn
