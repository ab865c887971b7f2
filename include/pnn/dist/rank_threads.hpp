// pnn/dist/rank_threads.hpp: the two ways Distributed runs its ranks, behind one interface.
//
//   RankThreads<Rank, Comm>   an in-process group (Local, Nccl): one thread per rank, each owning its
//                             communicator and its strategy rank; run() executes a job on every rank
//                             and returns when all have finished
//   ProcessRank<Rank, Comm>   one rank per process (Mpi, NcclMpi): this process's rank, run in place
//
// Both offer size() (ranks in the group), local_ranks() (ranks run by this process), first_rank()
// (the group rank of this process's local rank 0), rank(local), run(operation, job(rank, local)) and
// sum_over_processes(values) (the processes' values added in the canonical tree; nothing to add for one), so
// Distributed holds one runner, rank_runner_t<Rank, Comm>, and does not ask which it is. A failure on a rank ends the
// operation on every rank: RankThreads rethrows it on the caller's thread as a RankFailure naming the rank and the
// operation; ProcessRank makes the failing rank abort the job with that message (mpirun stops the rest).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pnn/dist/communicator.hpp"

namespace pnn {

template <class Rank, InProcessCommunicator Comm>
class RankThreads {
 public:
  // Copies a rank thread's data to its own device: the ranks of an in-process group may each have one.
  static constexpr bool ranks_have_own_devices = true;

  // make(communicator) builds a rank; ranks are built and destroyed on their own thread, since their
  // constructors talk to each other (and a device rank's memory belongs to its device).
  template <class Make>
  RankThreads(int ranks, const CommunicatorOptions& options, Make make) {
    PNN_CHECK(ranks >= 1, ArgumentError, "Distributed: ranks must be at least 1, got ", ranks);
    communicators_ = Comm::group(ranks, options);
    ranks_.resize(static_cast<std::size_t>(ranks));
    for (int r = 0; r < ranks; ++r) threads_.emplace_back([this, r] { loop(r); });
    try {
      run_on_ranks("construction", [&](int r) {
        ranks_[static_cast<std::size_t>(r)].emplace(make(communicators_[static_cast<std::size_t>(r)]));
      });
    } catch (...) {
      stop();  // no destructor runs for a constructor that throws
      throw;
    }
  }
  ~RankThreads() { stop(); }

  int size() const { return static_cast<int>(threads_.size()); }
  int local_ranks() const { return size(); }
  int first_rank() const { return 0; }
  Rank& rank(int local) { return *ranks_[static_cast<std::size_t>(local)]; }

  // Runs job(rank, local) on every rank; rethrows the first failure as RankFailure naming the rank.
  template <class Job>
  void run(const char* operation, Job&& job) {
    run_on_ranks(operation, [&](int r) { job(rank(r), r); });
  }

  // The whole group is this process: its values are the total already.
  void sum_over_processes(const char*, TensorView<double, 1>) {}

 private:
  void run_on_ranks(const char* operation, const std::function<void(int)>& job) {
    PNN_CHECK(failure_.empty(), RankFailure, "this Distributed model cannot be used after a failure: ", failure_);
    {
      std::lock_guard lock(mutex_);
      job_ = &job;
      operation_ = operation;
      ++generation_;
      finished_ = 0;
      errors_.assign(threads_.size(), std::string());
    }
    changed_.notify_all();
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return finished_ == size(); });
    job_ = nullptr;
    // The group's failure message names the rank that failed first; later errors are its consequences.
    if (communicators_[0].aborted()) failure_ = communicators_[0].failure();
    else
      for (const auto& e : errors_)
        if (!e.empty() && failure_.empty()) failure_ = e;
    PNN_CHECK(failure_.empty(), RankFailure, failure_);
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

  void loop(int rank) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      std::string operation;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) break;
        seen = generation_;
        job = job_;
        operation = operation_;
      }
      try {
        enter_rank<Comm>(rank);
        (*job)(rank);
      } catch (const CommunicationError& error) {
        record(rank, error.what());  // another rank failed first, or a collective timed out
      } catch (const std::exception& error) {
        const std::string message = detail::concat("rank ", rank, " failed in ", operation, ": ", error.what());
        communicators_[static_cast<std::size_t>(rank)].abort(message);
        record(rank, message);
      }
      {
        std::lock_guard lock(mutex_);
        ++finished_;
      }
      done_.notify_all();
    }
    // The rank goes with its thread: its device memory is freed with the rank's device current.
    try {
      enter_rank<Comm>(rank);
      ranks_[static_cast<std::size_t>(rank)].reset();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "pnn: rank %d failed to release its strategy rank: %s\n", rank, error.what());
    }
  }
  void record(int rank, const std::string& message) {
    std::lock_guard lock(mutex_);
    errors_[static_cast<std::size_t>(rank)] = message;
  }

  std::vector<Comm> communicators_;
  std::vector<std::optional<Rank>> ranks_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable changed_, done_;
  const std::function<void(int)>* job_ = nullptr;
  std::string operation_;
  std::uint64_t generation_ = 0;
  int finished_ = 0;
  bool stopping_ = false;
  std::vector<std::string> errors_;
  std::string failure_;
};

template <class Rank, Communicator Comm>
class ProcessRank {
 public:
  // The caller's data is already on this process's device.
  static constexpr bool ranks_have_own_devices = false;

  // `ranks` is the launcher's (mpirun -np) to choose; the communicator knows it.
  template <class Make>
  ProcessRank(int, const CommunicatorOptions& options, Make make) : communicator_(options) {
    guard("construction", [&] { rank_.emplace(make(communicator_)); });
  }

  int size() const { return communicator_.size(); }
  int local_ranks() const { return 1; }
  int first_rank() const { return communicator_.rank(); }
  Rank& rank(int) { return *rank_; }

  // Runs job(rank, 0); a failure stops every rank, with a message naming this rank and the operation.
  template <class Job>
  void run(const char* operation, Job&& job) {
    guard(operation, [&] { job(*rank_, 0); });
  }

  // Every process's `values` added up in the canonical tree over the ranks (collective).
  void sum_over_processes(const char* operation, TensorView<double, 1> values) {
    guard(operation, [&] { communicator_.all_reduce_canonical(values); });
  }

 private:
  template <class Body>
  void guard(const char* operation, Body&& body) {
    try {
      body();
    } catch (const std::exception& error) {
      const std::string message =
          detail::concat("rank ", communicator_.rank(), " failed in ", operation, ": ", error.what());
      communicator_.abort(message);  // Mpi's ends the job; one that returns leaves the failure to the caller
      throw RankFailure(message);
    }
  }

  Comm communicator_;
  std::optional<Rank> rank_;
};

// The runner for a communicator: threads for an in-process group, else this process's rank.
template <class Rank, class Comm>
struct rank_runner {
  using type = ProcessRank<Rank, Comm>;
};
template <class Rank, InProcessCommunicator Comm>
struct rank_runner<Rank, Comm> {
  using type = RankThreads<Rank, Comm>;
};
template <class Rank, class Comm>
using rank_runner_t = typename rank_runner<Rank, Comm>::type;

}  // namespace pnn
