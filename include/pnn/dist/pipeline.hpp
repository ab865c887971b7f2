// pnn/dist/pipeline.hpp: one rank of layer-partitioned and pipelined training (Pipeline, ModelParallel).
//
// Split<P...> cuts Model's layer list into stages at compile time; rank s holds stage s, itself a
// Sequential of that slice whose layers keep their names and initial values from the whole model. A
// step splits the global batch into m micro-batches (rows [B j / m, B (j + 1) / m)); a stage receives
// each micro-batch's activations from the stage before it, sends its own to the stage after it, and
// sends input gradients back. Every stage updates its weights once per step, with the gradient of the
// whole batch's mean loss: the loss scales each row by 1 / B, each micro-batch's gradients are a leaf of
// the canonical tree of core/batch_sum.hpp, and the leaves are added up in it. With m dividing
// batch_chunks (1, 2, 4, 8) the micro-batches are subtrees of the batch's tree, and a pipeline of any
// number of stages reproduces serial training bit for bit (with StatisticsPerMicrobatch's BatchNorm, a
// different model, it does not).
//
// The order of a stage's passes comes from the schedule policy (dist/schedule.hpp: GPipe, OneFOneB).
// ModelParallel is m = 1. Rows of the batch: stage 0 is handed the inputs and the last stage the
// targets (rows()); no other stage receives either, so a GPU stage's device holds only what it reads,
// and under Mpi only stage 0's process gathers inputs and only the last stage's targets (fit(),
// evaluate(): the last stage scores the predictions, the others add nothing).
#pragma once

#include <array>
#include <deque>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "pnn/core/canonical_sum.hpp"
#include "pnn/dist/communicator.hpp"
#include "pnn/dist/schedule.hpp"
#include "pnn/dist/strategy.hpp"
#include "pnn/dist/strategy_rank.hpp"
#include "pnn/model/sequential.hpp"
#include "pnn/optim/gradient_clipping.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

namespace pipeline_detail {

template <class T, class D, class In, class SpecList, std::size_t Begin, class Indices>
struct stage_of;
template <class T, class D, class In, class... Specs, std::size_t Begin, std::size_t... I>
struct stage_of<T, D, In, std::tuple<Specs...>, Begin, std::index_sequence<I...>> {
  using type = BasicSequential<T, D, In, std::tuple_element_t<Begin + I, std::tuple<Specs...>>...>;
};

template <class Model>
struct model_parts {
  static_assert(always_false<Model>, "pipelines split a BasicSequential<...> (Sequential<...>) model");
};
template <class T, class D, class In, class... Specs>
struct model_parts<BasicSequential<T, D, In, Specs...>> {
  using Whole = BasicSequential<T, D, In, Specs...>;
  static constexpr std::size_t layers = sizeof...(Specs);
  template <std::size_t Begin>
  using input_shape_at =
      std::conditional_t<Begin == 0, typename In::shape,
                         typename Whole::Stack::template layer_type<(Begin > 0 ? Begin - 1 : 0)>::output_shape>;
  // The stage holding layers [Begin, End) as a model of its own.
  template <std::size_t Begin, std::size_t End>
  using stage = typename stage_of<T, D, InputFor<input_shape_at<Begin>>, std::tuple<Specs...>, Begin,
                                  std::make_index_sequence<End - Begin>>::type;
};

// The stage boundaries {0, P..., layers}.
template <class SplitPoints, std::size_t Layers>
constexpr auto boundaries() {
  std::array<std::size_t, SplitPoints::count + 2> b{};
  b[0] = 0;
  for (std::size_t i = 0; i < SplitPoints::count; ++i) b[i + 1] = SplitPoints::points[i];
  b[SplitPoints::count + 1] = Layers;
  return b;
}

template <std::size_t Points, std::size_t Layers>
constexpr auto fallback_boundaries() {
  std::array<std::size_t, Points + 2> b{};
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::min(i, Layers);
  return b;
}

// Runs one stage. Written once for every stage type.
template <class Stage, class Whole, class Comm, class Strategy>
class StageRunner : public RankBookkeeping<typename Stage::value_type, typename Stage::device> {
 public:
  using T = typename Stage::value_type;
  using D = typename Stage::device;
  static constexpr index in_features = Stage::input_shape::size;
  static constexpr index out_features = Stage::output_shape::size;
  // Message tags: micro-batch j's activations travel with tag 2j, its gradients with 2j + 1.
  static constexpr index prediction_tag = 1 << 20;

