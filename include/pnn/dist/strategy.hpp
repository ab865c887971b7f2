// pnn/dist/strategy.hpp: the parallel strategies as compile-time policies, and their options.
//
// A strategy is a tag type naming its communicator and, through `template <class Model> using rank`, the
// type of its ranks (dist/strategy_rank.hpp says what a rank provides): a new strategy adds a tag and a
// rank type without touching Distributed. Pipeline schedules are policies of their own (dist/schedule.hpp).
//
//   Distributed<Model, DataParallel<Local>>                               replicas, gradient all-reduce
//   Distributed<Model, ModelParallel<Split<4, 7>>>                         layers cut into stages
//   Distributed<Model, Pipeline<Split<4>, Microbatches<8>, OneFOneB>>      stages fed micro-batches
//
// Split<P...> cuts the model's layer list before layers P... (0-based): Split<4, 7> on a 10-layer model
// gives stages [0, 4), [4, 7), [7, 10), one per rank. Split points that leave a stage empty, fall
// outside the model, or are out of order are compile-time errors that name the offending point.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "pnn/core/config.hpp"
#include "pnn/core/timeline.hpp"
#include "pnn/dist/communicator.hpp"
#include "pnn/dist/local.hpp"
#include "pnn/dist/schedule.hpp"

namespace pnn {

template <std::size_t... Points>
struct Split {
  static constexpr std::size_t count = sizeof...(Points);
  static constexpr std::array<std::size_t, count> points{Points...};
};

// The opt-in for a pipeline over a model with batch statistics (BatchNorm): Microbatches<m,
// StatisticsPerMicrobatch> normalises each micro-batch with its own statistics, as GPipe does. That is
// another model than serial training's, so a pipeline refuses to compile without it (dist/pipeline.hpp).
struct StatisticsPerMicrobatch {};

template <index Count, class Statistics = void>
struct Microbatches {
  static_assert(Count > 0, "Microbatches<m> needs m >= 1");
  static_assert(std::is_void_v<Statistics> || std::is_same_v<Statistics, StatisticsPerMicrobatch>,
                "Microbatches<m, Tag>: the only tag is pnn::StatisticsPerMicrobatch");
  static constexpr index count = Count;
  static constexpr bool statistics_per_microbatch = std::is_same_v<Statistics, StatisticsPerMicrobatch>;
};

// The rank types of the strategies below (data_parallel.hpp, pipeline.hpp).
template <class Model, class Comm>
class DataParallelRank;
template <class Model, class Strategy>
class PipelineRank;

template <class Comm = Local>
struct DataParallel {
  static_assert(Communicator<Comm>, "DataParallel<Comm>: Comm must satisfy pnn::Communicator (dist/communicator.hpp)");
  using communicator = Comm;
  template <class Model>
  using rank = DataParallelRank<Model, Comm>;
  static constexpr const char* name = "data parallel";
};

template <class SplitPoints, class Count, class Schedule, class Comm = Local>
struct Pipeline {
  static_assert(Communicator<Comm>, "Pipeline<...>: Comm must satisfy pnn::Communicator (dist/communicator.hpp)");
  static_assert(PipelineSchedule<Schedule>,
                "Pipeline<Split<...>, Microbatches<m>, Schedule>: Schedule must satisfy pnn::PipelineSchedule: a "
                "`name` and static std::vector<Operation> order(int stage, int stages, index microbatches), as "
                "pnn::GPipe and pnn::OneFOneB in dist/schedule.hpp");
  using communicator = Comm;
  template <class Model>
  using rank = PipelineRank<Model, Pipeline>;
  using split = SplitPoints;
  using schedule = Schedule;
  static constexpr index microbatches = Count::count;
  static constexpr bool statistics_per_microbatch = Count::statistics_per_microbatch;
  static constexpr const char* name = "pipeline";
};

// Layer partitioning: a pipeline of one micro-batch.
template <class SplitPoints, class Comm = Local>
using ModelParallel = Pipeline<SplitPoints, Microbatches<1>, GPipe, Comm>;

struct DistributedOptions {
  int ranks = 2;                       // ranks of an in-process group (Local, Nccl); Mpi takes mpirun's count
  CommunicatorOptions communicator{};  // timeout, collective-order checking
  index bucket_bytes = 256 * 1024;     // data parallel: gradient bucket size
  bool overlap = true;                 // data parallel: reduce buckets while backward runs
};

// What a strategy measured over its training steps so far (predictions are not counted), in the time of
// the model's device (core/timeline.hpp): on the cpu the host's clock; on a GPU events on the compute
// stream, so that a span runs from when the device reached its first mark to when it reached its last:
// compute spans hold the stream's forward and backward work (with any gaps where it waited for the host
// to enqueue more), exposed time is the stream waiting for reductions, a pipeline's communication time
// the stream waiting for a message. Read through the strategy's statistics(), which first waits for the
// device to pass the last step's marks; not while a step runs.
struct StrategyStatistics {
  index steps = 0;
  double step_seconds = 0;           // from the step's start to its end, the update included
  double compute_seconds = 0;        // forward, loss and backward (pipeline: and the update)
  double communication_seconds = 0;  // all-reduce in flight (data parallel), waiting to receive (pipeline)
  double exposed_seconds = 0;        // data parallel: waiting for reductions after backward ended
  index bytes_communicated = 0;
  double hidden_fraction() const {  // the part of the all-reduce time hidden behind backward
    return communication_seconds > 0 ? 1 - exposed_seconds / communication_seconds : 0;
  }
  double bubble_fraction() const {  // pipeline: idle part of the step
    return step_seconds > 0 ? 1 - compute_seconds / step_seconds : 0;
  }
};

// A strategy's step times, kept as marks on the device's timeline and added to StrategyStatistics once
// the device has passed them. On a GPU a step returns before its last work (the update) is done, and
// waiting for it would hold back the host's enqueueing of the next step; so each step's times are added
// at the end of the step after it (whose loss needed the updated weights: its marks are passed by then)
// or when the statistics are read, which waits for them.
template <class D>
class StepTimer {
 public:
  using Mark = typename Timeline<D>::Mark;
  using Field = double StrategyStatistics::*;

