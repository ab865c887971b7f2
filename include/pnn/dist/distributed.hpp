// pnn/dist/distributed.hpp: Distributed<Model, Strategy>, a model trained in parallel.
//
//   using Cnn = pnn::Sequential<...>;
//   pnn::Distributed<Cnn, pnn::DataParallel<pnn::Local>> model(seed, {.ranks = 4});
//   pnn::fit(model, optimizer, data.train, &data.test, options);   // as for a serial Cnn
//
// It offers what a serial model offers to the training loop (pnn::train_step, predict, pnn::save,
// pnn::load, pnn::save_checkpoint and pnn::load_checkpoint), so a program changes strategy by changing one type; the
// caller's optimiser behaves as for a serial model (steps() counts the steps, reset() forgets every rank's momentum and
// moments). It holds one runner (dist/rank_threads.hpp): for an in-process communicator (Local, and for GPUs Nccl)
// RankThreads runs one thread per rank inside this object; otherwise (Mpi) ProcessRank runs this process's rank, and
// every process launched by mpirun runs the same program on the same global batches (the same seed gives every rank the
// same data order). Each rank is a Strategy::rank<Model> (dist/strategy_rank.hpp).
//
// Failures: an exception on a rank ends the step on every rank. With Local, train_step then throws on
// the caller's thread a RankFailure naming the rank and the operation; with Mpi, the failing rank prints
// that message and aborts the job (mpirun stops the other ranks).
//
// Batches: each rank is handed only the rows it needs (Rank::rows: a data-parallel rank its share, the
// first pipeline stage the inputs, the last the targets). On the cpu, and with one process per rank,
// those are views of the caller's data; for a device model run by threads, each rank's device receives
// a copy of its rows only, once (pnn::copy orders that copy after the caller's work).
//
// Data per process: rows_held(batch) says which rows of a global batch this process needs, the span of
// its ranks' Rank::rows (the whole batch for an in-process group, whose threads share one batch; under
// Mpi its rank's rows only). fit() and evaluate() (train/fit.hpp) gather only those samples: train_step
// takes either the pass's every row or exactly the rows_held (then with its BatchPart), predict_held
// predicts this process's target rows from its input rows, and sum_over_processes completes evaluate()'s
// loss sums and correct counts over the processes in the canonical tree, so that the split evaluation has
// serial evaluation's bits (for 1, 2, 4 or 8 data-parallel ranks, and any pipeline).
#pragma once

#include <algorithm>
#include <filesystem>
#include <optional>
#include <type_traits>
#include <vector>

#include "pnn/dist/data_parallel.hpp"
#include "pnn/dist/local.hpp"
#include "pnn/dist/pipeline.hpp"
#include "pnn/dist/rank_threads.hpp"
#include "pnn/dist/strategy.hpp"
#include "pnn/dist/strategy_rank.hpp"
#include "pnn/io/checkpoint.hpp"
#include "pnn/io/weights.hpp"

namespace pnn {

template <class Model, class Strategy>
class Distributed;

// pnn::train_step for a distributed model (defined below the class, which befriends it).
template <class Model, class Strategy, class LossFunction, class Rule>
typename Model::value_type train_step(
    Distributed<Model, Strategy>& model, TensorView<const typename Model::value_type, 2, typename Model::device> inputs,
    typename LossFunction::template target_type<typename Model::value_type, typename Model::device> targets,
    Optimizer<Rule, typename Model::value_type, typename Model::device>& optimizer, const LossFunction& loss = {},
    BatchPart part = {});

template <class Model, class Strategy>
class Distributed {
  using Comm = typename Strategy::communicator;
  using Rank = typename Strategy::template rank<Model>;
  static_assert(StrategyRank<Rank, Model>,
                "Distributed<Model, Strategy>: Strategy::rank<Model> must satisfy pnn::StrategyRank "
                "(dist/strategy_rank.hpp): a constructor (communicator&, seed, options), static rows(batch, rank, "
                "ranks), train_step, predict, gather, scatter and statistics");
  using Runner = rank_runner_t<Rank, Comm>;

 public:
  using model_type = Model;
  using strategy_type = Strategy;
  using value_type = typename Model::value_type;
  using device = typename Model::device;
  using input_shape = typename Model::input_shape;
  using output_shape = typename Model::output_shape;
  using T = value_type;
  using D = device;

  explicit Distributed(std::uint64_t seed = 0, DistributedOptions options = {})
      : seed_(seed),
        options_(options),
        runner_(options.ranks, options.communicator, [&](Comm& comm) { return Rank(comm, seed, options_); }) {}