  StageRunner(Comm& comm, std::uint64_t seed, std::size_t first_layer)
      : comm_(comm), stage_(seed, first_layer), index_(comm.rank()), stages_(comm.size()) {}

  // `inputs` (stage 0) and `targets` (the last stage) are the rows `part` of the step's global batch (all
  // of it, unless the step accumulates gradients over passes); other stages are handed empty views.
  template <class Rule, class LossFunction>
  T train_step(TensorView<const T, 2, D> inputs, typename LossFunction::template target_type<T, D> targets,
               const BatchPart& part, const Optimizer<Rule, T, D>& caller, const LossFunction& loss) {
    this->begin_step(part);
    const index batch = part.count;  // the pass's rows, which its micro-batches divide
    const index m = Strategy::microbatches;
    stage_.zero_grad();
    loss_sums_.assign(static_cast<std::size_t>(m), 0.0);
    std::vector<MicrobatchSlot*> slot_of(static_cast<std::size_t>(m), nullptr);
    for (const Operation& op : Strategy::schedule::order(index_, stages_, m)) {
      const auto [begin, count] = batch_share(batch, op.microbatch, m);
      if (op.pass == Pass::forward) {
        MicrobatchSlot& slot = acquire();
        slot_of[static_cast<std::size_t>(op.microbatch)] = &slot;
        TensorView<const T, 2, D> x;
        if (index_ > 0) {
          slot.input.resize({count, in_features});
          receive(slot.input.flat(), index_ - 1, 2 * op.microbatch);
          x.rebind(slot.input.view());
        } else {
          x.rebind(inputs.rows(begin, count));
        }
        const auto compute_start = times_.mark();
        // The micro-batch's samples are rows [begin, begin + count) of the step's global batch.
        const auto output = stage_.forward(
            x, slot.trace, true, PassKey{static_cast<std::uint64_t>(caller.steps()), part.begin + begin, part.batch});
        if (last()) {
          slot.trace.output_gradient.resize(output.shape());
          if (count > 0)
            loss_sums_[static_cast<std::size_t>(op.microbatch)] =
                loss.sum(output, targets.rows(begin, count), slot.trace.output_gradient.view(),
                         BatchPart{part.batch, part.begin + begin, count});
        }
        times_.add(&StrategyStatistics::compute_seconds, compute_start, times_.mark());
        if (!last()) send(output.flat(), index_ + 1, 2 * op.microbatch);
      } else {
        MicrobatchSlot& slot = *slot_of[static_cast<std::size_t>(op.microbatch)];
        if (!last()) {
          slot.trace.output_gradient.resize({count, out_features});
          receive(slot.trace.output_gradient.flat(), index_ + 1, 2 * op.microbatch + 1);
        }
        const auto compute_start = times_.mark();
        if (m > 1) stage_.zero_grad();  // each micro-batch's gradients are a leaf of the tree below
        if (index_ > 0) {
          input_gradient_.resize({count, in_features});
          stage_.backward(slot.trace.output_gradient.view(), input_gradient_.view(), slot.trace);
        } else {
          stage_.backward(slot.trace.output_gradient.view(), TensorView<T, 2, D>{}, slot.trace);
        }
        if (m > 1) keep_gradients(op.microbatch);
        times_.add(&StrategyStatistics::compute_seconds, compute_start, times_.mark());
        if (index_ > 0) send(TensorView<const T, 1, D>(input_gradient_.flat()), index_ - 1, 2 * op.microbatch + 1);
        release(slot);
      }
    }
    if (m > 1) add_up_gradients();
    // The loss: the micro-batches' canonical sums, subtrees of the batch's tree, added up in it.
    ScalarTreeSum<double> loss_sum;
    for (const double sum : loss_sums_) loss_sum.push(sum);
    Tensor<double, 1> total(Extents<1>{1});
    total[0] = loss_sum.total() / static_cast<double>(batch);  // the pass's mean loss
    comm_.broadcast(total.view(), stages_ - 1);
    const auto update_start = times_.mark();
    // Clipping needs the whole model's norm: every stage's sums, added in the model's order.
    this->update(caller, part, stage_.parameters(), stage_.parameter_gradients(),
                 [&](const std::vector<double>& squares) { return global_norm_over_ranks(comm_, squares); });
    times_.add(&StrategyStatistics::compute_seconds, update_start, times_.mark());

    this->end_step(bytes_);
    return static_cast<T>(total[0]);
  }

