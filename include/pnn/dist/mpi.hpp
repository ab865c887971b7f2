// pnn/dist/mpi.hpp: Mpi, the communicator between processes launched by mpirun (OpenMPI).
//
//   mpirun -np 4 ./train_cnn_data_parallel_mpi        (as root: --allow-run-as-root; more ranks than
//                                                       cores: --oversubscribe)
//
// Only this header includes <mpi.h>; include it only where MPI was found (pnn's build defines
// PNN_HAVE_MPI). Every operation is started non-blocking and then waited for with a deadline, so a rank
// that never arrives ends the wait with an error naming the operation instead of a silent hang; a rank
// that fails calls abort(), which prints its message and makes mpirun stop every rank.
#pragma once

// pnn uses MPI's C interface; skipping the deprecated C++ bindings saves compile time and warnings.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pnn/core/tensor.hpp"
#include "pnn/dist/communicator.hpp"

namespace pnn {

namespace mpi_detail {

template <class T>
MPI_Datatype datatype() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return MPI_UINT64_T;
  else static_assert(always_false<T>, "Mpi: no MPI datatype for this element type");
}

inline std::string error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<std::size_t>(length));
}

// Initialises MPI on first use and finalises it at exit.
class Environment {
 public:
  static void ensure() {
    static Environment environment;
    (void)environment;
  }
  ~Environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && initialised_here_) MPI_Finalize();
  }

 private:
  Environment() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      initialised_here_ = true;
    }
  }
  bool initialised_here_ = false;
};

}  // namespace mpi_detail

class Mpi {
 public:
  using device = cpu;

  // A started operation; wait() completes it, or throws CommunicationError at the deadline.
  class Request {
   public:
    Request() = default;
    Request(MPI_Request request, std::string description, int rank, std::chrono::milliseconds timeout)
        : request_(request), description_(std::move(description)), rank_(rank), timeout_(timeout) {}
    void wait() {
      if (request_ == MPI_REQUEST_NULL) return;
      const auto deadline = std::chrono::steady_clock::now() + timeout_;
      for (int spins = 0;; ++spins) {
        int done = 0;
        const int code = MPI_Test(&request_, &done, &status_);
        PNN_CHECK(code == MPI_SUCCESS, CommunicationError, "rank ", rank_, ": ", description_,
                  " failed: ", mpi_detail::error_text(code));
        if (done) return;
        if (std::chrono::steady_clock::now() > deadline) {
          MPI_Cancel(&request_);
          throw CommunicationError(detail::concat("rank ", rank_, ": ", description_, " did not complete within ",
                                                  timeout_.count(), " ms: a rank did not arrive or has died"));
        }
        if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    bool ready() {
      if (request_ == MPI_REQUEST_NULL) return true;
      int done = 0;
      MPI_Test(&request_, &done, &status_);
      return done != 0;
    }
    const MPI_Status& status() const { return status_; }

   private:
    MPI_Request request_ = MPI_REQUEST_NULL;
    MPI_Status status_{};
    std::string description_;
    int rank_ = 0;
    std::chrono::milliseconds timeout_{0};
  };

  explicit Mpi(CommunicatorOptions options = {}) : options_(options) {
    mpi_detail::Environment::ensure();
    MPI_Comm_dup(MPI_COMM_WORLD, &communicator_);
    MPI_Comm_set_errhandler(communicator_, MPI_ERRORS_RETURN);  // errors become exceptions, not aborts
    MPI_Comm_rank(communicator_, &rank_);
    MPI_Comm_size(communicator_, &size_);
  }
  Mpi(const Mpi&) = delete;
  Mpi& operator=(const Mpi&) = delete;
  ~Mpi() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    try {
      flush_sends();
    } catch (...) {}
    MPI_Comm_free(&communicator_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  const CommunicatorOptions& options() const { return options_; }
  static std::string name() { return "Mpi, processes under mpirun"; }

  template <class T>
  void all_reduce(TensorView<T, 1, cpu> data) {
    all_reduce_async(data).wait();
  }

  template <class T>
  Request all_reduce_async(TensorView<T, 1, cpu> data) {
    const std::string description = describe<T>("all_reduce", data.size());
    check_order(description);
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, data.data(), count(data.size()), mpi_detail::datatype<T>(), MPI_SUM,
                         communicator_, &request),
          description);
    return Request(request, description, rank_, options_.timeout);
  }

  template <class T>
  void broadcast(TensorView<T, 1, cpu> data, int root) {
    check_peer(root, "broadcast");
    const std::string description = describe<T>("broadcast", data.size(), root);
    check_order(description);
    MPI_Request request;
    check(MPI_Ibcast(data.data(), count(data.size()), mpi_detail::datatype<T>(), root, communicator_, &request),
          description);
    Request(request, description, rank_, options_.timeout).wait();
  }

  void barrier() {
    check_order("barrier");
    MPI_Request request;
    check(MPI_Ibarrier(communicator_, &request), "barrier");
    Request(request, "barrier", rank_, options_.timeout).wait();
  }

