// pnn/dist/data_parallel.hpp: one rank of data-parallel training (DataParallel<Comm>).
//
// Every rank holds a replica of the whole model. At start the ranks check that they built the same
// architecture, take rank 0's weights, and check that the values agree. Each step a rank is handed its
// share of the global batch, rows(B, r, p) = batch_share: rows [B r / p, B (r + 1) / p) of inputs and
// targets (shares differ by at most one sample, and a rank may have none), computes the mean-loss
// gradient of its share, and the ranks sum their gradients. Distributed slices (or, for a GPU rank,
// copies) those rows only, so a rank's device never holds the rest of the batch; under Mpi the process
// gathers only its share's samples (fit(), evaluate()), and evaluate() predicts each rank's share.
//
// Exactness: every sum over the batch follows the canonical tree of core/batch_sum.hpp. The loss scales
// each row's gradient by 1 / B itself (loss/loss.hpp), a rank's layers sum its rows as the subtree of its
// chunks, and the gradients, the loss and BatchNorm's statistics (through Context::across) are completed
// over the ranks by all_reduce_canonical, the tree's upper levels. With p dividing batch_chunks (1, 2, 4
// or 8 ranks) the result is serial training's, bit for bit, for any batch size; with other p a rank's
// share cuts chunks, and the sums keep one fixed order of their own (equal to serial up to rounding).
// Gradient accumulation (a step's batch in k passes) reduces each pass, a subtree when k p divides
// batch_chunks, and adds the passes in the tree's upper levels (optim/gradient_accumulation.hpp).
//
// Overlap: gradients are reduced in buckets of contiguous layers (DistributedOptions::bucket_bytes).
// Backward runs from the last layer to the first; as soon as the lowest layer of a bucket has its
// gradients, the bucket's all-reduce starts asynchronously while backward continues below it.
#pragma once

#include <vector>

#include "pnn/dist/communicator.hpp"
#include "pnn/dist/model_signature.hpp"
#include "pnn/dist/strategy.hpp"
#include "pnn/dist/strategy_rank.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

template <class Model, class Comm>
class DataParallelRank : public RankBookkeeping<typename Model::value_type, typename Model::device> {
 public:
  using T = typename Model::value_type;
  using D = typename Model::device;
  using communicator = Comm;

  DataParallelRank(Comm& comm, std::uint64_t seed, const DistributedOptions& options)
      : comm_(comm), model_(seed), options_(options), across_(comm) {
    require_equal_across_ranks(comm_, architecture_hash(model_), "model architecture");
    comm_.broadcast(model_.parameter_values(), 0);
    if (model_.buffer_values().size() > 0) comm_.broadcast(model_.buffer_values(), 0);
    require_equal_across_ranks(comm_, value_hash(model_), "initial weights");
    build_buckets();
  }

  // Rank r of p needs its share of the inputs and of the targets.
  static BatchRows rows(index batch, int rank, int ranks) {
    const RowRange share = batch_share(batch, rank, ranks);
    return {share, share};
  }

  // One pass over rows `part` of a step's global batch (the whole batch, unless the step accumulates
  // gradients over passes); `x` and `y` are this rank's rows(part.count, rank, ranks) of the pass's rows.
  // Returns the mean loss of the pass's rows; the pass that ends the batch updates the weights.
  template <class Rule, class LossFunction>
  T train_step(TensorView<const T, 2, D> x, typename LossFunction::template target_type<T, D> y, const BatchPart& part,
               const Optimizer<Rule, T, D>& caller, const LossFunction& loss) {
    const auto step_start = this->begin_step(part);
    const index count = x.dim(0);
    // This rank's samples are rows [first, first + share.count) of the step's global batch.
    const RowRange share = batch_share(part.count, comm_.rank(), comm_.size());
    const index first = part.begin + share.begin;
    PNN_CHECK(count == share.count, ArgumentError, "train_step: rank ", comm_.rank(), " was handed ", count,
              " rows of a batch of ", part.count, " instead of its share");

    model_.zero_grad();
    const auto output = model_.forward(
        x, trace_, true, PassKey{static_cast<std::uint64_t>(caller.steps()), first, part.batch, &across_});
    trace_.output_gradient.resize(output.shape());
    const double local_loss =
        count > 0 ? loss.sum(output, y, trace_.output_gradient.view(), BatchPart{part.batch, first, count}) : 0.0;

    requests_.clear();
    std::size_t next_bucket = 0;
    typename StepTimer<D>::Mark first_reduction{};
    auto start_ready_buckets = [&](std::size_t finished_layer) {
      for (auto& request : requests_) request.ready();  // lets MPI progress the reductions in flight
      while (next_bucket < buckets_.size() && buckets_[next_bucket].lowest_layer == finished_layer) {
        if (next_bucket == 0) first_reduction = this->times_.mark();
        const Bucket& bucket = buckets_[next_bucket++];
        requests_.push_back(comm_.all_reduce_canonical_async(
            model_.parameter_gradients().rows(bucket.begin, bucket.end - bucket.begin)));
        bytes_ += (bucket.end - bucket.begin) * static_cast<index>(sizeof(T));
      }
    };
    if (options_.overlap) {
      model_.backward(trace_.output_gradient.view(), TensorView<T, 2, D>{}, trace_, start_ready_buckets);
    } else {
      model_.backward(trace_.output_gradient.view(), TensorView<T, 2, D>{}, trace_);
      for (std::size_t layer = Model::layer_count; layer-- > 0;) start_ready_buckets(layer);
    }
    const auto backward_end = this->times_.mark();
    for (auto& request : requests_) request.wait();
    const auto reduced = this->times_.mark();  // on a GPU: once the compute stream has waited for them

    Tensor<double, 1> total_loss(Extents<1>{1});
    total_loss[0] = local_loss;
    comm_.all_reduce_canonical(total_loss.view());
    // Every replica holds the whole reduced gradient: its own norm is the model's.
    this->update(caller, part, model_.parameters(), model_.parameter_gradients(),
                 [](const std::vector<double>& squares) { return global_norm(squares); });

    // Statistics: reductions were in flight from the first bucket's start until `reduced`; the part
    // after backward ended was exposed, the rest hidden behind backward.
    this->times_.add(&StrategyStatistics::compute_seconds, step_start, backward_end);
    this->times_.add(&StrategyStatistics::exposed_seconds, backward_end, reduced);
    if (!buckets_.empty()) this->times_.add(&StrategyStatistics::communication_seconds, first_reduction, reduced);
    this->end_step(bytes_);
    return static_cast<T>(total_loss[0] / static_cast<double>(part.count));
  }

