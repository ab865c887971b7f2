// pnn/dist/local.hpp: Local, the communicator between threads of one process (the embedded default).
//
//   auto ranks = pnn::Local::group(4);          // four communicators sharing one group
//   std::jthread thread([&] { ranks[1].all_reduce(gradients); });
//
// Collectives meet at a rendezvous keyed by each rank's collective count, so the k-th collective of
// every rank is the same operation: the group checks that (operation, element type, size, root) agree
// and reports the first mismatch. Reductions work in place on the ranks' own buffers: rank r sums chunk r
// of every buffer in rank order (deterministic, whatever the timing) and writes it back to all of them;
// all_reduce_canonical sums the chunk along the binary-counter tree over the ranks instead.
// Every wait has a timeout that names the ranks that did not arrive; a failure of any rank (abort())
// ends every pending and later operation on every rank with its message.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <typeinfo>
#include <vector>

#include "pnn/core/canonical_sum.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/dist/communicator.hpp"

namespace pnn {

namespace local_detail {

// The state every rank of a group shares.
class Group {
 public:
  Group(int size, CommunicatorOptions options) : size_(size), options_(options) {
    PNN_CHECK(size > 0, ArgumentError, "a Local group needs at least one rank, got ", size);
  }
  int size() const { return size_; }
  const CommunicatorOptions& options() const { return options_; }

  // Marks the group failed; every waiting and later operation throws CommunicationError(message).
  void fail(const std::string& message) {
    std::lock_guard lock(mutex_);
    if (!failed_) {
      failed_ = true;
      failure_ = message;
    }
    changed_.notify_all();
  }
  bool failed() const {
    std::lock_guard lock(mutex_);
    return failed_;
  }
  std::string failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }

  // Runs collective number `sequence` for `rank`: waits for every rank to arrive with the same
  // description, calls work(buffers of all ranks), then waits for every rank to finish its work (so no
  // buffer is reused while another rank reads it).
  void collective(int rank, std::uint64_t sequence, const std::string& description, void* buffer,
                  const std::function<void(const std::vector<void*>&)>& work) {
    std::unique_lock lock(mutex_);
    throw_if_failed();
    Rendezvous& slot = slots_[sequence];
    if (slot.buffers.empty()) {
      slot.buffers.assign(static_cast<std::size_t>(size_), nullptr);
      slot.arrived.assign(static_cast<std::size_t>(size_), false);
      slot.description = description;
      slot.first_rank = rank;
    } else if (slot.description != description) {
      fail_locked(detail::concat("collective mismatch at collective #", sequence, ": rank ", rank, " called ",
                                 description, " but rank ", slot.first_rank, " called ", slot.description));
      throw_if_failed();
    }
    slot.buffers[static_cast<std::size_t>(rank)] = buffer;
    slot.arrived[static_cast<std::size_t>(rank)] = true;
    ++slot.arrived_count;
    changed_.notify_all();
    wait_for(
        lock, rank, [&] { return slot.arrived_count == size_; },
        [&] {
          std::ostringstream missing;
          for (int r = 0; r < size_; ++r)
            if (!slot.arrived[static_cast<std::size_t>(r)]) missing << (missing.tellp() > 0 ? ", " : "") << r;
          return detail::concat("rank ", rank, " waited ", options_.timeout.count(), " ms at collective #", sequence,
                                " (", description, "): rank(s) ", missing.str(), " did not arrive");
        });
    const std::vector<void*> buffers = slot.buffers;
    lock.unlock();
    try {
      work(buffers);
    } catch (const std::exception& error) {
      fail(detail::concat("rank ", rank, " failed in ", description, ": ", error.what()));
      throw;
    }
    lock.lock();
    ++slot.finished_count;
    changed_.notify_all();
    wait_for(
        lock, rank, [&] { return slot.finished_count == size_; },
        [&] {
          return detail::concat("rank ", rank, " waited ", options_.timeout.count(),
                                " ms for the other ranks to finish ", description, " (collective #", sequence, ")");
        });
    if (++slot.left_count == size_) slots_.erase(sequence);
  }

  void post(int source, int destination, int tag, std::vector<std::byte> message) {
    std::lock_guard lock(mutex_);
    throw_if_failed();
    messages_[{source, destination, tag}].push_back(std::move(message));
    changed_.notify_all();
  }

  std::vector<std::byte> take(int source, int destination, int tag) {
    std::unique_lock lock(mutex_);
    auto& queue = messages_[{source, destination, tag}];
    wait_for(
        lock, destination, [&] { return !queue.empty(); },
        [&] {
          return detail::concat("rank ", destination, " waited ", options_.timeout.count(),
                                " ms for a message from rank ", source, " with tag ", tag, " that never came");
        });
    std::vector<std::byte> message = std::move(queue.front());
    queue.pop_front();
    return message;
  }

