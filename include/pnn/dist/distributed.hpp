// pnn/dist/distributed.hpp: Distributed<Model, Strategy>, a model trained in parallel.
//
//   using Cnn = pnn::Sequential<...>;
//   pnn::Distributed<Cnn, pnn::DataParallel<pnn::Local>> model(seed, {.workers = 4});
//   pnn::fit(model, optimizer, data.train, &data.test, options);   // as for a serial Cnn
//
// It offers what a serial model offers to the training loop (train_step, predict, save, load), so a
// program changes strategy by changing one type. With the Local communicator it runs one thread per
// rank inside this object; with Mpi every process launched by mpirun holds one rank and runs the same
// program on the same global batches (the same seed gives every rank the same data order).
//
// Failures: an exception on a rank ends the step on every rank. With Local, train_step then throws on
// the caller's thread a RankFailure naming the rank and the operation; with Mpi, the failing rank prints
// that message and aborts the job (mpirun stops the other ranks).
//
// In-process groups: any communicator with a static group(ranks, options) runs its ranks as threads of
// this object, Local and, for GPUs, Nccl (pnn/cuda/nccl.cuh: one GPU per rank). A communicator may offer
// a static enter_rank(rank), which every rank thread calls before its work (Nccl makes the rank's GPU
// current there), so this header needs nothing device-specific. For a model on a device, each rank
// copies the caller's batch to its own device first (pnn::copy orders that copy after the caller's work).
#pragma once

#include <concepts>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "pnn/dist/data_parallel.hpp"
#include "pnn/dist/local.hpp"
#include "pnn/dist/pipeline.hpp"
#include "pnn/dist/strategy.hpp"

namespace pnn {

namespace dist_detail {
template <class Model, class Strategy>
struct worker_for {
  using type = PipelineWorker<Model, Strategy>;
};
template <class Model, class Comm>
struct worker_for<Model, DataParallel<Comm>> {
  using type = DataParallelWorker<Model, Comm>;
};

// A communicator whose ranks are threads of one process: it makes a whole group at once.
template <class C>
inline constexpr bool in_process = requires(int ranks, const CommunicatorOptions& options) {
  { C::group(ranks, options) } -> std::same_as<std::vector<C>>;
};

// One thread per rank, each owning its communicator and worker; run() executes a job on every rank
// and returns when all have finished. Workers are built and destroyed on their own rank's thread.
template <class Worker, class Comm>
class RankThreads {
 public:
  template <class Make>
  RankThreads(int ranks, const CommunicatorOptions& options, Make make)
      : communicators_(Comm::group(ranks, options)), workers_(static_cast<std::size_t>(ranks)) {
    for (int r = 0; r < ranks; ++r) threads_.emplace_back([this, r] { loop(r); });
    // Workers are built on their own threads: their constructors talk to each other.
    try {
      run_on_ranks("construction", [&](int r) {
        workers_[static_cast<std::size_t>(r)].emplace(make(communicators_[static_cast<std::size_t>(r)]));
      });
    } catch (...) {
      stop();  // no destructor runs for a constructor that throws
      throw;
    }
  }
  ~RankThreads() { stop(); }

  int ranks() const { return static_cast<int>(threads_.size()); }
  Worker& worker(int r) { return *workers_[static_cast<std::size_t>(r)]; }

  // Runs job(worker, rank) on every rank; rethrows the first failure as RankFailure naming the rank.
  template <class Job>
  void run(const char* operation, Job&& job) {
    run_on_ranks(operation, [&](int r) { job(worker(r), r); });
  }

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
    done_.wait(lock, [&] { return finished_ == ranks(); });
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
        enter(rank);
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
    // The worker goes with its thread: its device memory is freed with the rank's device current.
    try {
      enter(rank);
      workers_[static_cast<std::size_t>(rank)].reset();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "pnn: rank %d failed to release its worker: %s\n", rank, error.what());
    }
  }
  static void enter(int rank) {
    if constexpr (requires { Comm::enter_rank(rank); }) Comm::enter_rank(rank);
  }
  void record(int rank, const std::string& message) {
    std::lock_guard lock(mutex_);
    errors_[static_cast<std::size_t>(rank)] = message;
  }

  std::vector<Comm> communicators_;
  std::vector<std::optional<Worker>> workers_;
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
}  // namespace dist_detail

template <class Model, class Strategy>
class Distributed {
  using Comm = typename Strategy::communicator;
  using Worker = typename dist_detail::worker_for<Model, Strategy>::type;
  static constexpr bool threads = dist_detail::in_process<Comm>;

 public:
  using model_type = Model;
  using strategy_type = Strategy;
  using value_type = typename Model::value_type;
  using device = typename Model::device;
  using input_shape = typename Model::input_shape;
  using output_shape = typename Model::output_shape;
  using T = value_type;
  using D = device;

  explicit Distributed(std::uint64_t seed = 0, DistributedOptions options = {}) : seed_(seed), options_(options) {
    if constexpr (threads) {
      PNN_CHECK(options.workers >= 1, ArgumentError, "Distributed: workers must be at least 1, got ", options.workers);
      ranks_.emplace(options.workers, options.communicator,
                     [&](Comm& comm) { return Worker(comm, seed, options_); });
    } else {
      communicator_.emplace(options.communicator);
      guard("construction", [&] { worker_.emplace(*communicator_, seed, options_); });
    }
  }