  // Inference through every stage; every rank receives the final output. Only stage 0 reads `inputs`
  // (the batch's `batch` rows); the others may be handed none.
  TensorView<const T, 2, D> predict(TensorView<const T, 2, D> inputs, index batch) {
    PNN_CHECK(index_ > 0 || inputs.dim(0) == batch, ArgumentError, "pipeline predict: stage 0 was handed ",
              inputs.dim(0), " rows of a batch of ", batch);
    TensorView<const T, 2, D> x = inputs;
    if (index_ > 0) {
      prediction_input_.resize({batch, in_features});
      comm_.receive(prediction_input_.flat(), index_ - 1, static_cast<int>(prediction_tag));
      x.rebind(prediction_input_.view());
    }
    const auto output = stage_.predict(x);
    constexpr index final_features = Whole::output_shape::size;
    prediction_.resize({batch, final_features});
    if (!last()) comm_.send(output.flat(), index_ + 1, static_cast<int>(prediction_tag));
    else copy(output.flat(), prediction_.flat());
    comm_.broadcast(prediction_.flat(), stages_ - 1);
    return prediction_.view();
  }

  // Fills `whole` with every stage's parameters and buffers, on every rank.
  void gather(Whole& whole) {
    Tensor<T, 1, D> values(whole.parameter_values().shape()), buffers(whole.buffer_values().shape());
    for (const auto& mine : stage_.parameters()) {
      const auto& target = find(whole, mine.name());
      auto& destination = mine.trainable() ? values : buffers;
      const auto& base = mine.trainable() ? whole.parameter_values() : whole.buffer_values();
      copy(TensorView<const T, 1, D>(mine.value),
           destination.view().rows(target.value.data() - base.data(), mine.value.size()));
    }
    comm_.all_reduce(values.view());
    if (buffers.size() > 0) comm_.all_reduce(buffers.view());
    copy(TensorView<const T, 1, D>(values.view()), whole.parameter_values());
    copy(TensorView<const T, 1, D>(buffers.view()), whole.buffer_values());
  }
  void scatter(const Whole& whole) {
    for (const auto& mine : stage_.parameters())
      copy(TensorView<const T, 1, D>(find(whole, mine.name()).value), mine.value);
  }

  index max_live_microbatches() const { return max_live_; }

 private:
  // One micro-batch in flight on this stage.
  struct MicrobatchSlot {
    Tensor<T, 2, D> input;  // the activations received from the stage before
    typename Stage::Trace trace;
    bool busy = false;
  };

  bool last() const { return index_ == stages_ - 1; }

  MicrobatchSlot& acquire() {
    index live = 1;
    MicrobatchSlot* free_slot = nullptr;
    for (auto& slot : slots_) {
      if (slot.busy) ++live;
      else if (!free_slot) free_slot = &slot;
    }
    if (!free_slot) free_slot = &slots_.emplace_back();  // a std::deque: earlier slots do not move
    free_slot->busy = true;
    max_live_ = std::max(max_live_, live);
    return *free_slot;
  }
  void release(MicrobatchSlot& slot) { slot.busy = false; }

  // A training step's messages, counted in its statistics (predictions are not): the wait to receive is
  // communication time (on a GPU, the compute stream idle until the data has arrived).
  void receive(TensorView<T, 1, D> data, int source, index tag) {
    const auto start = times_.mark();
    comm_.receive(data, source, static_cast<int>(tag));
    times_.add(&StrategyStatistics::communication_seconds, start, times_.mark());
    bytes_ += data.size() * static_cast<index>(sizeof(T));
  }
  void send(TensorView<const T, 1, D> data, int destination, index tag) {
    comm_.send(data, destination, static_cast<int>(tag));
    bytes_ += data.size() * static_cast<index>(sizeof(T));
  }