  // Buffered: the data is copied, so the caller may reuse its view at once.
  template <class T>
  void send(TensorView<const T, 1, cpu> data, int destination, int tag) {
    check_peer(destination, "send");
    auto buffer = std::make_unique<std::vector<T>>(data.data(), data.data() + data.size());
    MPI_Request request;
    const std::string description =
        detail::concat("send of ", data.size(), " ", type_name<T>(), "s to rank ", destination, " (tag ", tag, ")");
    check(MPI_Isend(buffer->data(), count(data.size()), mpi_detail::datatype<T>(), destination, tag, communicator_,
                    &request),
          description);
    sends_.push_back({Request(request, description, rank_, options_.timeout), std::move(buffer)});
    // Complete finished sends so the list stays short.
    while (!sends_.empty() && sends_.front().request.ready()) sends_.pop_front();
  }

  template <class T>
  void receive(TensorView<T, 1, cpu> data, int source, int tag) {
    check_peer(source, "receive");
    const std::string description =
        detail::concat("receive of ", data.size(), " ", type_name<T>(), "s from rank ", source, " (tag ", tag, ")");
    // Probe first so a message of the wrong size is reported, not truncated.
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    MPI_Status status;
    for (int spins = 0;; ++spins) {
      int found = 0;
      check(MPI_Iprobe(source, tag, communicator_, &found, &status), description);
      if (found) break;
      PNN_CHECK(std::chrono::steady_clock::now() < deadline, CommunicationError, "rank ", rank_, ": ", description,
                " timed out after ", options_.timeout.count(), " ms: rank ", source, " never sent it");
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    int elements = 0;
    MPI_Get_count(&status, mpi_detail::datatype<T>(), &elements);
    PNN_CHECK(elements == data.size(), CommunicationError, "rank ", rank_, " expected ", data.size(), " ",
              type_name<T>(), "s from rank ", source, " (tag ", tag, ") but the message holds ", elements);
    MPI_Request request;
    check(MPI_Irecv(data.data(), count(data.size()), mpi_detail::datatype<T>(), source, tag, communicator_, &request),
          description);
    Request(request, description, rank_, options_.timeout).wait();
  }

  // Waits until every buffered send has been delivered.
  void flush_sends() {
    while (!sends_.empty()) {
      sends_.front().request.wait();
      sends_.pop_front();
    }
  }

  // Prints the message and ends every rank (mpirun then stops the job).
  [[noreturn]] void abort(const std::string& message) {
    std::fprintf(stderr, "pnn: %s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();
  }
  // A failed rank ends the job: no rank of a running job has seen a failure.
  bool aborted() const { return false; }
  std::string failure() const { return {}; }

 private:
  struct PendingSend {
    Request request;
    std::unique_ptr<void, void (*)(void*)> keep_alive;
    template <class T>
    PendingSend(Request r, std::unique_ptr<std::vector<T>> buffer)
        : request(std::move(r)),
          keep_alive(buffer.release(), [](void* p) { delete static_cast<std::vector<T>*>(p); }) {}
  };

  static int count(index n) {
    PNN_CHECK(n <= std::numeric_limits<int>::max(), ArgumentError, "Mpi: ", n, " elements exceed MPI's int count");
    return static_cast<int>(n);
  }
  void check(int code, const std::string& what) const {
    PNN_CHECK(code == MPI_SUCCESS, CommunicationError, "rank ", rank_, ": ", what,
              " failed: ", mpi_detail::error_text(code));
  }
  void check_peer(int peer, const char* operation) const {
    PNN_CHECK(peer >= 0 && peer < size_, ArgumentError, operation, ": rank ", peer, " does not exist among ", size_,
              " ranks");
  }
  template <class T>
  static std::string describe(const char* operation, index elements, int root = -1) {
    std::string text = detail::concat(operation, "(", elements, " ", type_name<T>(), "s");
    if (root >= 0) text += detail::concat(", root ", root);
    return text + ")";
  }

  // With check_collective_order: every rank shares its next collective's description; the first
  // difference is reported on every rank.
  void check_order(const std::string& description) {
    const std::uint64_t sequence = sequence_++;
    if (!options_.check_collective_order) return;
    constexpr int width = 96;
    std::vector<char> mine(width, '\0'), all(static_cast<std::size_t>(width * size_), '\0');
    std::strncpy(mine.data(), description.c_str(), width - 1);
    MPI_Request request;
    check(MPI_Iallgather(mine.data(), width, MPI_CHAR, all.data(), width, MPI_CHAR, communicator_, &request),
          "collective order check");
    Request(request, "collective order check", rank_, options_.timeout).wait();
    const std::string first(all.data());
    for (int r = 1; r < size_; ++r) {
      const std::string other(all.data() + static_cast<std::ptrdiff_t>(r) * width);
      PNN_CHECK(other == first, CommunicationError, "collective mismatch at collective #", sequence, ": rank ", r,
                " called ", other, " but rank 0 called ", first);
    }
  }

  CommunicatorOptions options_;
  MPI_Comm communicator_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::uint64_t sequence_ = 0;
  std::deque<PendingSend> sends_;
};

static_assert(Communicator<Mpi>);

}  // namespace pnn