  // Starts a step: its first mark. Marks of an unfinished step (one that threw) are dropped.
  Mark begin() {
    current_.timeline.clear();
    current_.spans.clear();
    current_.start = current_.timeline.mark();
    return current_.start;
  }
  Mark mark() { return current_.timeline.mark(); }
  // Adds the time between two of this step's marks to `field`.
  void add(Field field, Mark from, Mark to) { current_.spans.push_back({field, from, to}); }
  // Ends the step: its whole span is step_seconds. Adds the step before it to `statistics`.
  void end(StrategyStatistics& statistics) {
    add(&StrategyStatistics::step_seconds, current_.start, mark());
    settle(statistics);
    std::swap(current_, pending_);
    pending_full_ = true;
  }
  // Adds the ended steps' times not yet added, waiting for the device to pass their marks.
  void settle(StrategyStatistics& statistics) {
    if (!pending_full_) return;
    pending_.timeline.wait();
    StrategyStatistics added = statistics;  // all or nothing: a failure leaves the step to a later settle()
    for (const Span& span : pending_.spans) added.*span.field += pending_.timeline.seconds(span.from, span.to);
    statistics = added;
    pending_full_ = false;
  }

 private:
  struct Span {
    Field field;
    Mark from, to;
  };
  struct Step {
    Timeline<D> timeline;
    std::vector<Span> spans;
    Mark start{};
  };
  Step current_, pending_;
  bool pending_full_ = false;
};

// ----- compile-time checks of split points ----------------------------------------------------------------
template <std::size_t Position, std::size_t Point, std::size_t Layers>
struct split_point_outside_the_model {
  static_assert(always_false<split_point_outside_the_model>,
                "Split<...>: the split point at Position (0-based) is Point, which lies outside the model's Layers "
                "layers; split points must be between 1 and Layers - 1");
  static constexpr bool value = false;
};
template <std::size_t Position, std::size_t Point>
struct split_point_leaves_a_stage_empty {
  static_assert(always_false<split_point_leaves_a_stage_empty>,
                "Split<...>: the split point at Position (0-based) leaves a stage without layers: it is 0, equals "
                "the layer count, or repeats the previous point");
  static constexpr bool value = false;
};
template <std::size_t Position, std::size_t Point, std::size_t Previous>
struct split_points_out_of_order {
  static_assert(always_false<split_points_out_of_order>,
                "Split<...>: the split point at Position (0-based) is Point, smaller than the point before it "
                "(Previous); split points must increase");
  static constexpr bool value = false;
};

template <std::size_t Position, std::size_t Point, std::size_t Previous, std::size_t Layers>
constexpr bool check_split_point() {
  if constexpr (Point > Layers) return split_point_outside_the_model<Position, Point, Layers>::value;
  else if constexpr (Point == 0 || Point == Layers || (Position > 0 && Point == Previous))
    return split_point_leaves_a_stage_empty<Position, Point>::value;
  else if constexpr (Position > 0 && Point < Previous)
    return split_points_out_of_order<Position, Point, Previous>::value;
  else return true;
}

template <class SplitPoints, std::size_t Layers>
constexpr bool check_split() {
  return []<std::size_t... I>(std::index_sequence<I...>) {
    return (
        check_split_point<I, SplitPoints::points[I], (I > 0 ? SplitPoints::points[I > 0 ? I - 1 : 0] : 0), Layers>() &&
        ...);
  }(std::make_index_sequence<SplitPoints::count>{});
}

}  // namespace pnn