  // Micro-batch j's gradients are leaf j of the step's canonical tree (core/batch_sum.hpp); the leaves
  // are added up in micro-batch order, whatever order the schedule ran them in. With m dividing
  // batch_chunks each micro-batch is a subtree of the batch's tree, so the stage gets serial training's bits.
  void keep_gradients(index microbatch) {
    const auto gradients = stage_.parameter_gradients();
    if (gradient_leaves_.size() <= static_cast<std::size_t>(microbatch))
      gradient_leaves_.resize(static_cast<std::size_t>(microbatch) + 1);
    auto& leaf = gradient_leaves_[static_cast<std::size_t>(microbatch)];
    leaf.resize(gradients.shape());
    copy(TensorView<const T, 1, D>(gradients), leaf.view());
  }
  void add_up_gradients() {
    // In place: each inner node adds the right leaf's tensor into the left one's.
    const std::size_t root = binary_counter_tree(
        static_cast<std::size_t>(Strategy::microbatches), [](std::size_t j) { return j; },
        [&](std::size_t left, std::size_t right) {
          gradient_leaves_[left].view() += gradient_leaves_[right].view();
          return left;
        });
    stage_.zero_grad();
    stage_.parameter_gradients() += gradient_leaves_[root].view();
  }

  static const Parameter<T, D>& find(const Whole& whole, const std::string& name) {
    for (const auto& p : whole.parameters())
      if (p.name() == name) return p;
    throw Error(detail::concat("pipeline: the whole model has no parameter named ", name));
  }

  Comm& comm_;
  Stage stage_;
  int index_, stages_;
  std::deque<MicrobatchSlot> slots_;
  Tensor<T, 2, D> input_gradient_, prediction_input_, prediction_;
  std::vector<Tensor<T, 1, D>> gradient_leaves_;  // per micro-batch
  std::vector<double> loss_sums_;                 // per micro-batch, on the last stage
  using RankBookkeeping<T, D>::times_;
  index bytes_ = 0, max_live_ = 0;

 public:
  // The whole model's optimiser state for a checkpoint, from every stage's part (collective), and this
  // stage's optimiser continuing from its layers' part of one.
  template <class Rule>
  OptimizerState<T> gather_optimizer_state(const Optimizer<Rule, T, D>& caller, const OptimizerState<T>& layout) {
    return pnn::gather_optimizer_state(comm_, this->optimizer_state(caller, stage_.parameters()), layout);
  }
  template <class Rule>
  void scatter_optimizer_state(const Optimizer<Rule, T, D>& caller, const OptimizerState<T>& whole) {
    this->set_optimizer_state(caller, stage_.parameters(), whole);
  }
};

}  // namespace pipeline_detail

// The compile-time error for a pipeline of several micro-batches over a model with batch statistics.
template <class Model>
struct pipeline_over_batch_statistics {
  static_assert(always_false<Model>,
                "Pipeline<Split<...>, Microbatches<m>, ...> with m > 1 over a model with BatchNorm would normalise "
                "each micro-batch with its own statistics, which is another model than serial training's (as in "
                "GPipe). To accept that, write Microbatches<m, pnn::StatisticsPerMicrobatch>; for the serial "
                "model's statistics, use ModelParallel<Split<...>> (one micro-batch)");
  static constexpr bool value = false;
};
template <bool Ok, class Model>
inline constexpr bool check_batch_statistics = true;
template <class Model>
inline constexpr bool check_batch_statistics<false, Model> = pipeline_over_batch_statistics<Model>::value;

