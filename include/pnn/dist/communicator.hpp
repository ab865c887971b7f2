// pnn/dist/communicator.hpp: the Communicator concept, exactly what the strategies and Distributed call.
//
// A communicator connects `size()` ranks. Its operations take flat tensor views (a model's parameters
// and gradients are flat buffers, so one call moves a whole bucket), on the communicator's device and,
// for the few numbers every rank must agree on (loss totals, model hashes), on host `double`s:
//   all_reduce(view)                 element-wise sum over the ranks, in place (device and host views)
//   all_reduce_async(view)           starts a sum and returns a Request to wait() on later
//   all_reduce_canonical(view), all_reduce_canonical_async(view)
//                                    the same sum, in one order every rank and every run share: the
//                                    binary-counter tree over the ranks' values in rank order
//                                    (core/canonical_sum.hpp), so every rank gets the bits serial code
//                                    gets from that tree (on the CPU; on GPUs NCCL chooses the order)
//   broadcast(view, root)            root's values to every rank (device and host views)
//   send(view, destination, tag) / receive(view, source, tag)    point to point (pipelines)
//   abort(message), aborted(), failure()                          a failed rank ends every rank's wait
// InProcessCommunicator adds what Distributed needs to run a whole group as threads of one process:
// static group(ranks, options), and optionally static enter_rank(rank), which each rank's thread calls
// first (Nccl makes the rank's GPU current there). What is built from these operations is written once,
// below, for every communicator: all_reduce_mean. barrier() is offered by every communicator (the tests
// use it) but no strategy needs it, so the concept does not ask for it.
//
// Sub-communicators: a later split of a communicator into groups (MPI_Comm_split) returns another
// communicator of the same concept; nothing here assumes a rank's number is its thread or process.
//
// Implementations: Local (threads of one process, dist/local.hpp), Mpi (processes, dist/mpi.hpp) and,
// for GPUs, Nccl (include/pnn/cuda/nccl.cuh); each checks the concept right under its definition. None
// of them waits forever: a rank that does not arrive within the timeout, or one that fails, ends the
// operation on every rank with an error naming the rank and the operation.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // every rank reduces host tensors too (losses, hashes)

namespace pnn {

// A rank failed, did not arrive at a collective in time, or called a different collective.
class CommunicationError : public Error {
 public:
  using Error::Error;
};

// A rank of a Distributed model failed; the message names the rank and the operation.
class RankFailure : public Error {
 public:
  using Error::Error;
};

struct CommunicatorOptions {
  // How long a rank waits for the others at a collective or for a message.
  std::chrono::milliseconds timeout{120'000};
  // Compare what every rank calls at each collective (operation, size, root) and report the first
  // mismatch. The Local communicator always checks; for Mpi it costs one small collective more per call.
  bool check_collective_order = false;
};

// The name of an element type in the communicators' messages ("expected 4 floats from rank 1").
template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "int64";
  else if constexpr (std::is_same_v<T, std::uint64_t>) return "uint64";
  else return typeid(T).name();
}

template <class C, class T = float>
concept Communicator = requires(C& communicator, const C& observed, TensorView<T, 1, typename C::device> data,
                                TensorView<const T, 1, typename C::device> source, TensorView<double, 1, cpu> host,
                                typename C::Request& request, int peer, const std::string& message) {
  typename C::device;
  typename C::Request;
  { observed.rank() } -> std::convertible_to<int>;
  { observed.size() } -> std::convertible_to<int>;
  communicator.all_reduce(data);
  communicator.all_reduce(host);  // loss totals, model hashes
  { communicator.all_reduce_async(data) } -> std::same_as<typename C::Request>;
  communicator.all_reduce_canonical(data);
  communicator.all_reduce_canonical(host);
  { communicator.all_reduce_canonical_async(data) } -> std::same_as<typename C::Request>;
  request.wait();
  communicator.broadcast(data, peer);
  communicator.broadcast(host, peer);
  communicator.send(source, peer, peer);
  communicator.receive(data, peer, peer);
  communicator.abort(message);  // ends every rank's pending and later operations with `message`
  { observed.aborted() } -> std::convertible_to<bool>;
  { observed.failure() } -> std::convertible_to<std::string>;
};

// A communicator whose ranks are threads of one process: Distributed makes the whole group at once and
// runs each rank on a thread of its own (dist/rank_threads.hpp).
template <class C, class T = float>
concept InProcessCommunicator = Communicator<C, T> && requires(int ranks, const CommunicatorOptions& options) {
  { C::group(ranks, options) } -> std::same_as<std::vector<C>>;
};

// Calls C::enter_rank(rank) on a rank's thread before its work, where the communicator has one.
template <class C>
void enter_rank(int rank) {
  if constexpr (requires { C::enter_rank(rank); }) C::enter_rank(rank);
}

// The mean of the ranks' values weighted by `weight` (a sample count): sum(w_r x_r) / sum(w_r). Device
// data is scaled on the calling thread's current device: a rank's own thread (enter_rank).
template <class Comm, class T, class D>
void all_reduce_mean(Comm& comm, TensorView<T, 1, D> data, double weight) {
  Tensor<double, 1> total(Extents<1>{1});
  total[0] = weight;
  comm.all_reduce(total.view());
  PNN_CHECK(total[0] > 0, ArgumentError, "all_reduce_mean: the weights of all ranks sum to ", total[0],
            "; at least one rank needs a positive weight");
  data *= static_cast<T>(weight / total[0]);
  comm.all_reduce(data);
}

}  // namespace pnn