 private:
  // Where the ranks meet for one collective.
  struct Rendezvous {
    std::string description;
    int first_rank = 0;
    std::vector<void*> buffers;
    std::vector<bool> arrived;
    int arrived_count = 0, finished_count = 0, left_count = 0;
  };

  void fail_locked(const std::string& message) {
    if (!failed_) {
      failed_ = true;
      failure_ = message;
    }
    changed_.notify_all();
  }
  void throw_if_failed() const {
    if (failed_) throw CommunicationError(failure_);
  }
  template <class Done, class Describe>
  void wait_for(std::unique_lock<std::mutex>& lock, int, Done done, Describe describe_timeout) {
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    while (!done()) {
      throw_if_failed();
      if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && !done()) {
        throw_if_failed();
        fail_locked(describe_timeout());
        throw_if_failed();
      }
    }
    throw_if_failed();
  }

  const int size_;
  const CommunicatorOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool failed_ = false;
  std::string failure_;
  std::map<std::uint64_t, Rendezvous> slots_;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<std::byte>>> messages_;
};

// Runs one rank's asynchronous operations, in the order they were started, on their own thread.
class AsyncThread {
 public:
  struct Task {
    std::function<void()> run;
    std::mutex mutex;
    std::condition_variable done_changed;
    bool done = false;
    std::exception_ptr error;
  };

  ~AsyncThread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::shared_ptr<Task> submit(std::function<void()> run) {
    auto task = std::make_shared<Task>();
    task->run = std::move(run);
    {
      std::lock_guard lock(mutex_);
      if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
      queue_.push_back(task);
    }
    changed_.notify_all();
    return task;
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<Task> task;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = queue_.front();
        queue_.pop_front();
      }
      try {
        task->run();
      } catch (...) {
        task->error = std::current_exception();
      }
      {
        std::lock_guard lock(task->mutex);
        task->done = true;
      }
      task->done_changed.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<Task>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace local_detail

class Local {
 public:
  using device = cpu;

  // A started asynchronous operation; wait() returns when it is done and rethrows its error.
  class Request {
   public:
    Request() = default;
    explicit Request(std::shared_ptr<local_detail::AsyncThread::Task> task) : task_(std::move(task)) {}
    void wait() {
      if (!task_) return;
      // The task may hold the last reference to itself here: it must outlive the lock on its own mutex,
      // so it leaves the request first and dies after the lock is released (ThreadSanitizer saw the
      // unlock write into freed memory when the reference was dropped under the lock).
      const std::shared_ptr<local_detail::AsyncThread::Task> task = std::move(task_);
      std::exception_ptr error;
      {
        std::unique_lock lock(task->mutex);
        task->done_changed.wait(lock, [&] { return task->done; });
        error = task->error;
      }
      if (error) std::rethrow_exception(error);
    }
    bool ready() const {
      if (!task_) return true;
      std::lock_guard lock(task_->mutex);
      return task_->done;
    }

   private:
    std::shared_ptr<local_detail::AsyncThread::Task> task_;
  };

  // `size` communicators, one per rank, sharing one group.
  static std::vector<Local> group(int size, CommunicatorOptions options = {}) {
    auto shared = std::make_shared<local_detail::Group>(size, options);
    std::vector<Local> ranks;
    for (int r = 0; r < size; ++r) ranks.push_back(Local(shared, r));
    return ranks;
  }

  Local(Local&&) noexcept = default;
  Local& operator=(Local&&) noexcept = default;

  int rank() const { return rank_; }
  int size() const { return group_->size(); }
  const CommunicatorOptions& options() const { return group_->options(); }
  static std::string name() { return "Local, threads of one process"; }

  template <class T>
  void all_reduce(TensorView<T, 1, cpu> data) {
    drain();
    reduce(*group_, rank_, data, next_sequence(), Order::rank_by_rank);
  }

  template <class T>
  Request all_reduce_async(TensorView<T, 1, cpu> data) {
    return reduce_async(data, Order::rank_by_rank);
  }

  template <class T>
  void all_reduce_canonical(TensorView<T, 1, cpu> data) {
    drain();
    reduce(*group_, rank_, data, next_sequence(), Order::binary_counter_tree);
  }

  template <class T>
  Request all_reduce_canonical_async(TensorView<T, 1, cpu> data) {
    return reduce_async(data, Order::binary_counter_tree);
  }

  template <class T>
  void broadcast(TensorView<T, 1, cpu> data, int root) {
    drain();
    check_peer(root, "broadcast");
    const std::uint64_t sequence = next_sequence();
    const index count = data.size();
    group_->collective(rank_, sequence, describe<T>("broadcast", count, root), data.data(),
                       [&](const std::vector<void*>& buffers) {
                         if (rank_ != root)
                           std::memcpy(data.data(), buffers[static_cast<std::size_t>(root)], sizeof(T) * count);
                       });
  }

