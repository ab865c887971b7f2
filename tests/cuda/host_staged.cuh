// HostStaged: Local's in-process rank threads for models on pnn::cuda, every rank on the same GPU.
//
// NCCL runs one rank per GPU (it rejects two ranks of a communicator on one device), so on a machine with
// a single GPU no strategy with more than one rank can run over Nccl. This test communicator copies each
// device buffer to the host, runs Local's operation on the copy and copies the result back, so the
// strategies' own logic (shares of the batch, gradient buckets, stage hand-offs, micro-batch schedules)
// runs with cuda tensors on one GPU. Every operation synchronises the GPU: it is for tests only.
#pragma once

#include <pnn/dist.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cuda_testing.cuh"

namespace pnn::testing {

class HostStaged {
 public:
  using device = cuda;
  using Request = Local::Request;  // operations complete before they return: a default Request is done

  static std::vector<HostStaged> group(int size, CommunicatorOptions options = {}) {
    std::vector<HostStaged> ranks;
    for (Local& local : Local::group(size, options)) ranks.push_back(HostStaged(std::move(local)));
    return ranks;
  }
  static std::string name() { return "HostStaged: Local through host copies, every rank on one GPU"; }

  int rank() const { return local_.rank(); }
  int size() const { return local_.size(); }

  // Host data (hashes, loss values) goes to Local as it is.
  template <class T>
  void all_reduce(TensorView<T, 1, cpu> data) {
    local_.all_reduce(data);
  }
  template <class T>
  void all_reduce_canonical(TensorView<T, 1, cpu> data) {
    local_.all_reduce_canonical(data);
  }
  template <class T>
  void broadcast(TensorView<T, 1, cpu> data, int root) {
    local_.broadcast(data, root);
  }

  template <class T>
  void all_reduce(TensorView<T, 1, cuda> data) {
    staged(data, [&](TensorView<T, 1, cpu> host) { local_.all_reduce(host); });
  }
  template <class T>
  Request all_reduce_async(TensorView<T, 1, cuda> data) {
    all_reduce(data);
    return {};
  }
  template <class T>
  void all_reduce_canonical(TensorView<T, 1, cuda> data) {
    staged(data, [&](TensorView<T, 1, cpu> host) { local_.all_reduce_canonical(host); });
  }
  template <class T>
  Request all_reduce_canonical_async(TensorView<T, 1, cuda> data) {
    all_reduce_canonical(data);
    return {};
  }
  template <class T>
  void broadcast(TensorView<T, 1, cuda> data, int root) {
    staged(data, [&](TensorView<T, 1, cpu> host) { local_.broadcast(host, root); });
  }
  void barrier() { local_.barrier(); }

  template <class T>
  void send(TensorView<const T, 1, cuda> data, int destination, int tag) {
    const Tensor<T, 1> host = to_host(data);
    local_.send(host.view(), destination, tag);
  }
  template <class T>
  void receive(TensorView<T, 1, cuda> data, int source, int tag) {
    Tensor<T, 1> host(data.shape());
    local_.receive(host.view(), source, tag);
    copy(const_view(host), data);
  }

  void abort(const std::string& message) { local_.abort(message); }
  bool aborted() const { return local_.aborted(); }
  std::string failure() const { return local_.failure(); }

 private:
  explicit HostStaged(Local local) : local_(std::move(local)) {}

  template <class T, class Operation>
  void staged(TensorView<T, 1, cuda> data, Operation&& operation) {
    Tensor<T, 1> host = to_host(data);  // waits for the kernels that produced the data
    operation(host.view());
    copy(const_view(host), data);
  }

  Local local_;
};

static_assert(InProcessCommunicator<HostStaged>);

}  // namespace pnn::testing