  // Outputs for the inputs, without dropout or batch statistics (every process passes every row and gets
  // every output).
  TensorView<const T, 2, D> predict(TensorView<const T, 2, D> inputs) {
    return predict_on_ranks(inputs, inputs.dim(0));
  }

  // The rows of a global batch of `batch` rows this process needs: the span of its ranks' Rank::rows
  // (every row for an in-process group; under Mpi its own rank's rows).
  BatchRows rows_held(index batch) const {
    BatchRows held = Rank::rows(batch, runner_.first_rank(), ranks());
    for (int local = 1; local < runner_.local_ranks(); ++local) {
      const BatchRows rows = Rank::rows(batch, runner_.first_rank() + local, ranks());
      held.inputs = span_of(held.inputs, rows.inputs);
      held.targets = span_of(held.targets, rows.targets);
    }
    return held;
  }

  // Outputs for this process's target rows (rows_held(batch).targets) of a global batch of `batch` rows,
  // given its input rows (rows_held(batch).inputs): what evaluate() scores here (collective).
  TensorView<const T, 2, D> predict_held(TensorView<const T, 2, D> inputs, index batch) {
    const BatchRows held = rows_held(batch);
    PNN_CHECK(inputs.dim(0) == held.inputs.count, ArgumentError, "predict_held: ", inputs.dim(0),
              " rows of inputs were given; process ", rank(), " holds ", held.inputs.count, " of a batch of ", batch);
    const auto output = predict_on_ranks(inputs, batch);
    // A rank's predict gives the outputs of the rows it was handed, or of the whole batch.
    if (output.dim(0) == batch) return output.rows(held.targets.begin, held.targets.count);
    PNN_CHECK(held.inputs == held.targets && output.dim(0) == held.targets.count, Error,
              "predict_held: the ranks gave ", output.dim(0), " outputs for ", held.inputs.count,
              " input rows of a batch of ", batch);
    return output;
  }

  // Adds up every process's `values` in the canonical tree over the ranks (core/canonical_sum.hpp), so a
  // total made of the processes' subtotals has the bits a serial sum in that tree has (collective).
  void sum_over_processes(TensorView<double, 1> values) { runner_.sum_over_processes("sum_over_processes", values); }

  // The whole model with the current weights (collective: every MPI rank must call it).
  Model gathered() {
    Model whole(seed_);
    runner_.run("gather", [&](Rank& rank, int local) {
      if (local == 0) {
        rank.gather(whole);
      } else {
        Model scratch(seed_);
        rank.gather(scratch);
      }
    });
    return whole;
  }

  // Every rank takes its part of `whole`'s weights (collective, like gathered()).
  void scatter(const Model& whole) {
    runner_.run("load", [&](Rank& rank, int) { rank.scatter(whole); });
  }
  std::uint64_t seed() const { return seed_; }

  // The whole model's optimiser state (io/checkpoint.hpp keeps it), gathered from the ranks' optimisers
  // that follow `caller` (collective, like gathered()); its steps are the caller's.
  template <class Rule>
  OptimizerState<T> gathered_optimizer_state(const Optimizer<Rule, T, D>& caller) {
    const Model whole(seed_);
    const OptimizerState<T> layout = Optimizer<Rule, T, D>(caller.rule).state(whole.parameters());
    OptimizerState<T> result;
    runner_.run("gather the optimizer state", [&](Rank& rank, int local) {
      OptimizerState<T> state = rank.gather_optimizer_state(caller, layout);
      if (local == 0) result = std::move(state);
    });
    result.steps = caller.steps();
    return result;
  }
  // Every rank's optimiser continues from its part of `whole`, a whole model's state, and the caller's
  // steps() from its step count (collective, like scatter()).
  template <class Rule>
  void scatter_optimizer_state(Optimizer<Rule, T, D>& caller, const OptimizerState<T>& whole) {
    caller.set_state({}, OptimizerState<T>{.steps = whole.steps, .tensors = {}});  // the ranks hold the tensors
    runner_.run("load the optimizer state", [&](Rank& rank, int) { rank.scatter_optimizer_state(caller, whole); });
  }

  // True on the rank that prints and writes files (rank 0 with Mpi; always with Local).
  bool is_primary() const { return runner_.first_rank() == 0; }
  // The ranks of the group, and this process's first one (0 for an in-process group).
  int ranks() const { return runner_.size(); }
  int rank() const { return runner_.first_rank(); }
  static std::string summary() { return Model::summary(); }
  // The trainable parameters, counted from the model's declarations (no model is built).
  static index parameter_count() {
    ParameterDeclarations declarations;
    Model::Stack::declare(declarations);
    return declarations.trainable_size();
  }

