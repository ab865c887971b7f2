// pnn/dist/mpi.hpp: Mpi, the communicator between processes launched by mpirun (OpenMPI).
//
//   mpirun -np 4 ./train_cnn_data_parallel_mpi        (as root: --allow-run-as-root; more ranks than
//                                                       cores: --oversubscribe)
//
// Only this header includes <mpi.h>; include it only where MPI was found (pnn's build defines
// PNN_HAVE_MPI). Every operation is started non-blocking and then polled against a deadline (the
// options' timeout), the construction's communicator duplicates included. MPI cannot cancel a collective, so a wait
// that passes its deadline does not try to: it asks every other rank what it is doing (StatusService below: each rank
// answers while it waits in an operation), then throws a CommunicationError naming the ranks that did not answer
// (stopped, stuck outside pnn, or unreachable) and the others' operations, and the communicator refuses every later
// operation. A rank that fails (any exception, that one included) calls abort(), which prints its message
// and ends the job through MPI_Abort; Distributed does that for every failure of a rank
// (dist/rank_threads.hpp). A killed process is OpenMPI's to report: mpirun names it and ends the job.
//
// all_reduce_canonical is point to point, on a communicator of its own with a tag per operation, so its
// messages never meet a pipeline's. For 2^k ranks it is a recursive-halving reduce-scatter (partners
// rank ^ 1, rank ^ 2, ...: the lower rank's half is the left operand, so level j adds subtrees of 2^j
// ranks, exactly the balanced tree) and the mirrored recursive-doubling all-gather; for other counts each
// rank gathers its segment from every rank, sums it along the tree and sends it to every rank. Its
// Request advances the steps whenever ready() or wait() is called.
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
#include <algorithm>
#include <cstdint>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "pnn/core/canonical_sum.hpp"
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

// What a rank is waiting in, as its answer to a status query describes it.
struct Activity {
  std::string description;         // the operation as errors name it: "all_reduce(1234 floats)"
  std::uint64_t communicator = 0;  // which Mpi: every rank makes its communicators in the same order
  std::int64_t collective = -1;    // its number among that communicator's collectives; -1: point to point
};

// ", paused there for 13.1 s (stopped, or not scheduled)": a wait that went unpolled that long.
inline std::string paused(std::chrono::milliseconds pause) {
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.1f", static_cast<double>(pause.count()) / 1000);
  return detail::concat(", paused there for ", seconds, " s (stopped, or not scheduled)");
}

