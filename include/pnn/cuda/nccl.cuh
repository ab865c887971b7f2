// pnn/cuda/nccl.cuh: Nccl, the communicator between GPUs (NCCL), for pnn::cuda models.
//
//   auto ranks = pnn::Nccl::group(2);   // one process driving GPUs 0 and 1: one communicator per GPU
//   pnn::Distributed<Net::on<pnn::cuda>, pnn::DataParallel<pnn::Nccl>> model(seed, {.ranks = 2});
//
// It satisfies pnn::InProcessCommunicator with device = cuda (all_reduce_mean is the free function of
// dist/communicator.hpp, written once for every communicator). Processes launched by mpirun use NcclMpi
// (pnn/cuda/nccl_mpi.cuh), which bootstraps the same communicator through MPI.
//
// Streams: an operation waits on an event of the compute stream and the compute stream then waits on its
// event, never the host; all_reduce_async returns at once, so gradient buckets reduce while backward runs.
// Point to point: messages up and down a pipeline travel on separate NCCL communicators and streams, each
// with a checked (tag, count) header, and a send sends a copy, so the compute stream never waits on a peer
// (under 1F1B that would deadlock). Failures: NCCL never times out, so every wait on the host polls the
// event, ncclCommGetAsyncError and the group's failure flag until CommunicatorOptions::timeout, then aborts
// the communicators and throws CommunicationError naming the rank and the operation. One wait is NCCL's
// own, with no timeout: its lazy connection of ranks inside the first operation that needs one. docs/cuda.md,
// "NCCL", says why each of these is so and what NCCL_RUNTIME_CONNECT=0 changes.
#pragma once

#include <nccl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "pnn/core/tensor.hpp"
#include "pnn/cuda/executor.cuh"
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"
#include "pnn/dist/communicator.hpp"

namespace pnn {

namespace cuda_detail {

inline void check(ncclResult_t status, const char* call, const char* file, int line) {
  if (status != ncclSuccess)
    throw CudaError(detail::concat(call, " failed: ", ncclGetErrorString(status), " (", ncclGetLastError(nullptr),
                                   ") at ", file, ":", line));
}

template <class T>
constexpr ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return ncclInt32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return ncclInt64;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return ncclUint64;
  else
    static_assert(always_false<T>,
                  "Nccl: no NCCL data type for this element type (float, double, int32, int64, uint64)");
}

inline namespace PNN_CUDA_ABI_TAG {
// A message's header, written on the device so that sending never waits on a host-to-device copy. A
// template, as every pnn kernel, so that each translation unit including this header may define it.
template <class I>
PNN_KERNEL_WITH_BLOCK(1)
void write_message_header(I* header, I tag, I count) {
  header[0] = tag;
  header[1] = count;
}
}  // namespace PNN_CUDA_ABI_TAG

// What the ranks of one in-process group share: whether one of them failed, and why.
class NcclGroupState {
 public:
  void fail(const std::string& message) {
    std::lock_guard lock(mutex_);
    if (!failed_) {
      failed_ = true;
      failure_ = message;
    }
  }
  bool failed() const {
    std::lock_guard lock(mutex_);
    return failed_;
  }
  std::string failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }

 private:
  mutable std::mutex mutex_;
  bool failed_ = false;
  std::string failure_;
};

}  // namespace cuda_detail

class Nccl {
 public:
  using device = cuda;

