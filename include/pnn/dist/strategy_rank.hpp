// pnn/dist/strategy_rank.hpp: what a strategy rank is, and the parts every strategy rank shares.
//
// A strategy (DataParallel, Pipeline, ...) names the type of its ranks with a member alias
// `template <class Model> using rank = ...`; Distributed runs one such rank per rank of the
// communicator. The StrategyRank concept says what a rank type provides:
//   R(comm, seed, options)                    built on its own thread (collectively with the others)
//   R::rows(batch, rank, ranks)               which rows of a global batch of `batch` rows this rank
//                                             needs (BatchRows, core/batch_rows.hpp): the one place a
//                                             strategy says so. Distributed hands the rank exactly those,
//                                             and under Mpi the process gathers only those samples
//                                             (Distributed::rows_held)
//   train_step(inputs, targets, part, optimizer, loss)    one pass on its rows of rows `part` of the
//                                             step's global batch (a BatchPart; the whole batch unless the
//                                             step accumulates gradients over passes); returns the mean
//                                             loss of the pass's rows. The pass that ends the batch updates.
//   predict(inputs, batch)                    outputs for a batch of `batch` rows, handed every row of its
//                                             inputs or the rank's rows(batch).inputs: the outputs of the rows
//                                             it was handed, or of the whole batch (a pipeline's every stage)
//   gather(model), scatter(model), statistics()
//   gather_optimizer_state(caller, layout), scatter_optimizer_state(caller, state)   the whole model's
//                                             optimiser state, for checkpoints (gather_optimizer_state below)
// The shared parts are written once here and in core/batch_rows.hpp: batch_share (the row formula of
// data-parallel shares and pipeline micro-batches), and RankBookkeeping (the rank's own optimiser following the
// caller's, the update after the reduction, the step timing and the end-of-step statistics).
#pragma once

#include <any>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pnn/core/batch_rows.hpp"
#include "pnn/core/batch_sum.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/dist/strategy.hpp"
#include "pnn/optim/gradient_clipping.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

// The rank's own optimiser, its step timing and its statistics, for any strategy rank to hold.
template <class T, class D>
class RankBookkeeping {
 public:
  // Waits for the device to pass the last step's marks (core/timeline.hpp).
  const StrategyStatistics& statistics() {
    times_.settle(statistics_);
    return statistics_;
  }

 protected:
  // Starts a pass over rows `part` of a step's global batch: its first mark.
  typename StepTimer<D>::Mark begin_step(const BatchPart& part) {
    const auto start = times_.begin();
    PNN_CHECK(part.count > 0, ArgumentError, "train_step: empty batch");
    PNN_CHECK(part.begin >= 0 && part.begin + part.count <= part.batch, ArgumentError, "train_step: a pass over rows [",
              part.begin, ", ", part.begin + part.count, ") of a batch of ", part.batch, " rows");
    return start;
  }
  // The rank's optimiser for the caller's: the same rule and hyper-parameters (they may change between
  // steps), and its state (momentum, moments) forgotten whenever the caller's was reset(). Type-erased
  // because the rule is known only when train_step is called, not when the rank is built.
  template <class Rule>
  Optimizer<Rule, T, D>& optimizer(const Optimizer<Rule, T, D>& caller) {
    auto* own = std::any_cast<Optimizer<Rule, T, D>>(&optimizer_);
    if (!own) {
      own = &optimizer_.emplace<Optimizer<Rule, T, D>>(caller.rule);
      resets_seen_ = caller.resets();
    }
    if (caller.resets() != resets_seen_) {
      own->reset();
      resets_seen_ = caller.resets();
    }
    own->rule = caller.rule;
    own->clip_norm = caller.clip_norm;
    return *own;
  }
  // The hook between a pass's gradient reduction and the update, the same for every strategy: once the
  // pass's `gradients` (the flat buffer of `parameters`) are complete over the ranks, adds them to the
  // step's earlier passes (gradient accumulation), and after the pass that ends the batch clips them by
  // the whole model's norm and updates. `norm(squares)` gives that norm from this rank's parameters'
  // sums of squares (optim/gradient_clipping.hpp): their global_norm where a rank holds every parameter,
  // a sum over the ranks' parts in the model's order where it holds some. Returns whether it updated.
  template <class Rule, class Norm>
  bool update(const Optimizer<Rule, T, D>& caller, const BatchPart& part, std::span<const Parameter<T, D>> parameters,
              TensorView<T, 1, D> gradients, Norm&& norm) {
    auto& own = optimizer(caller);
    if (!own.accumulate(part, gradients)) return false;
    own.step(parameters, own.clip_norm > 0 ? norm(gradient_squares(parameters)) : 0.0);
    return true;
  }
  // Ends a step: its times, and the bytes this rank has moved so far.
  void end_step(index bytes_communicated) {
    times_.end(statistics_);
    statistics_.steps += 1;
    statistics_.bytes_communicated = bytes_communicated;
  }