  void barrier() {
    drain();
    group_->collective(rank_, next_sequence(), "barrier", nullptr, [](const std::vector<void*>&) {});
  }

  template <class T>
  void send(TensorView<const T, 1, cpu> data, int destination, int tag) {
    check_peer(destination, "send");
    std::vector<std::byte> message(sizeof(T) * static_cast<std::size_t>(data.size()));
    if (!message.empty()) std::memcpy(message.data(), data.data(), message.size());
    group_->post(rank_, destination, tag, std::move(message));
  }

  template <class T>
  void receive(TensorView<T, 1, cpu> data, int source, int tag) {
    check_peer(source, "receive");
    const std::vector<std::byte> message = group_->take(source, rank_, tag);
    PNN_CHECK(message.size() == sizeof(T) * static_cast<std::size_t>(data.size()), CommunicationError, "rank ", rank_,
              " expected ", data.size(), " ", type_name<T>(), "s from rank ", source, " (tag ", tag, ") but received ",
              message.size(), " bytes");
    if (!message.empty()) std::memcpy(data.data(), message.data(), message.size());
  }

  // Ends every pending and later operation of every rank with `message` (a rank that failed calls this).
  void abort(const std::string& message) { group_->fail(message); }
  bool aborted() const { return group_->failed(); }
  std::string failure() const { return group_->failure(); }

 private:
  Local(std::shared_ptr<local_detail::Group> group, int rank)
      : group_(std::move(group)), rank_(rank), async_(std::make_unique<local_detail::AsyncThread>()) {}

  std::uint64_t next_sequence() { return sequence_++; }
  void drain() { pending_.wait(); }
  void check_peer(int peer, const char* operation) const {
    PNN_CHECK(peer >= 0 && peer < size(), ArgumentError, operation, ": rank ", peer, " does not exist in a group of ",
              size());
  }
  template <class T>
  static std::string describe(const char* operation, index count, int root = -1) {
    std::string text = detail::concat(operation, "(", count, " ", type_name<T>(), "s");
    if (root >= 0) text += detail::concat(", root ", root);
    return text + ")";
  }

  // How a reduction orders its additions: ((v0 + v1) + v2) + ..., or core/canonical_sum.hpp's tree.
  enum class Order { rank_by_rank, binary_counter_tree };

  template <class T>
  Request reduce_async(TensorView<T, 1, cpu> data, Order order) {
    // One rank has nothing to reduce and nobody to disagree with: no hand-over to the asynchronous thread.
    if (size() == 1) return Request();
    const std::uint64_t sequence = next_sequence();
    // The task holds the group, not this communicator, so moving the communicator cannot dangle it.
    auto task = async_->submit(
        [group = group_, rank = rank_, data, sequence, order] { reduce(*group, rank, data, sequence, order); });
    pending_ = Request(task);
    return Request(std::move(task));
  }

  template <class T>
  static void reduce(local_detail::Group& group, int rank, TensorView<T, 1, cpu> data, std::uint64_t sequence,
                     Order order) {
    const index count = data.size();
    const int ranks = group.size();
    const char* operation = order == Order::rank_by_rank ? "all_reduce" : "all_reduce_canonical";
    group.collective(rank, sequence, describe<T>(operation, count), data.data(),
                     [&](const std::vector<void*>& buffers) {
                       // This rank owns chunk [begin, end) of every buffer: it alone reads and writes it.
                       // It sums in place into rank 0's buffer, in rank order, then copies that chunk to
                       // the others: no temporary (a large one costs page faults every step).
                       const index begin = count * rank / ranks, end = count * (rank + 1) / ranks;
                       if (begin == end) return;
                       T* total = static_cast<T*>(buffers[0]);
                       if (order == Order::binary_counter_tree) {
                         std::vector<const T*> parts;
                         for (void* buffer : buffers) parts.push_back(static_cast<const T*>(buffer) + begin);
                         tree_sum_elementwise(std::span<const T* const>(parts), static_cast<std::size_t>(end - begin),
                                              total + begin);
                       } else {
                         for (int r = 1; r < ranks; ++r) {
                           const T* part = static_cast<const T*>(buffers[static_cast<std::size_t>(r)]);
                           for (index i = begin; i < end; ++i) total[i] += part[i];
                         }
                       }
                       for (int r = 1; r < ranks; ++r)
                         std::memcpy(static_cast<T*>(buffers[static_cast<std::size_t>(r)]) + begin, total + begin,
                                     sizeof(T) * static_cast<std::size_t>(end - begin));
                     });
  }

  std::shared_ptr<local_detail::Group> group_;
  int rank_ = 0;
  std::uint64_t sequence_ = 0;
  std::unique_ptr<local_detail::AsyncThread> async_;
  Request pending_;
};

static_assert(InProcessCommunicator<Local>);
static_assert(Communicator<Local, double>);

}  // namespace pnn