  // Every replica is the whole model: it predicts the rows it is handed (its share, or all of them), with
  // no communication.
  TensorView<const T, 2, D> predict(TensorView<const T, 2, D> inputs, index /*batch*/) {
    return model_.predict(inputs);
  }

  // Copies the whole model (this rank's replica) into `full`. Collective for symmetry with pipelines.
  void gather(Model& full) const { full = model_; }
  void scatter(const Model& full) {
    model_ = full;
    require_equal_across_ranks(comm_, value_hash(model_), "loaded weights");
  }

  Model& replica() { return model_; }
  index buckets() const { return static_cast<index>(buckets_.size()); }

 private:
  struct Bucket {
    std::size_t lowest_layer;  // the bucket is ready once this layer's backward is done
    index begin, end;          // range of the flat gradient buffer
  };

  // Buckets of consecutive layers, from the last layer down, each at least bucket_bytes (but the last).
  void build_buckets() {
    const auto& ranges = model_.layer_gradient_ranges();
    Bucket current{0, 0, 0};
    bool open = false;
    for (std::size_t layer = ranges.size(); layer-- > 0;) {
      const auto [begin, end] = ranges[layer];
      if (end == begin) continue;
      if (!open) current = Bucket{layer, begin, end}, open = true;
      current.lowest_layer = layer;
      current.begin = begin;
      if ((current.end - current.begin) * static_cast<index>(sizeof(T)) >= options_.bucket_bytes) {
        buckets_.push_back(current);
        open = false;
      }
    }
    if (open) buckets_.push_back(current);
  }

  // Completes BatchNorm's statistics over the ranks, in the canonical tree like the gradients.
  class CanonicalAcross final : public BatchReduction {
   public:
    explicit CanonicalAcross(Comm& comm) : comm_(comm) {}
    void sum(TensorView<float, 1, cpu> sums) const override { reduce(sums); }
    void sum(TensorView<double, 1, cpu> sums) const override { reduce(sums); }
    void sum(TensorView<float, 1, cuda> sums) const override { reduce(sums); }
    void sum(TensorView<double, 1, cuda> sums) const override { reduce(sums); }

   private:
    template <class View>
    void reduce(View sums) const {
      if constexpr (requires { comm_.all_reduce_canonical(sums); }) comm_.all_reduce_canonical(sums);
      else
        throw ArgumentError(detail::concat("data parallelism: the communicator cannot sum BatchNorm statistics on ",
                                           View::device::name));
    }
    Comm& comm_;
  };

  Comm& comm_;
  Model model_;
  DistributedOptions options_;
  CanonicalAcross across_;
  typename Model::Trace trace_;
  std::vector<Bucket> buckets_;
  std::vector<typename Comm::Request> requests_;
  index bytes_ = 0;

 public:
  // The whole model's optimiser state for a checkpoint (every replica holds it), and this replica's
  // optimiser continuing from one (collective, as gather).
  template <class Rule>
  OptimizerState<T> gather_optimizer_state(const Optimizer<Rule, T, D>& caller, const OptimizerState<T>& layout) {
    return pnn::gather_optimizer_state(comm_, this->optimizer_state(caller, model_.parameters()), layout);
  }
  template <class Rule>
  void scatter_optimizer_state(const Optimizer<Rule, T, D>& caller, const OptimizerState<T>& whole) {
    this->set_optimizer_state(caller, model_.parameters(), whole);
  }
};

}  // namespace pnn