  // The state of the rank's optimiser (following the caller's) for the rank's parameters, and the rank's
  // optimiser continuing from a whole model's state (it takes its parameters' part): for checkpoints.
  template <class Rule>
  OptimizerState<T> optimizer_state(const Optimizer<Rule, T, D>& caller, std::span<const Parameter<T, D>> mine) {
    return optimizer(caller).state(mine);
  }
  template <class Rule>
  void set_optimizer_state(const Optimizer<Rule, T, D>& caller, std::span<const Parameter<T, D>> mine,
                           const OptimizerState<T>& whole) {
    optimizer(caller).set_state(mine, whole);
  }

  StepTimer<D> times_;

 private:
  StrategyStatistics statistics_;
  std::any optimizer_;
  index resets_seen_ = 0;
};

// The whole model's optimiser state on every rank, from ranks that each hold the state of some of its
// parameters (collective). `layout` is the whole model's state, for its tensors' names and sizes only.
// Each tensor comes from the lowest rank that holds it: data-parallel replicas hold all of them (the
// same on every rank), pipeline stages their own layers'. It travels by broadcast, not by a sum, so its
// bits (negative zeros included) arrive as they are.
template <class Comm, class T>
OptimizerState<T> gather_optimizer_state(Comm& comm, const OptimizerState<T>& mine, const OptimizerState<T>& layout) {
  using D = typename Comm::device;
  const auto count = static_cast<index>(layout.tensors.size());
  Tensor<double, 1> holders(Extents<1>{count * comm.size()});  // holders[r * count + i]: rank r holds tensor i
  index i = 0;
  for (const auto& entry : layout.tensors) holders[comm.rank() * count + i++] = mine.tensors.count(entry.first);
  comm.all_reduce(holders.view());
  std::vector<int> owner;
  i = 0;
  for (const auto& entry : layout.tensors) {
    int r = 0;
    while (r < comm.size() && holders[r * count + i] == 0) ++r;
    PNN_CHECK(r < comm.size(), Error, "no rank holds the optimiser state \"", entry.first, "\"");
    owner.push_back(r);
    ++i;
  }
  OptimizerState<T> whole{.steps = mine.steps, .tensors = {}};
  for (int root = 0; root < comm.size(); ++root) {
    index total = 0;
    i = 0;
    for (const auto& entry : layout.tensors)
      if (owner[static_cast<std::size_t>(i++)] == root) total += entry.second.size();
    if (total == 0) continue;
    Tensor<T, 1> packed(Extents<1>{total});  // root's tensors back to back
    auto each_owned = [&](auto&& visit) {
      index offset = 0, k = 0;
      for (const auto& entry : layout.tensors) {
        if (owner[static_cast<std::size_t>(k++)] != root) continue;
        visit(entry.first, packed.view().rows(offset, entry.second.size()));
        offset += entry.second.size();
      }
    };
    if (comm.rank() == root)
      each_owned([&](const std::string& name, TensorView<T, 1> part) { copy(mine.tensors.at(name).view(), part); });
    if constexpr (std::is_same_v<D, cpu>) {
      comm.broadcast(packed.view(), root);
    } else {
      Tensor<T, 1, D> on_device(packed.shape());  // the communicators move device memory
      copy(TensorView<const T, 1>(packed.view()), on_device.view());
      comm.broadcast(on_device.view(), root);
      copy(TensorView<const T, 1, D>(on_device.view()), packed.view());
    }
    each_owned([&](const std::string& name, TensorView<T, 1> part) {
      Tensor<T, 1> tensor(part.shape());
      copy(TensorView<const T, 1>(part), tensor.view());
      whole.tensors.insert_or_assign(name, std::move(tensor));
    });
  }
  return whole;
}

