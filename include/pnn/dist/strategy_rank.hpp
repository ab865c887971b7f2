// pnn/dist/strategy_rank.hpp: what a strategy rank is, and the parts every strategy rank shares.
//
// A strategy (DataParallel, Pipeline, ...) names the type of its ranks with a member alias
// `template <class Model> using rank = ...`; Distributed runs one such rank per rank of the
// communicator. The StrategyRank concept says what a rank type provides:
//   R(comm, seed, options)                    built on its own thread (collectively with the others)
//   R::rows(batch, rank, ranks)               which rows of a global batch of `batch` rows this rank
//                                             needs: Distributed hands it exactly those (BatchRows)
//   train_step(inputs, targets, batch, optimizer, loss)   one step on its rows of the global batch;
//                                             returns the global mean loss
//   predict(inputs), gather(model), scatter(model), statistics()
// The shared parts are written once here: batch_share (the row formula of data-parallel shares and
// pipeline micro-batches), and RankBookkeeping (the rank's own optimiser following the caller's, the
// step timing and the end-of-step statistics).
#pragma once

#include <any>
#include <concepts>
#include <cstdint>
#include <string>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/dist/strategy.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

// Rows [begin, begin + count) of a batch.
struct RowRange {
  index begin = 0, count = 0;
};

// Part `part` of `parts` of a batch of `batch` rows: rows [batch part / parts, batch (part + 1) / parts).
// Parts differ by at most one row, and a part may be empty.
constexpr RowRange batch_share(index batch, index part, index parts) {
  const index begin = batch * part / parts;
  return {begin, batch * (part + 1) / parts - begin};
}

// The rows of the global batch's inputs and targets a rank needs (Distributed gives it those only).
struct BatchRows {
  RowRange inputs, targets;
};

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
  // Starts a step on a global batch of `batch` rows: its first mark.
  typename StepTimer<D>::Mark begin_step(index batch) {
    const auto start = times_.begin();
    PNN_CHECK(batch > 0, ArgumentError, "train_step: empty batch");
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
    return *own;
  }
  // Ends a step: its times, and the bytes this rank has moved so far.
  void end_step(index bytes_communicated) {
    times_.end(statistics_);
    statistics_.steps += 1;
    statistics_.bytes_communicated = bytes_communicated;
  }

  StepTimer<D> times_;

 private:
  StrategyStatistics statistics_;
  std::any optimizer_;
  index resets_seen_ = 0;
};

namespace strategy_detail {
// Stand-ins for any update rule and loss in the concept below (declared only: never called).
struct AnyRule {
  static std::string name();
  void validate() const;
  template <class T, class D>
  struct State {
    explicit State(index);
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
             Model& whole, const Model& source, index batch, int r) {
      typename R::communicator;
      requires std::constructible_from<R, typename R::communicator&, std::uint64_t, const DistributedOptions&>;
      { R::rows(batch, r, r) } -> std::same_as<BatchRows>;
      {
        rank.train_step(inputs, inputs, batch, optimizer, strategy_detail::AnyLoss{})
      } -> std::convertible_to<typename Model::value_type>;
      { rank.predict(inputs) } -> std::same_as<TensorView<const typename Model::value_type, 2, typename Model::device>>;
      rank.gather(whole);
      rank.scatter(source);
      { rank.statistics() } -> std::convertible_to<const StrategyStatistics&>;
    };

}  // namespace pnn