  // A started reduction. wait() orders the compute stream after it; ready() tells whether it finished.
  class Request {
   public:
    Request() = default;
    Request(cuda_detail::Event done, int device) : done_(std::move(done)), device_(device) {}
    void wait() {
      if (!done_) return;
      PNN_CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(device_), done_.get(), 0));
      done_.reset();
    }
    bool ready() const {
      if (!done_) return true;
      const cudaError_t status = cudaEventQuery(done_.get());
      if (cuda_detail::not_ready(status)) return false;
      PNN_CUDA_CHECK(status);
      return true;
    }

   private:
    cuda_detail::Event done_;
    int device_ = 0;
  };

  // `size` communicators, one per GPU 0, 1, ..., size - 1 of this process (ncclCommInitAll). Every
  // rank's thread must make its GPU current first: enter_rank(rank).
  static std::vector<Nccl> group(int size, CommunicatorOptions options = {}) {
    PNN_CHECK(size > 0, ArgumentError, "an Nccl group needs at least one rank, got ", size);
    std::string reason;
    const int devices = cuda_device_count(&reason);
    PNN_CHECK(size <= devices, ArgumentError, "an Nccl group of ", size, " ranks needs ", size,
              " GPUs (NCCL runs one rank per GPU), but this process sees ", devices,
              devices == 0 ? " (" + reason + ")" : std::string());
    // NCCL visits every device while it creates the communicators: the caller keeps its current device.
    cuda_detail::DeviceGuard keep(cuda_detail::current_device());
    std::vector<int> device_list(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r) device_list[static_cast<std::size_t>(r)] = r;
    // Within one process NCCL's kernels read and write the peers' buffers directly, and pnn's tensors live
    // in memory pools that are private to their device until opened to the others.
    cuda_share_memory(device_list);
    // Communicators not yet handed to an Nccl, aborted (which waits for nothing) if making the group fails.
    std::array<std::vector<ncclComm_t>, channel_count> comms;
    int owned_ranks = 0;
    try {
      for (auto& list : comms) {
        list.assign(static_cast<std::size_t>(size), nullptr);
        PNN_CUDA_CHECK(ncclCommInitAll(list.data(), size, device_list.data()));
      }
      auto shared = std::make_shared<cuda_detail::NcclGroupState>();
      std::vector<Nccl> ranks;
      ranks.reserve(static_cast<std::size_t>(size));  // push_back cannot throw after making an Nccl
      for (int r = 0; r < size; ++r) {
        std::array<ncclComm_t, channel_count> own{};
        for (std::size_t c = 0; c < channel_count; ++c) own[c] = comms[c][static_cast<std::size_t>(r)];
        ranks.push_back(Nccl(Setup{own, r, size, r, options, shared}));
        ++owned_ranks;
      }
      return ranks;
    } catch (...) {
      for (auto& list : comms)
        for (std::size_t r = static_cast<std::size_t>(owned_ranks); r < list.size(); ++r)
          if (list[r]) (void)ncclCommAbort(list[r]);
      throw;
    }
  }

  // Called by Distributed on each rank's thread before it runs anything: makes the rank's GPU current.
  static void enter_rank(int rank) { PNN_CUDA_CHECK(cudaSetDevice(rank)); }

  Nccl(Nccl&&) noexcept = default;
  Nccl& operator=(Nccl&& other) noexcept {  // releases the communicators it held, as the destructor does
    if (this != &other) {
      if (state_) state_->close();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~Nccl() {
    if (state_) state_->close();
  }

  int rank() const { return state_->rank; }
  int size() const { return state_->size; }
  int cuda_device() const { return state_->device; }
  const CommunicatorOptions& options() const { return state_->options; }
  static std::string name() { return "Nccl, one GPU per rank"; }

  // ----- collectives on device data -------------------------------------------------------------------
  template <class T>
  void all_reduce(TensorView<T, 1, cuda> data) {
    auto done = start_reduce(data, "all_reduce");
    finish(done, describe<T>("all_reduce", data.size()));
  }

  template <class T>
  Request all_reduce_async(TensorView<T, 1, cuda> data) {
    return Request(start_reduce(data, "all_reduce"), state_->device);
  }

  // On GPUs the cross-rank order is NCCL's: the canonical order is promised on the CPU only.
  template <class T>
  void all_reduce_canonical(TensorView<T, 1, cuda> data) {
    all_reduce(data);
  }
  template <class T>
  Request all_reduce_canonical_async(TensorView<T, 1, cuda> data) {
    return all_reduce_async(data);
  }

  template <class T>
  void broadcast(TensorView<T, 1, cuda> data, int root) {
    check_peer(root, "broadcast");
    const std::string description = describe<T>("broadcast", data.size(), root);
    Scope scope(*this, description);
    check_order(description);
    cudaStream_t stream = state_->streams[collectives];
    follow_compute(stream);
    if (data.size() > 0)
      call(ncclBroadcast(data.data(), data.data(), static_cast<std::size_t>(data.size()), cuda_detail::nccl_type<T>(),
                         root, state_->comms[collectives], stream),
           description);
    finish(cuda_detail::record_event(stream), description);
  }

  // ----- the same on host data (hashes, loss values): staged through the device ------------------------
  template <class T>
  void all_reduce(TensorView<T, 1, cpu> data) {
    const std::string description = describe<T>("all_reduce", data.size());
    Scope scope(*this, description);
    check_order(description);
    through_device(data, description, [&](T* staged, cudaStream_t stream) {
      call(ncclAllReduce(staged, staged, static_cast<std::size_t>(data.size()), cuda_detail::nccl_type<T>(), ncclSum,
                         state_->comms[collectives], stream),
           description);
    });
  }
  // On GPUs the cross-rank order is NCCL's, for host data too (it is staged through the device).
  template <class T>
  void all_reduce_canonical(TensorView<T, 1, cpu> data) {
    all_reduce(data);
  }
  template <class T>
  void broadcast(TensorView<T, 1, cpu> data, int root) {
    check_peer(root, "broadcast");
    const std::string description = describe<T>("broadcast", data.size(), root);
    Scope scope(*this, description);
    check_order(description);
    through_device(data, description, [&](T* staged, cudaStream_t stream) {
      call(ncclBroadcast(staged, staged, static_cast<std::size_t>(data.size()), cuda_detail::nccl_type<T>(), root,
                         state_->comms[collectives], stream),
           description);
    });
  }

  void barrier() {
    Tensor<float, 1> token(Extents<1>{1});
    all_reduce(token.view());
  }

  // ----- point to point ------------------------------------------------------------------------------
  // Returns once the send is enqueued. It sends a copy of `data`, taken in stream order, so the caller
  // may overwrite or free `data` at once, and the compute stream does not wait for the peer.
  template <class T>
  void send(TensorView<const T, 1, cuda> data, int destination, int tag) {
    check_peer(destination, "send");
    PNN_CHECK(destination != rank(), ArgumentError, "send: rank ", rank(), " cannot send to itself over Nccl");
    const std::string description =
        detail::concat("send of ", data.size(), " ", type_name<T>(), "s to rank ", destination, " (tag ", tag, ")");
    Scope scope(*this, description);
    const int channel = destination > rank() ? upward : downward;
    cudaStream_t stream = state_->streams[static_cast<std::size_t>(channel)];
    ncclComm_t comm = state_->comms[static_cast<std::size_t>(channel)];
    state_->release_completed_sends();
    // The message (header and copy) is written on the compute stream, after the data's producers.
    auto message = std::make_shared<OutgoingMessage<T>>(data.shape());
    cuda_detail::write_message_header<std::int64_t>
        <<<1, 1, 0, cuda_stream(state_->device)>>>(message->header.data(), tag, data.size());
    PNN_CUDA_CHECK_LAUNCH("write_message_header");
    copy(data, message->payload.view());
    follow_compute(stream);
    keeping_buffers_until_failed_work_ends(stream, [&] {
      call(ncclSend(message->header.data(), 2, ncclInt64, destination, comm, stream), description);
      if (data.size() > 0)
        call(ncclSend(message->payload.data(), static_cast<std::size_t>(data.size()), cuda_detail::nccl_type<T>(),
                      destination, comm, stream),
             description);
      state_->sends_in_flight.push_back({message, cuda_detail::record_event(stream)});
    });
  }

  // Returns when the message has arrived (waiting at most the timeout).
  template <class T>
  void receive(TensorView<T, 1, cuda> data, int source, int tag) {
    check_peer(source, "receive");
    PNN_CHECK(source != rank(), ArgumentError, "receive: rank ", rank(), " cannot receive from itself over Nccl");
    const std::string description =
        detail::concat("receive of ", data.size(), " ", type_name<T>(), "s from rank ", source, " (tag ", tag, ")");
    Scope scope(*this, description);
    const int channel = source > rank() ? downward : upward;
    cudaStream_t stream = state_->streams[static_cast<std::size_t>(channel)];
    ncclComm_t comm = state_->comms[static_cast<std::size_t>(channel)];
    state_->release_completed_sends();
    Tensor<std::int64_t, 1, cuda> header(Extents<1>{2});
    follow_compute(stream);  // the header's allocation, and earlier readers of `data`
    keeping_buffers_until_failed_work_ends(stream, [&] {
      call(ncclRecv(header.data(), 2, ncclInt64, source, comm, stream), description);
      auto* header_host = static_cast<std::int64_t*>(state_->page_locked(sizeof(std::int64_t) * 2));
      PNN_CUDA_CHECK(
          cudaMemcpyAsync(header_host, header.data(), sizeof(std::int64_t) * 2, cudaMemcpyDeviceToHost, stream));
      wait_on_host(cuda_detail::record_event(stream), description);
      PNN_CHECK(header_host[0] == tag && header_host[1] == data.size(), CommunicationError,
                fail_message(detail::concat("rank ", rank(), " expected ", data.size(), " ", type_name<T>(),
                                            "s with tag ", tag, " from rank ", source, " but the next message holds ",
                                            header_host[1], " with tag ", header_host[0],
                                            " (Nccl delivers messages in the order they were sent)")));
      if (data.size() > 0)
        call(ncclRecv(data.data(), static_cast<std::size_t>(data.size()), cuda_detail::nccl_type<T>(), source, comm,
                      stream),
             description);
      finish(cuda_detail::record_event(stream), description);
    });
  }

  // ----- failures --------------------------------------------------------------------------------------
  // Ends every pending and later operation of every rank of the group with `message`.
  void abort(const std::string& message) {
    state_->group->fail(message);
    state_->abort_communicators();
  }
  bool aborted() const { return state_->group->failed(); }
  std::string failure() const { return state_->group->failure(); }

 protected:
  static constexpr std::size_t channel_count = 3;
  static constexpr std::size_t collectives = 0;  // collectives
  static constexpr int upward = 1;               // messages from lower to higher ranks
  static constexpr int downward = 2;             // messages from higher to lower ranks

  // A rank's communicators (one per channel) and where it runs.
  struct Setup {
    std::array<ncclComm_t, channel_count> comms{};
    int rank = 0, size = 1, device = 0;
    CommunicatorOptions options;
    std::shared_ptr<cuda_detail::NcclGroupState> group;
  };

  explicit Nccl(Setup setup) : state_(std::make_unique<State>()) {
    state_->comms = setup.comms;
    state_->rank = setup.rank;
    state_->size = setup.size;
    state_->device = setup.device;
    state_->options = setup.options;
    state_->group = std::move(setup.group);
    cuda_detail::DeviceGuard guard(setup.device);
    for (auto& stream : state_->streams) PNN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    // Enough for headers, losses, the order check and the ranks' weight hashes, so that it need not grow.
    state_->page_locked(std::max<std::size_t>(256, sizeof(double) * static_cast<std::size_t>(setup.size)));
  }

 private:
  struct State {
    std::array<ncclComm_t, channel_count> comms{};
    std::array<cudaStream_t, channel_count> streams{};
    int rank = 0, size = 1, device = 0;
    CommunicatorOptions options;
    std::shared_ptr<cuda_detail::NcclGroupState> group;
    bool communicators_aborted = false;
    std::uint64_t sequence = 0;
    // Messages sent and not yet seen complete, kept alive until they are (send()).
    struct SendInFlight {
      std::shared_ptr<void> message;
      cuda_detail::Event done;
    };
    std::deque<SendInFlight> sends_in_flight;
    // Page-locked host memory through which host data reaches the NCCL streams; used only by operations
    // that wait for it before they return. When a larger one is needed the old one is kept until close():
    // cudaFreeHost may synchronise the device, which could wait on a send waiting for its peer.
    void* page_locked_memory = nullptr;
    std::size_t page_locked_bytes = 0;
    std::vector<void*> outgrown_page_locked;

    void* page_locked(std::size_t bytes) {
      if (bytes > page_locked_bytes) {
        void* larger = nullptr;
        PNN_CUDA_CHECK(cudaMallocHost(&larger, bytes));
        if (page_locked_memory) outgrown_page_locked.push_back(page_locked_memory);
        page_locked_memory = larger;
        page_locked_bytes = bytes;
      }
      return page_locked_memory;
    }

    void release_completed_sends() {
      while (!sends_in_flight.empty()) {
        const cudaError_t status = cudaEventQuery(sends_in_flight.front().done.get());
        if (cuda_detail::not_ready(status)) return;
        PNN_CUDA_CHECK(status);
        sends_in_flight.pop_front();
      }
    }

    void abort_communicators() noexcept {
      if (communicators_aborted) return;
      communicators_aborted = true;
      for (ncclComm_t comm : comms)
        if (comm) (void)ncclCommAbort(comm);  // also ends kernels stuck waiting for a peer
    }

    enum class Drain { finished, failed, timed_out };
    // Polls `stream` until its work has run, it failed, or `deadline` passed.
    static Drain drain(cudaStream_t stream, std::chrono::steady_clock::time_point deadline) noexcept {
      for (;;) {
        const cudaError_t status = cudaStreamQuery(stream);
        if (status == cudaSuccess) return Drain::finished;
        if (!cuda_detail::not_ready(status)) {
          (void)cudaGetLastError();
          return Drain::failed;
        }
        if (std::chrono::steady_clock::now() > deadline) return Drain::timed_out;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }

    // Waits for the work on the NCCL streams (briefly: a healthy group has none left), then releases the
    // communicators: destroyed when healthy, aborted otherwise, since a destroy could wait forever for a
    // failed peer.
    void close() noexcept {
      try {
        cuda_detail::DeviceGuard guard(device);
        const auto deadline =
            std::chrono::steady_clock::now() + std::min(options.timeout, std::chrono::milliseconds(10'000));
        bool idle = !group->failed();
        for (cudaStream_t stream : streams)
          if (idle) idle = drain(stream, deadline) == Drain::finished;
        if (!idle) abort_communicators();
        if (!communicators_aborted)
          for (ncclComm_t comm : comms)
            if (comm) (void)ncclCommDestroy(comm);
        // After an abort the NCCL kernels end, and the streams drain: only then may the sent copies and the
        // page-locked memory go. Streams that do not drain keep them (a leak, said, rather than a write
        // into freed memory).
        bool drained = true;  // a failed stream counts: nothing more will run on it
        const auto drain_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(10'000);
        for (cudaStream_t stream : streams)
          if (drained) drained = drain(stream, drain_deadline) != Drain::timed_out;
        if (drained) {
          sends_in_flight.clear();
          outgrown_page_locked.push_back(page_locked_memory);
          for (void* memory : outgrown_page_locked)
            if (memory) cuda_detail::report(cudaFreeHost(memory), "cudaFreeHost");
        } else {
          std::fprintf(
              stderr, "pnn: rank %d's NCCL streams did not drain after the abort; their buffers are not freed\n", rank);
          (void)new std::deque<SendInFlight>(std::move(sends_in_flight));  // deliberately leaked, see above
        }
        page_locked_memory = nullptr;
        outgrown_page_locked.clear();
        for (cudaStream_t stream : streams)
          if (stream) cuda_detail::report(cudaStreamDestroy(stream), "cudaStreamDestroy");
      } catch (...) {
        abort_communicators();
      }
    }
  };

  // Entered by every operation: refuses to start when the group has failed, and makes the rank's GPU
  // current for its duration.
  class Scope {
   public:
    Scope(Nccl& nccl, const std::string& operation) : guard_(nccl.state_->device) {
      if (nccl.state_->group->failed()) {
        nccl.state_->abort_communicators();
        throw CommunicationError(
            detail::concat("rank ", nccl.rank(), " cannot start ", operation, ": ", nccl.state_->group->failure()));
      }
    }

   private:
    cuda_detail::DeviceGuard guard_;
  };

  template <class T>
  static std::string describe(const char* operation, index count, int root = -1) {
    std::string text = detail::concat(operation, "(", count, " ", type_name<T>(), "s");
    if (root >= 0) text += detail::concat(", root ", root);
    return text + ")";
  }

  void check_peer(int peer, const char* operation) const {
    PNN_CHECK(peer >= 0 && peer < size(), ArgumentError, operation, ": rank ", peer, " does not exist in a group of ",
              size());
  }

  // The NCCL stream runs after everything enqueued so far on the compute stream.
  void follow_compute(cudaStream_t stream) {
    PNN_CUDA_CHECK(cudaStreamWaitEvent(stream, cuda_detail::record_event(cuda_stream(state_->device)).get(), 0));
  }

  template <class T>
  cuda_detail::Event start_reduce(TensorView<T, 1, cuda> data, const char* operation) {
    const std::string description = describe<T>(operation, data.size());
    Scope scope(*this, description);
    check_order(description);
    cudaStream_t stream = state_->streams[collectives];
    follow_compute(stream);
    if (data.size() > 0)
      call(ncclAllReduce(data.data(), data.data(), static_cast<std::size_t>(data.size()), cuda_detail::nccl_type<T>(),
                         ncclSum, state_->comms[collectives], stream),
           description);
    return cuda_detail::record_event(stream);
  }

  // Waits on the host for `done` (with the timeout), then orders the compute stream after it.
  void finish(const cuda_detail::Event& done, const std::string& description) {
    wait_on_host(done, description);
    PNN_CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(state_->device), done.get(), 0));
  }

  void wait_on_host(const cuda_detail::Event& done, const std::string& description) {
    const auto deadline = std::chrono::steady_clock::now() + state_->options.timeout;
    for (int polls = 0;; ++polls) {
      const cudaError_t status = cudaEventQuery(done.get());
      if (status == cudaSuccess) return;
      if (!cuda_detail::not_ready(status))
        throw_failure(detail::concat("rank ", rank(), ": ", description, " failed: ", cudaGetErrorString(status)));
      for (ncclComm_t comm : state_->comms) {
        ncclResult_t asynchronous = ncclSuccess;
        const ncclResult_t queried = ncclCommGetAsyncError(comm, &asynchronous);
        if (queried != ncclSuccess || (asynchronous != ncclSuccess && asynchronous != ncclInProgress))
          throw_failure(detail::concat("rank ", rank(), ": ", description, " failed: NCCL reports ",
                                       ncclGetErrorString(queried != ncclSuccess ? queried : asynchronous)));
      }
      if (state_->group->failed()) {
        state_->abort_communicators();
        throw CommunicationError(state_->group->failure());
      }
      if (std::chrono::steady_clock::now() > deadline)
        throw_failure(detail::concat("rank ", rank(), ": ", description, " did not complete within ",
                                     state_->options.timeout.count(),
                                     " ms: a rank did not arrive, or called a different operation"));
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // Marks the group failed with `message`, aborts this rank's communicators, and returns the message.
  std::string fail_message(const std::string& message) {
    state_->group->fail(message);
    state_->abort_communicators();
    return message;
  }
  [[noreturn]] void throw_failure(const std::string& message) { throw CommunicationError(fail_message(message)); }

  void call(ncclResult_t status, const std::string& description) {
    if (status != ncclSuccess && status != ncclInProgress)
      throw_failure(detail::concat("rank ", rank(), ": ", description, " failed: ", ncclGetErrorString(status), " (",
                                   ncclGetLastError(nullptr), ")"));
  }

  // A message on its way: its header and a copy of its data, in device memory.
  template <class T>
  struct OutgoingMessage {
    explicit OutgoingMessage(Extents<1> shape) : payload(shape) {}
    Tensor<std::int64_t, 1, cuda> header{Extents<1>{2}};
    Tensor<T, 1, cuda> payload;
  };

  // Runs operation(device copy of data, collectives stream) on host data: in through page-locked memory,
  // out the same way, waiting (with the timeout) on the host. The caller has entered a Scope.
  template <class T, class Operation>
  void through_device(TensorView<T, 1, cpu> data, const std::string& description, Operation&& operation) {
    if (data.size() == 0) return;
    const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(data.size());
    void* host = state_->page_locked(bytes);
    std::memcpy(host, data.data(), bytes);
    Tensor<T, 1, cuda> staged(data.shape());
    cudaStream_t stream = state_->streams[collectives];
    follow_compute(stream);  // the staging buffer's allocation
    keeping_buffers_until_failed_work_ends(stream, [&] {
      PNN_CUDA_CHECK(cudaMemcpyAsync(staged.data(), host, bytes, cudaMemcpyHostToDevice, stream));
      operation(staged.data(), stream);
      PNN_CUDA_CHECK(cudaMemcpyAsync(host, staged.data(), bytes, cudaMemcpyDeviceToHost, stream));
      finish(cuda_detail::record_event(stream), description);  // then the compute stream may free `staged`
    });
    std::memcpy(data.data(), host, bytes);
  }

  // Runs body(), which enqueues work on the NCCL `stream` over buffers that the compute stream frees. Should
  // it throw (the communicators are aborted by then, which ends NCCL's kernels), the compute stream is
  // first ordered after that work, so the caller's buffers are not freed while it still runs.
  template <class Body>
  void keeping_buffers_until_failed_work_ends(cudaStream_t stream, Body&& body) {
    try {
      body();
    } catch (...) {
      cudaEvent_t ended = nullptr;
      if (cudaEventCreateWithFlags(&ended, cudaEventDisableTiming) == cudaSuccess) {
        if (cudaEventRecord(ended, stream) == cudaSuccess)
          (void)cudaStreamWaitEvent(cuda_stream(state_->device), ended, 0);
        (void)cudaEventDestroy(ended);
      }
      (void)cudaGetLastError();
      throw;
    }
  }

  // With check_collective_order: every rank contributes a hash of its operation's description; the
  // maximum of h and of -h agree only if every rank called the same operation.
  void check_order(const std::string& description) {
    const std::uint64_t sequence = state_->sequence++;
    if (!state_->options.check_collective_order) return;
    const double hash = static_cast<double>(std::hash<std::string>{}(description) >> 11);  // exact in a double
    Tensor<double, 1> extremes({2}, {hash, -hash});
    through_device(extremes.view(), "collective order check", [&](double* staged, cudaStream_t stream) {
      call(ncclAllReduce(staged, staged, 2, ncclFloat64, ncclMax, state_->comms[collectives], stream),
           "collective order check");
    });
    if (extremes[0] != -extremes[1])
      throw_failure(detail::concat("collective mismatch at collective #", sequence, ": rank ", rank(), " called ",
                                   description, " but another rank called a different operation"));
  }

  std::unique_ptr<State> state_;
};

static_assert(InProcessCommunicator<Nccl>);
static_assert(Communicator<Nccl, double>);

}  // namespace pnn