  // Per-rank statistics (with Mpi, this rank's only).
  std::vector<StrategyStatistics> statistics() {
    std::vector<StrategyStatistics> result;
    for (int local = 0; local < runner_.local_ranks(); ++local) result.push_back(runner_.rank(local).statistics());
    return result;
  }
  // The strategy rank run by this process as its `local`-th (with Mpi, this process's only rank).
  Rank& strategy_rank(int local = 0) { return runner_.rank(local); }

 private:
  template <class M, class S, class L, class R>
  friend typename M::value_type train_step(Distributed<M, S>&,
                                           TensorView<const typename M::value_type, 2, typename M::device>,
                                           typename L::template target_type<typename M::value_type, typename M::device>,
                                           Optimizer<R, typename M::value_type, typename M::device>&, const L&,
                                           BatchPart);

  // One pass over rows `part` of a step's global batch, updating when it ends the batch: pnn::train_step's.
  // `inputs` and `targets` each hold the pass's every row, or only the rows this process holds
  // (rows_held(part.count), as fit() passes them); with the latter, `part` must be given.
  template <class LossFunction, class Rule>
  T step(TensorView<const T, 2, D> inputs, typename LossFunction::template target_type<T, D> targets,
         Optimizer<Rule, T, D>& optimizer, const LossFunction& loss, BatchPart part) {
    if (part.batch == 0) part = BatchPart::whole(inputs.dim(0));
    const index batch = part.count;
    const BatchRows mine = rows_held(batch);
    const RowRange input_rows = rows_given(inputs.dim(0), batch, mine.inputs, "inputs");
    const RowRange target_rows = rows_given(targets.dim(0), batch, mine.targets, "targets");
    const auto local_inputs =
        for_each_rank(inputs, [&](int rank) { return within(Rank::rows(batch, rank, ranks()).inputs, input_rows); });
    const auto local_targets =
        for_each_rank(targets, [&](int rank) { return within(Rank::rows(batch, rank, ranks()).targets, target_rows); });
    T result{};
    runner_.run("train_step", [&](Rank& rank, int local) {
      const auto i = static_cast<std::size_t>(local);
      const T value = rank.train_step(local_inputs[i]->view(), local_targets[i]->view(), part, optimizer, loss);
      if (local == 0) result = value;
    });
    if (part.begin + part.count == part.batch) optimizer.count_step();  // the ranks updated
    return result;
  }

  // Every rank handed every row of `inputs` (a batch of `batch` rows), or, under Mpi, this process's
  // rows; local rank 0's outputs (a rank's predict gives the outputs of the rows handed, or of all rows).
  TensorView<const T, 2, D> predict_on_ranks(TensorView<const T, 2, D> inputs, index batch) {
    TensorView<const T, 2, D> result;
    const auto local_inputs = for_each_rank(inputs, [&](int) { return RowRange{0, inputs.dim(0)}; });
    runner_.run("predict", [&](Rank& rank, int local) {
      const auto output = rank.predict(local_inputs[static_cast<std::size_t>(local)]->view(), batch);
      if (local == 0) result.rebind(output);
    });
    return result;
  }

  // The smallest run of rows holding both (an empty one holds nothing).
  static RowRange span_of(RowRange a, RowRange b) {
    if (b.count == 0) return a;
    if (a.count == 0) return b;
    const index begin = std::min(a.begin, b.begin);
    return {begin, std::max(a.end(), b.end()) - begin};
  }
  // Which rows of a pass over `batch` rows the caller's `given` rows are: all of them, or this process's.
  static RowRange rows_given(index given, index batch, RowRange mine, const char* what) {
    if (given == batch) return {0, batch};
    PNN_CHECK(given == mine.count, ArgumentError, "train_step: ", given, " rows of ", what,
              " were given for a pass over ", batch, " rows; pass all ", batch, " or the ", mine.count,
              " this process holds (rows_held)");
    return mine;
  }
  // A rank's `rows` of the batch as rows of `held`, the rows the caller gave.
  static RowRange within(RowRange rows, RowRange held) {
    if (rows.count == 0) return {0, 0};
    PNN_CHECK(rows.begin >= held.begin && rows.end() <= held.end(), Error, "Distributed: a rank needs rows [",
              rows.begin, ", ", rows.end(), ") but the process holds [", held.begin, ", ", held.end(), ")");
    return {rows.begin - held.begin, rows.count};
  }