// The gradient norm of a whole model from ranks that each hold a run of its parameters, in rank order (a
// pipeline's stages), given each rank's sums of squares of its parameters' gradients (collective). The
// ranks place their sums at their parameters' positions in the model's list, all-reduce the list (each
// position is non-zero on one rank only, so the sum adds zeros and keeps its bits), and add it in the
// model's order: the bits of global_norm over the whole model, which adding per-rank subtotals would not give.
template <class Comm>
double global_norm_over_ranks(Comm& comm, std::span<const double> squares) {
  Tensor<double, 1> counts(Extents<1>{comm.size()});  // zeros
  counts[comm.rank()] = static_cast<double>(squares.size());
  comm.all_reduce(counts.view());
  index first = 0, total = 0;
  for (int r = 0; r < comm.size(); ++r) {
    if (r < comm.rank()) first += static_cast<index>(counts[r]);
    total += static_cast<index>(counts[r]);
  }
  Tensor<double, 1> all(Extents<1>{total});  // zeros
  for (std::size_t i = 0; i < squares.size(); ++i) all[first + static_cast<index>(i)] = squares[i];
  comm.all_reduce(all.view());
  return global_norm(std::span<const double>(all.data(), static_cast<std::size_t>(all.size())));
}

namespace strategy_detail {
// Stand-ins for any update rule and loss in the concept below (declared only: never called).
struct AnyRule {
  static std::string name();
  std::string hyper_parameters() const;
  void validate() const;
  template <class T, class D>
  struct State {
    explicit State(index);
    template <class S, class Visit>
    static void fields(S&, Visit&&);
  };
  template <class T, class D>
  void update(const Parameter<T, D>&, State<T, D>&, index) const;
};
struct AnyLoss {
  template <class T, class D>
  using target_type = TensorView<const T, 2, D>;
};
}  // namespace strategy_detail

template <class R, class Model>
concept StrategyRank =
    requires(R& rank, typename R::communicator& comm, std::uint64_t seed, const DistributedOptions& options,
             TensorView<const typename Model::value_type, 2, typename Model::device> inputs,
             const Optimizer<strategy_detail::AnyRule, typename Model::value_type, typename Model::device>& optimizer,
             Model& whole, const Model& source, index batch, const BatchPart& part, int r) {
      typename R::communicator;
      requires std::constructible_from<R, typename R::communicator&, std::uint64_t, const DistributedOptions&>;
      { R::rows(batch, r, r) } -> std::same_as<BatchRows>;
      {
        rank.train_step(inputs, inputs, part, optimizer, strategy_detail::AnyLoss{})
      } -> std::convertible_to<typename Model::value_type>;
      {
        rank.predict(inputs, batch)
      } -> std::same_as<TensorView<const typename Model::value_type, 2, typename Model::device>>;
      rank.gather(whole);
      rank.scatter(source);
      {
        rank.gather_optimizer_state(optimizer, std::declval<const OptimizerState<typename Model::value_type>&>())
      } -> std::same_as<OptimizerState<typename Model::value_type>>;
      rank.scatter_optimizer_state(optimizer, std::declval<const OptimizerState<typename Model::value_type>&>());
      { rank.statistics() } -> std::convertible_to<const StrategyStatistics&>;
    };

}  // namespace pnn