template <class Model, class Strategy>
class PipelineRank {
  using parts = pipeline_detail::model_parts<Model>;
  using SplitPoints = typename Strategy::split;
  // Micro-batches of a model with BatchNorm are normalised with their own statistics: another model than
  // serial training's, so only with the explicit opt-in (Microbatches<m, StatisticsPerMicrobatch>).
  static constexpr bool statistics_allowed =
      !uses_batch_statistics<Model> || Strategy::microbatches == 1 || Strategy::statistics_per_microbatch;
  static_assert(check_batch_statistics<statistics_allowed, Model>, "see pipeline_over_batch_statistics above");
  // An invalid split reports its error through check_split; the stages then fall back to one layer each
  // so the compiler does not add a cascade of follow-on errors.
  static constexpr bool valid_split = check_split<SplitPoints, parts::layers>();
  static constexpr auto bounds = valid_split
                                     ? pipeline_detail::boundaries<SplitPoints, parts::layers>()
                                     : pipeline_detail::fallback_boundaries<SplitPoints::count, parts::layers>();
  static constexpr std::size_t stage_count = SplitPoints::count + 1;
  using Comm = typename Strategy::communicator;

  template <std::size_t S>
  using Runner =
      pipeline_detail::StageRunner<typename parts::template stage<bounds[S], bounds[S + 1]>, Model, Comm, Strategy>;
  template <class Indices>
  struct variant_of;
  template <std::size_t... S>
  struct variant_of<std::index_sequence<S...>> {
    using type = std::variant<Runner<S>...>;
  };
  using Runners = typename variant_of<std::make_index_sequence<stage_count>>::type;

 public:
  using T = typename Model::value_type;
  using D = typename Model::device;
  using communicator = Comm;

  PipelineRank(Comm& comm, std::uint64_t seed, const DistributedOptions&)
      : runner_(make_runner(comm, seed, std::make_index_sequence<stage_count>{})) {}

  // Stage 0 reads every input row, the last stage every target row; the stages between read neither.
  static BatchRows rows(index batch, int rank, int ranks) {
    BatchRows rows;
    if (rank == 0) rows.inputs = {0, batch};
    if (rank == ranks - 1) rows.targets = {0, batch};
    return rows;
  }

  template <class Rule, class LossFunction>
  T train_step(TensorView<const T, 2, D> inputs, typename LossFunction::template target_type<T, D> targets,
               const BatchPart& part, const Optimizer<Rule, T, D>& optimizer, const LossFunction& loss) {
    return std::visit([&](auto& runner) { return runner.train_step(inputs, targets, part, optimizer, loss); }, runner_);
  }
  TensorView<const T, 2, D> predict(TensorView<const T, 2, D> inputs, index batch) {
    return std::visit([&](auto& runner) { return runner.predict(inputs, batch); }, runner_);
  }
  void gather(Model& whole) {
    std::visit([&](auto& runner) { runner.gather(whole); }, runner_);
  }
  void scatter(const Model& whole) {
    std::visit([&](auto& runner) { runner.scatter(whole); }, runner_);
  }
  const StrategyStatistics& statistics() {
    return std::visit([](auto& runner) -> const StrategyStatistics& { return runner.statistics(); }, runner_);
  }
  index max_live_microbatches() const {
    return std::visit([](const auto& runner) { return runner.max_live_microbatches(); }, runner_);
  }
  static constexpr std::size_t stages() { return stage_count; }

 private:
  template <std::size_t... S>
  static Runners make_runner(Comm& comm, std::uint64_t seed, std::index_sequence<S...>) {
    PNN_CHECK(comm.size() == static_cast<int>(stage_count), ArgumentError, "a pipeline of ", stage_count,
              " stages needs ", stage_count, " ranks, but the communicator has ", comm.size());
    std::optional<Runners> made;
    ((comm.rank() == static_cast<int>(S) ? (made.emplace(std::in_place_index<S>, comm, seed, bounds[S]), 0) : 0), ...);
    return std::move(*made);
  }

  Runners runner_;

 public:
  // The whole model's optimiser state (collective), and this stage's part of one: for checkpoints.
  template <class Rule>
  OptimizerState<T> gather_optimizer_state(const Optimizer<Rule, T, D>& caller, const OptimizerState<T>& layout) {
    return std::visit([&](auto& runner) { return runner.gather_optimizer_state(caller, layout); }, runner_);
  }
  template <class Rule>
  void scatter_optimizer_state(const Optimizer<Rule, T, D>& caller, const OptimizerState<T>& whole) {
    std::visit([&](auto& runner) { runner.scatter_optimizer_state(caller, whole); }, runner_);
  }
};

}  // namespace pnn