// Prints the message and ends every rank (mpirun then stops the job).
[[noreturn]] inline void end_job(const std::string& message) {
  std::fprintf(stderr, "pnn: %s\n", message.c_str());
  std::fflush(stderr);
  // MPI_Abort asks mpirun to end the job and waits for it; where mpirun cannot be reached (a cut link,
  // a stopped launcher) that wait has no end, so this process ends itself a little later.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::_Exit(1);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

// A duplicate of MPI_COMM_WORLD, made with a deadline: duplicating is collective, and a rank that never
// gets there (it failed, or is stuck before it makes its model) would hold the others in MPI_Comm_dup
// forever. Nobody can be asked what it is doing yet (the status service is such a duplicate), so the
// message says what is known, and the job ends.
inline MPI_Comm duplicate_world(std::chrono::milliseconds timeout) {
  MPI_Comm copy = MPI_COMM_NULL;
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_Comm_idup(MPI_COMM_WORLD, &copy, &request);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return copy;
    if (std::chrono::steady_clock::now() > deadline) {
      int rank = 0, size = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      end_job(detail::concat("rank ", rank, ": setting up a communicator over the job's ", size,
                             " ranks did not complete within ", timeout.count(),
                             " ms: a rank did not get there (it failed, or is stuck before making its model)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Status queries between ranks: when a wait passes its deadline, survey() asks every other rank what it
// is doing, so the error can name the ranks that did not arrive and say what the others were doing. A
// rank answers while it waits in any operation of any Mpi (each Waiting::poll()); one that does not
// answer within the grace period is stopped, busy outside pnn's waits, or unreachable. One per process,
// on a duplicate of MPI_COMM_WORLD of its own, so its messages never meet the operations'; its first use
// (Mpi's constructor, a collective) duplicates the communicator on every rank at once. Answers carry the
// query's number: a late answer to an earlier survey is recognised and dropped.
class StatusService {
 public:
  // The first call (Mpi's constructor) makes it, waiting at most `setup_timeout` for the other ranks.
  static StatusService& instance(std::chrono::milliseconds setup_timeout = CommunicatorOptions{}.timeout) {
    static StatusService service(setup_timeout);
    return service;
  }
  StatusService(const StatusService&) = delete;
  StatusService& operator=(const StatusService&) = delete;
  ~StatusService() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // A message to a rank that stopped reading can stay undelivered: MPI may still read its buffer after
    // the request is freed, so the buffers of those are left allocated (a list's move keeps its nodes).
    bool pending = false;
    for (Outgoing& message : outgoing_) {
      if (message.request == MPI_REQUEST_NULL) continue;
      MPI_Request_free(&message.request);
      pending = true;
    }
    if (pending) new std::list<Outgoing>(std::move(outgoing_));
    MPI_Comm_free(&communicator_);
  }

  std::uint64_t next_communicator() { return communicators_++; }

  // A wait in `activity`: each poll() answers the queries that arrived. It also keeps the longest time
  // between two polls: a process stopped by a signal (or not scheduled) while waiting learns so when it
  // runs again, and says it, since mpirun's SIGCONT before ending the job lets a stopped rank answer late.
  class Waiting {
   public:
    Waiting(StatusService& service, const Activity& activity) : service_(service), activity_(activity) {}
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;

    // Called at every poll of the wait: answers every query that has arrived.
    void poll() {
      const auto now = std::chrono::steady_clock::now();
      longest_pause_ =
          std::max(longest_pause_, std::chrono::duration_cast<std::chrono::milliseconds>(now - last_poll_));
      last_poll_ = now;
      service_.answer(*this);
    }
    const Activity& activity() const { return activity_; }
    std::chrono::milliseconds longest_pause() const { return longest_pause_; }

    // Asks every other rank what it is doing (see StatusService::survey).
    std::string survey(std::chrono::milliseconds grace) { return service_.survey(*this, grace); }

   private:
    StatusService& service_;
    const Activity& activity_;
    std::chrono::steady_clock::time_point last_poll_ = std::chrono::steady_clock::now();
    std::chrono::milliseconds longest_pause_{0};
  };

 private:
  // Answers every query that has arrived with what `waiting` waits in, and forgets the answers MPI has
  // delivered.
  void answer(const Waiting& waiting) {
    for (;;) {
      int found = 0;
      MPI_Message handle;
      MPI_Status status;
      if (MPI_Improbe(MPI_ANY_SOURCE, query_tag, communicator_, &found, &handle, &status) != MPI_SUCCESS || !found)
        break;
      Message query{};
      MPI_Mrecv(&query, sizeof(Message), MPI_BYTE, &handle, MPI_STATUS_IGNORE);
      Message& reply = post();
      reply.query = query.query;
      reply.paused_ms = waiting.longest_pause().count();
      reply.communicator = waiting.activity().communicator;
      reply.collective = waiting.activity().collective;
      std::strncpy(reply.description, waiting.activity().description.c_str(), sizeof(reply.description) - 1);
      send(reply, status.MPI_SOURCE, answer_tag);
    }
    outgoing_.remove_if([](Outgoing& message) {
      int done = 0;
      MPI_Test(&message.request, &done, MPI_STATUS_IGNORE);
      return done != 0;
    });
  }

  // Asks every other rank what it is doing and waits up to `grace` for the answers (answering queries
  // meanwhile). Returns "; rank 2 did not answer (...); ranks 1, 3 were waiting in all_reduce(...) #57",
  // empty with one rank.
  std::string survey(Waiting& waiting, std::chrono::milliseconds grace) {
    const std::int32_t query = ++queries_;
    for (int rank = 0; rank < size_; ++rank) {
      if (rank == rank_) continue;
      Message& message = post();
      message.query = query;
      send(message, rank, query_tag);
    }
    std::vector<std::optional<Message>> answers(static_cast<std::size_t>(size_));
    int missing = size_ - 1;
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (missing > 0 && std::chrono::steady_clock::now() < deadline) {
      waiting.poll();
      int found = 0;
      MPI_Message handle;
      MPI_Status status;
      if (MPI_Improbe(MPI_ANY_SOURCE, answer_tag, communicator_, &found, &handle, &status) == MPI_SUCCESS && found) {
        Message reply{};
        MPI_Mrecv(&reply, sizeof(Message), MPI_BYTE, &handle, MPI_STATUS_IGNORE);
        auto& slot = answers[static_cast<std::size_t>(status.MPI_SOURCE)];
        if (reply.query == query && !slot) {
          slot = reply;
          --missing;
        }
        continue;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    // Ranks grouped by what they said, in rank order.
    std::vector<int> silent;
    std::map<std::string, std::vector<int>> doing;
    for (int rank = 0; rank < size_; ++rank) {
      if (rank == rank_) continue;
      const auto& reply = answers[static_cast<std::size_t>(rank)];
      if (!reply) silent.push_back(rank);
      else doing[describe(*reply, waiting.activity(), grace)].push_back(rank);
    }
    std::string text;
    if (!silent.empty())
      text += detail::concat("; ", ranks(silent), " did not answer within ", grace.count(),
                             " ms (stopped, stuck outside pnn, or unreachable)");
    for (const auto& [what, who] : doing)
      text += detail::concat("; ", ranks(who), who.size() == 1 ? " was " : " were ", what);
    return text;
  }

  // A query, and its answer: what the answering rank waits in.
  struct Message {
    std::int32_t query = 0;      // the asking rank's number for its survey
    std::int64_t paused_ms = 0;  // the longest time between two polls of its wait
    std::uint64_t communicator = 0;
    std::int64_t collective = -1;
    char description[200] = {};
  };
  struct Outgoing {
    Message message;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  static constexpr int query_tag = 1, answer_tag = 2;

  explicit StatusService(std::chrono::milliseconds setup_timeout) {
    communicator_ = duplicate_world(setup_timeout);
    MPI_Comm_set_errhandler(communicator_, MPI_ERRORS_RETURN);  // a dead peer must not end the survey
    MPI_Comm_rank(communicator_, &rank_);
    MPI_Comm_size(communicator_, &size_);
  }

  // A message buffer that stays put until MPI has sent it (a list never moves its elements).
  Message& post() { return outgoing_.emplace_back().message; }
  void send(Message& message, int destination, int tag) {
    Outgoing& outgoing = outgoing_.back();
    MPI_Isend(&message, sizeof(Message), MPI_BYTE, destination, tag, communicator_, &outgoing.request);
  }

  static std::string describe(const Message& reply, const Activity& mine, std::chrono::milliseconds grace) {
    const char* end = std::find(std::begin(reply.description), std::end(reply.description), '\0');
    std::string text = detail::concat("waiting in ", std::string(reply.description, end));
    if (reply.collective >= 0) text += detail::concat(" #", reply.collective);
    if (reply.paused_ms >= grace.count()) text += paused(std::chrono::milliseconds(reply.paused_ms));
    if (reply.communicator != mine.communicator)
      text += detail::concat(" of another communicator (", reply.communicator, ")");
    return text;
  }
  static std::string ranks(const std::vector<int>& list) {
    std::string text = list.size() == 1 ? "rank " : "ranks ";
    for (std::size_t i = 0; i < list.size(); ++i) text += detail::concat(i ? ", " : "", list[i]);
    return text;
  }

  MPI_Comm communicator_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::int32_t queries_ = 0;
  std::uint64_t communicators_ = 0;
  std::list<Outgoing> outgoing_;
};

// Polls `done` (answering status queries meanwhile) until it returns true. At the deadline, surveys the
// other ranks for a grace period of min(2 s, timeout / 4) and throws a CommunicationError naming the
// ranks that did not answer and what the others were waiting in.
template <class Done>
void wait_until(Done&& done, const Activity& activity, int rank, std::chrono::milliseconds timeout) {
  StatusService::Waiting waiting(StatusService::instance(), activity);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int spins = 0;; ++spins) {
    if (done()) return;
    waiting.poll();
    if (std::chrono::steady_clock::now() > deadline) {
      const auto grace = std::min<std::chrono::milliseconds>(std::chrono::seconds(2), timeout / 4);
      std::string place = activity.collective >= 0 ? detail::concat(" (collective #", activity.collective, ")") : "";
      if (waiting.longest_pause() >= grace) place += paused(waiting.longest_pause());
      throw CommunicationError(detail::concat("rank ", rank, ": ", activity.description, " did not complete within ",
                                              timeout.count(), " ms", place, waiting.survey(grace)));
    }
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// A reduction made of several rounds of messages: progress() tests the current round and, once it is
// done, does its arithmetic and posts the next. The Request that holds it calls progress() from ready()
// and wait(), so the rounds advance while the caller works.
class Exchange {
 public:
  virtual ~Exchange() = default;
  // True once the data holds the result; rethrows the first failure on every later call.
  bool progress() {
    if (error_) std::rethrow_exception(error_);
    try {
      for (;;) {
        if (!requests_.empty()) {
          int done = 0;
          const int code =
              MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE);
          if (code != MPI_SUCCESS) throw CommunicationError(error_text(code));
          if (!done) return false;
          requests_.clear();
        }
        if (round_ == rounds_) return true;
        if (round_ >= 0) finish_round(round_);
        if (++round_ < rounds_) post_round(round_);
      }
    } catch (const std::exception& error) {
      error_ = std::make_exception_ptr(CommunicationError(error.what()));
      throw;
    }
  }
  void cancel() {
    for (MPI_Request& request : requests_)
      if (request != MPI_REQUEST_NULL) MPI_Cancel(&request);
  }

 protected:
  explicit Exchange(int rounds) : rounds_(rounds) {}
  virtual void post_round(int round) = 0;
  virtual void finish_round(int round) = 0;
  std::vector<MPI_Request> requests_;

 private:
  int rounds_ = 0, round_ = -1;
  std::exception_ptr error_;
};

// all_reduce_canonical's rounds (see the header comment). `data` must outlive it.
template <class T>
class CanonicalReduction final : public Exchange {
 public:
  CanonicalReduction(T* data, index count, MPI_Comm communicator, int rank, int size, int tag)
      : Exchange(rounds(size)),
        data_(data),
        communicator_(communicator),
        rank_(rank),
        size_(size),
        tag_(tag),
        halving_((size & (size - 1)) == 0) {
    if (halving_) {
      // Level j splits the range this rank and its partner rank ^ 2^j share; each keeps one half.
      Range range{0, count};
      for (int mask = 1; mask < size; mask <<= 1) {
        const index middle = range.begin + (range.end - range.begin) / 2;
        const bool upper = (rank & mask) != 0;
        levels_.push_back({upper ? Range{middle, range.end} : Range{range.begin, middle},
                           upper ? Range{range.begin, middle} : Range{middle, range.end}, rank ^ mask, upper});
        range = levels_.back().kept;
      }
      staging_.resize(static_cast<std::size_t>(count - count / 2));
    } else {
      for (int r = 0; r < size; ++r) segments_.push_back({count * r / size, count * (r + 1) / size});
      staging_.resize(static_cast<std::size_t>(segments_[static_cast<std::size_t>(rank)].size() * size));
    }
  }

 private:
  struct Range {
    index begin, end;
    index size() const { return end - begin; }
  };
  struct Level {
    Range kept, given;  // this rank's half of the level's range, and its partner's
    int partner;
    bool upper;  // this rank is the upper one: its values are the right operand
  };

  static int rounds(int size) {
    if ((size & (size - 1)) != 0) return 2;
    int levels = 0;
    while ((1 << levels) < size) ++levels;
    return 2 * levels;
  }

  void post_round(int round) override {
    if (halving_) {
      const int levels = static_cast<int>(levels_.size());
      if (round < levels) {  // reduce-scatter: give away one half, receive the partner's part of the other
        const Level& level = levels_[static_cast<std::size_t>(round)];
        receive(staging_.data(), level.kept.size(), level.partner, 0);
        send(data_ + level.given.begin, level.given.size(), level.partner, 0);
      } else {  // all-gather, the levels in reverse: exchange the summed halves
        const Level& level = levels_[static_cast<std::size_t>(2 * levels - 1 - round)];
        receive(data_ + level.given.begin, level.given.size(), level.partner, 1);
        send(data_ + level.kept.begin, level.kept.size(), level.partner, 1);
      }
      return;
    }
    const Range own = segments_[static_cast<std::size_t>(rank_)];
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      const Range other = segments_[static_cast<std::size_t>(r)];
      if (round == 0) {  // every rank's values of this rank's segment
        receive(staging_.data() + own.size() * r, own.size(), r, 0);
        send(data_ + other.begin, other.size(), r, 0);
      } else {  // every segment's sum to every rank
        receive(data_ + other.begin, other.size(), r, 1);
        send(data_ + own.begin, own.size(), r, 1);
      }
    }
  }

  void finish_round(int round) override {
    if (halving_) {
      if (round >= static_cast<int>(levels_.size())) return;
      const Level& level = levels_[static_cast<std::size_t>(round)];
      T* kept = data_ + level.kept.begin;
      const T* received = staging_.data();
      for (index i = 0; i < level.kept.size(); ++i)
        kept[i] = level.upper ? received[i] + kept[i] : kept[i] + received[i];
    } else if (round == 0) {
      const Range own = segments_[static_cast<std::size_t>(rank_)];
      std::vector<const T*> parts;
      for (int r = 0; r < size_; ++r)
        parts.push_back(r == rank_ ? data_ + own.begin : staging_.data() + own.size() * r);
      tree_sum_elementwise(std::span<const T* const>(parts), static_cast<std::size_t>(own.size()), data_ + own.begin);
    }
  }

  void receive(T* into, index elements, int source, int phase) {
    requests_.push_back(MPI_REQUEST_NULL);
    const int code = MPI_Irecv(into, static_cast<int>(elements), datatype<T>(), source, tag_ + phase, communicator_,
                               &requests_.back());
    if (code != MPI_SUCCESS) throw CommunicationError(error_text(code));
  }
  void send(const T* from, index elements, int destination, int phase) {
    requests_.push_back(MPI_REQUEST_NULL);
    const int code = MPI_Isend(from, static_cast<int>(elements), datatype<T>(), destination, tag_ + phase,
                               communicator_, &requests_.back());
    if (code != MPI_SUCCESS) throw CommunicationError(error_text(code));
  }

  T* data_;
  MPI_Comm communicator_;
  int rank_, size_, tag_;
  bool halving_;
  std::vector<Level> levels_;    // 2^k ranks
  std::vector<Range> segments_;  // other counts: rank r sums segment r
  std::vector<T> staging_;
};

}  // namespace mpi_detail

class Mpi {
 public:
  using device = cpu;

  // A started operation; wait() completes it, or throws CommunicationError at the deadline (see the
  // header comment), after which its communicator refuses further operations.
  class Request {
   public:
    Request() = default;
    Request(MPI_Request request, mpi_detail::Activity activity, Mpi* owner)
        : request_(request), activity_(std::move(activity)), owner_(owner) {}
    // An exchange of several rounds (all_reduce_canonical), advanced by ready() and wait().
    Request(std::shared_ptr<mpi_detail::Exchange> exchange, mpi_detail::Activity activity, Mpi* owner)
        : exchange_(std::move(exchange)), activity_(std::move(activity)), owner_(owner) {}
    void wait() {
      if (request_ == MPI_REQUEST_NULL && !exchange_) return;
      try {
        mpi_detail::wait_until([&] { return test(); }, activity_, owner_->rank_, owner_->options_.timeout);
      } catch (const CommunicationError& error) {
        // A collective stays pending (MPI cannot cancel one); an exchange's messages are point to point.
        if (exchange_) exchange_->cancel();
        owner_->fail(error.what());
        throw;
      }
    }
    // True once done or failed (wait() then reports the failure).
    bool ready() {
      if (exchange_) {
        try {
          return exchange_->progress();
        } catch (const CommunicationError&) {
          return true;
        }
      }
      if (request_ == MPI_REQUEST_NULL) return true;
      int done = 0;
      MPI_Test(&request_, &done, &status_);
      return done != 0;
    }
    const MPI_Status& status() const { return status_; }

   private:
    bool test() {
      if (exchange_) {
        try {
          return exchange_->progress();
        } catch (const CommunicationError& error) {
          throw CommunicationError(
              detail::concat("rank ", owner_->rank_, ": ", activity_.description, " failed: ", error.what()));
        }
      }
      if (request_ == MPI_REQUEST_NULL) return true;  // ready() completed it
      int done = 0;
      const int code = MPI_Test(&request_, &done, &status_);
      PNN_CHECK(code == MPI_SUCCESS, CommunicationError, "rank ", owner_->rank_, ": ", activity_.description,
                " failed: ", mpi_detail::error_text(code));
      return done != 0;
    }

    MPI_Request request_ = MPI_REQUEST_NULL;
    std::shared_ptr<mpi_detail::Exchange> exchange_;
    MPI_Status status_{};
    mpi_detail::Activity activity_;
    Mpi* owner_ = nullptr;
  };

  explicit Mpi(CommunicatorOptions options = {}) : options_(options) {
    mpi_detail::Environment::ensure();
    id_ = mpi_detail::StatusService::instance(options_.timeout).next_communicator();
    communicator_ = mpi_detail::duplicate_world(options_.timeout);
    MPI_Comm_set_errhandler(communicator_, MPI_ERRORS_RETURN);                // errors become exceptions, not aborts
    canonical_communicator_ = mpi_detail::duplicate_world(options_.timeout);  // all_reduce_canonical's messages
    MPI_Comm_set_errhandler(canonical_communicator_, MPI_ERRORS_RETURN);
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
    MPI_Comm_free(&canonical_communicator_);
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
    const std::int64_t collective = check_order(description);
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, data.data(), count(data.size()), mpi_detail::datatype<T>(), MPI_SUM,
                         communicator_, &request),
          description);
    return Request(request, activity(description, collective), this);
  }

  template <class T>
  void all_reduce_canonical(TensorView<T, 1, cpu> data) {
    all_reduce_canonical_async(data).wait();
  }

  // `data` must stay alive until the Request is done: its rounds read and write it.
  template <class T>
  Request all_reduce_canonical_async(TensorView<T, 1, cpu> data) {
    const std::string description = describe<T>("all_reduce_canonical", data.size());
    const std::int64_t collective = check_order(description);
    if (size_ == 1) return Request();
    count(data.size());
    // A tag per operation (two phases each): the rounds of reductions in flight together cannot meet.
    const int tag = static_cast<int>(canonical_sequence_++ % 16'384) * 2;
    try {
      auto exchange = std::make_shared<mpi_detail::CanonicalReduction<T>>(data.data(), data.size(),
                                                                          canonical_communicator_, rank_, size_, tag);
      exchange->progress();  // posts the first round
      return Request(std::move(exchange), activity(description, collective), this);
    } catch (const CommunicationError& error) {
      throw CommunicationError(detail::concat("rank ", rank_, ": ", description, " failed: ", error.what()));
    }
  }

  template <class T>
  void broadcast(TensorView<T, 1, cpu> data, int root) {
    check_peer(root, "broadcast");
    const std::string description = describe<T>("broadcast", data.size(), root);
    const std::int64_t collective = check_order(description);
    MPI_Request request;
    check(MPI_Ibcast(data.data(), count(data.size()), mpi_detail::datatype<T>(), root, communicator_, &request),
          description);
    Request(request, activity(description, collective), this).wait();
  }

  void barrier() {
    const std::int64_t collective = check_order("barrier");
    MPI_Request request;
    check(MPI_Ibarrier(communicator_, &request), "barrier");
    Request(request, activity("barrier", collective), this).wait();
  }

  // Buffered: the data is copied, so the caller may reuse its view at once.
  template <class T>
  void send(TensorView<const T, 1, cpu> data, int destination, int tag) {
    check_peer(destination, "send");
    check_usable();
    auto buffer = std::make_unique<std::vector<T>>(data.data(), data.data() + data.size());
    MPI_Request request;
    const std::string description =
        detail::concat("send of ", data.size(), " ", type_name<T>(), "s to rank ", destination, " (tag ", tag, ")");
    check(MPI_Isend(buffer->data(), count(data.size()), mpi_detail::datatype<T>(), destination, tag, communicator_,
                    &request),
          description);
    sends_.push_back({Request(request, activity(description), this), std::move(buffer)});
    // Complete finished sends so the list stays short.
    while (!sends_.empty() && sends_.front().request.ready()) sends_.pop_front();
  }

  template <class T>
  void receive(TensorView<T, 1, cpu> data, int source, int tag) {
    check_peer(source, "receive");
    check_usable();
    const std::string description =
        detail::concat("receive of ", data.size(), " ", type_name<T>(), "s from rank ", source, " (tag ", tag, ")");
    // Probe first so a message of the wrong size is reported, not truncated.
    MPI_Status status;
    try {
      mpi_detail::wait_until(
          [&] {
            int found = 0;
            check(MPI_Iprobe(source, tag, communicator_, &found, &status), description);
            return found != 0;
          },
          activity(description), rank_, options_.timeout);
    } catch (const CommunicationError& error) {
      fail(error.what());
      throw;
    }
    int elements = 0;
    MPI_Get_count(&status, mpi_detail::datatype<T>(), &elements);
    PNN_CHECK(elements == data.size(), CommunicationError, "rank ", rank_, " expected ", data.size(), " ",
              type_name<T>(), "s from rank ", source, " (tag ", tag, ") but the message holds ", elements);
    MPI_Request request;
    check(MPI_Irecv(data.data(), count(data.size()), mpi_detail::datatype<T>(), source, tag, communicator_, &request),
          description);
    Request(request, activity(description), this).wait();
  }

  // Waits until every buffered send has been delivered.
  void flush_sends() {
    while (!sends_.empty()) {
      sends_.front().request.wait();
      sends_.pop_front();
    }
  }

  // Prints the message and ends every rank (mpirun then stops the job).
  [[noreturn]] void abort(const std::string& message) { mpi_detail::end_job(message); }
  // True once an operation of this communicator failed (its error is failure()); every later operation
  // throws. A failed rank normally ends the job (abort()) before anyone asks.
  bool aborted() const { return !failure_.empty(); }
  std::string failure() const { return failure_; }

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
  void check_usable() const {
    PNN_CHECK(failure_.empty(), CommunicationError, "rank ", rank_,
              ": this communicator cannot be used after a failed operation: ", failure_);
  }
  void fail(const std::string& message) {
    if (failure_.empty()) failure_ = message;
  }
  mpi_detail::Activity activity(std::string description, std::int64_t collective = -1) const {
    return {std::move(description), id_, collective};
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

  // Numbers the next collective (returned), and with check_collective_order every rank shares its
  // description; the first difference is reported on every rank.
  std::int64_t check_order(const std::string& description) {
    check_usable();
    const std::int64_t sequence = sequence_++;
    if (!options_.check_collective_order) return sequence;
    constexpr int width = 96;
    std::vector<char> mine(width, '\0'), all(static_cast<std::size_t>(width * size_), '\0');
    std::strncpy(mine.data(), description.c_str(), width - 1);
    MPI_Request request;
    check(MPI_Iallgather(mine.data(), width, MPI_CHAR, all.data(), width, MPI_CHAR, communicator_, &request),
          "collective order check");
    Request(request, activity("collective order check before " + description, sequence), this).wait();
    const std::string first(all.data());
    for (int r = 1; r < size_; ++r) {
      const std::string other(all.data() + static_cast<std::ptrdiff_t>(r) * width);
      PNN_CHECK(other == first, CommunicationError, "collective mismatch at collective #", sequence, ": rank ", r,
                " called ", other, " but rank 0 called ", first);
    }
    return sequence;
  }

  CommunicatorOptions options_;
  MPI_Comm communicator_ = MPI_COMM_NULL;
  MPI_Comm canonical_communicator_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::uint64_t id_ = 0;       // its number among this process's communicators (status answers name it)
  std::int64_t sequence_ = 0;  // collectives started
  std::uint64_t canonical_sequence_ = 0;
  std::string failure_;  // the first failed operation's error
  std::deque<PendingSend> sends_;
};

static_assert(Communicator<Mpi>);

}  // namespace pnn