  // For every rank of this process (indexed by `local`), the rows which(rank) of `data` as that rank may
  // use them (on_this_rank). The copies to the ranks' devices are made in a pass of their own, before any
  // rank enqueues the operation's work: a copy between devices orders the source's stream (the caller's
  // device, which is rank 0's) after it, and once rank 0 has enqueued a wait on communication with a
  // rank, that rank's copy would wait on itself.
  template <class V, class Which>
  auto for_each_rank(const V& data, Which which) {
    std::vector<std::optional<decltype(on_this_rank(data))>> parts(static_cast<std::size_t>(runner_.local_ranks()));
    auto part = [&](int local) {
      const RowRange rows = which(runner_.first_rank() + local);
      parts[static_cast<std::size_t>(local)].emplace(on_this_rank(data.rows(rows.begin, rows.count)));
    };
    if constexpr (copies_to_rank_devices)
      runner_.run("copying the batch to each rank's device", [&](Rank&, int local) { part(local); });
    else
      for (int local = 0; local < runner_.local_ranks(); ++local) part(local);
    return parts;
  }

  static constexpr bool copies_to_rank_devices = Runner::ranks_have_own_devices && !std::is_same_v<D, cpu>;

  // The caller's rows as a rank may use them: on the cpu (and with one process per rank) the rows
  // themselves; for a device model run by threads, a copy on the rank's own device, where its kernels can
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
    if constexpr (!copies_to_rank_devices) {
      return Same{data};
    } else {
      Copied local{Tensor<Element, V::rank, D>(data.shape())};
      if (data.size() > 0) copy(data, local.data.view());
      return local;
    }
  }

  std::uint64_t seed_;
  DistributedOptions options_;
  Runner runner_;
};

}  // namespace pnn

namespace pnn {

// The free functions a training program calls for a serial model (train/train_step.hpp, io/weights.hpp),
// for a distributed one: fit() and the examples are written once for both.
template <class Model, class Strategy, class LossFunction, class Rule>
typename Model::value_type train_step(
    Distributed<Model, Strategy>& model, TensorView<const typename Model::value_type, 2, typename Model::device> inputs,
    typename LossFunction::template target_type<typename Model::value_type, typename Model::device> targets,
    Optimizer<Rule, typename Model::value_type, typename Model::device>& optimizer, const LossFunction& loss,
    BatchPart part) {
  return model.step(inputs, targets, optimizer, loss, part);
}

// Writes the weights in the serial model's format; only rank 0 writes (collective: every MPI rank calls it).
template <class Model, class Strategy>
void save(Distributed<Model, Strategy>& model, const std::filesystem::path& path) {
  Model whole = model.gathered();
  if (model.is_primary()) save(whole, path);
}
// Reads weights saved by a serial or a distributed model.
template <class Model, class Strategy>
void load(Distributed<Model, Strategy>& model, const std::filesystem::path& path) {
  Model whole(model.seed());
  load(whole, path);
  model.scatter(whole);
}

// A checkpoint of a distributed model is the serial model's (io/checkpoint.hpp), with the whole model's
// weights and optimiser state, so a run resumes under any strategy and number of ranks. Only rank 0
// writes (collective: every MPI rank calls it).
template <class Model, class Strategy, class Rule>
void save_checkpoint(Distributed<Model, Strategy>& model,
                     const Optimizer<Rule, typename Model::value_type, typename Model::device>& optimizer,
                     const TrainingPosition& position, const std::filesystem::path& path) {
  const Model whole = model.gathered();
  const auto state = model.gathered_optimizer_state(optimizer);
  if (!model.is_primary()) return;
  Optimizer<Rule, typename Model::value_type, typename Model::device> serial(optimizer.rule);
  serial.set_state(whole.parameters(), state);
  save_checkpoint(whole, serial, position, path);
}
// Resumes from a checkpoint written by a serial or a distributed model; every MPI rank reads the file.
// Everything is checked (on a serial model) before any rank changes.
template <class Model, class Strategy, class Rule>
TrainingPosition load_checkpoint(Distributed<Model, Strategy>& model,
                                 Optimizer<Rule, typename Model::value_type, typename Model::device>& optimizer,
                                 const std::filesystem::path& path) {
  Model whole(model.seed());
  Optimizer<Rule, typename Model::value_type, typename Model::device> serial(optimizer.rule);
  const TrainingPosition position = load_checkpoint(whole, serial, path);
  model.scatter_optimizer_state(optimizer, serial.state(whole.parameters()));
  model.scatter(whole);
  return position;
}

}  // namespace pnn