  // One optimiser step on the global batch (every MPI rank passes the same batch).
  template <class LossFunction, class Rule>
  T train_step(TensorView<const T, 2, D> inputs, typename LossFunction::template target_type<T, D> targets,
               Optimizer<Rule, T, D>& optimizer, const LossFunction& loss = {}) {
    T result{};
    const auto local_inputs = for_each_rank(inputs);
    const auto local_targets = for_each_rank(targets);
    each("train_step", [&](Worker& worker, int local, bool reporting) {
      const T value = worker.train_step(local_inputs[local]->view(), local_targets[local]->view(), optimizer.rule,
                                        loss);
      if (reporting) result = value;
    });
    return result;
  }

  // Outputs for the inputs, without dropout or batch statistics.
  TensorView<const T, 2, D> predict(TensorView<const T, 2, D> inputs) {
    TensorView<const T, 2, D> result;
    const auto local_inputs = for_each_rank(inputs);
    each("predict", [&](Worker& worker, int local, bool reporting) {
      const auto output = worker.predict(local_inputs[local]->view());
      if (reporting) result.rebind(output);
    });
    return result;
  }

  // The whole model with the current weights (collective: every MPI rank must call it).
  Model gathered() {
    Model whole(seed_);
    each("gather", [&](Worker& worker, int, bool reporting) {
      if (reporting) {
        worker.gather(whole);
      } else {
        Model scratch(seed_);
        worker.gather(scratch);
      }
    });
    return whole;
  }

  // Writes the weights in the serial model's format; only rank 0 writes.
  void save(const std::filesystem::path& path) {
    Model whole = gathered();
    if (is_primary()) whole.save(path);
  }
  // Reads weights saved by a serial or a distributed model.
  void load(const std::filesystem::path& path) {
    Model whole(seed_);
    whole.load(path);
    each("load", [&](Worker& worker, int, bool) { worker.scatter(whole); });
  }

  // True on the rank that prints and writes files (rank 0 with Mpi; always with Local).
  bool is_primary() const {
    if constexpr (threads) return true;
    else return communicator_->rank() == 0;
  }
  int ranks() const {
    if constexpr (threads) return ranks_->ranks();
    else return communicator_->size();
  }
  int rank() const {
    if constexpr (threads) return 0;
    else return communicator_->rank();
  }
  static std::string summary() { return Model::summary(); }
  index parameter_count() const { return Model(seed_).parameter_count(); }

  // Per-rank statistics (with Mpi, this rank's only).
  std::vector<StrategyStatistics> statistics() {
    std::vector<StrategyStatistics> result;
    if constexpr (threads)
      for (int r = 0; r < ranks_->ranks(); ++r) result.push_back(ranks_->worker(r).statistics());
    else
      result.push_back(worker_->statistics());
    return result;
  }
  Worker& worker(int rank = 0) {
    if constexpr (threads) return ranks_->worker(rank);
    else return *worker_;
  }

 private:
  // Runs job(worker, local, reporting) on every rank of this process; `local` numbers the ranks of this
  // process from 0. `reporting` marks the rank whose results this process returns: rank 0 of an
  // in-process group, or this process's own rank with Mpi.
  template <class Job>
  void each(const char* operation, Job&& job) {
    if constexpr (threads) {
      ranks_->run(operation, [&](Worker& worker, int rank) { job(worker, rank, rank == 0); });
    } else {
      guard(operation, [&] { job(*worker_, 0, true); });
    }
  }

  // on_this_rank(data) for every rank of this process, indexed by `local`. The copies to the ranks'
  // devices are made in a pass of their own, before any rank enqueues the operation's work: a copy
  // between devices orders the source's stream (the caller's device, which is rank 0's) after it, and
  // once rank 0 has enqueued a wait on communication with a rank, that rank's copy would wait on itself.
  template <class V>
  auto for_each_rank(const V& data) {
    std::vector<std::optional<decltype(on_this_rank(data))>> copies(threads ? static_cast<std::size_t>(ranks()) : 1);
    if constexpr (threads && !std::is_same_v<D, cpu>)
      ranks_->run("copying the batch to each rank's device",
                  [&](Worker&, int rank) { copies[static_cast<std::size_t>(rank)].emplace(on_this_rank(data)); });
    else
      for (auto& copy : copies) copy.emplace(on_this_rank(data));
    return copies;
  }

  // The caller's data as a rank thread may use it: on the cpu (and with one process per rank) the data
  // itself; for a device model run by threads, a copy on the rank's own device, where its kernels can
  // read it. The returned holder's view() is the data.
  template <class V>
  static auto on_this_rank(const V& data) {
    using Element = std::remove_const_t<typename V::element_type>;
    struct Same {
      V data;
      V view() const { return data; }
    };
    struct Copied {
      Tensor<Element, V::rank, D> data;
      V view() const { return data.view(); }
    };
    if constexpr (std::is_same_v<D, cpu> || !threads) {
      return Same{data};
    } else {
      Copied local{Tensor<Element, V::rank, D>(data.shape())};
      copy(data, local.data.view());
      return local;
    }
  }

  // Mpi: a failure on this rank stops every rank, with a message naming this rank and the operation.
  template <class Body>
  void guard(const char* operation, Body&& body) {
    try {
      body();
    } catch (const std::exception& error) {
      communicator_->abort(detail::concat("rank ", communicator_->rank(), " failed in ", operation, ": ", error.what()));
    }
  }

  std::uint64_t seed_;
  DistributedOptions options_;
  std::optional<dist_detail::RankThreads<Worker, Comm>> ranks_;
  std::optional<Comm> communicator_;
  std::optional<Worker> worker_;
};

}  // namespace pnn
