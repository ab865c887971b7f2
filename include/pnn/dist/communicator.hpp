// pnn/dist/communicator.hpp: the Communicator concept every parallel strategy talks through.
//
// A communicator connects `size()` ranks. Its operations take flat tensor views (a model's parameters
// and gradients are flat buffers, so one call moves a whole bucket):
//   all_reduce(view)                 element-wise sum over the ranks, in place
//   all_reduce_mean(view, weight)    the mean weighted by a per-rank count: sum(w_r x_r) / sum(w_r)
//   all_reduce_async(view)           starts a sum and returns a Request to wait() on later
//   broadcast(view, root)            root's values to every rank
//   barrier()
//   send(view, destination, tag) / receive(view, source, tag)    point to point (pipelines)
// Implementations: Local (threads of one process, dist/local.hpp), Mpi (processes, dist/mpi.hpp) and,
// for GPUs, Nccl (include/pnn/cuda/). None of them waits forever: a rank that does not arrive within the
// timeout, or one that fails, ends the operation on every rank with an error naming the rank and the
// operation.
#pragma once

#include <chrono>
#include <concepts>
#include <string>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // every rank reduces host tensors too (losses, hashes)

namespace pnn {

// A rank failed, did not arrive at a collective in time, or called a different collective.
class CommunicationError : public Error {
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

template <class C, class T = float>
concept Communicator = requires(C& communicator, TensorView<T, 1, typename C::device> data,
                                TensorView<const T, 1, typename C::device> source, int peer, double weight) {
  typename C::device;
  typename C::Request;
  { communicator.rank() } -> std::convertible_to<int>;
  { communicator.size() } -> std::convertible_to<int>;
  communicator.all_reduce(data);
  communicator.all_reduce_mean(data, weight);
  { communicator.all_reduce_async(data) } -> std::same_as<typename C::Request>;
  communicator.broadcast(data, peer);
  communicator.barrier();
  communicator.send(source, peer, peer);
  communicator.receive(data, peer, peer);
};

}  // namespace pnn
