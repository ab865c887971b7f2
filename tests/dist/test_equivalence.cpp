// Every strategy against serial training, with the Local communicator (threads): bit for bit wherever the
// layout keeps the batch's 8 chunks whole (1, 2, 4 ranks; 1, 2, 4, 8 micro-batches; any stages), to rounding
// otherwise (3 ranks).
#include "equivalence.hpp"
#include "support/random_dataset.hpp"

using namespace pnn;
using testing::check_equivalence;
using testing::Expect;

namespace {
using Mlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 5 layers
// Dropout in two places, one of them inside a residual block: every rank and micro-batch must drop the
// units serial training drops for the same sample.
using DropoutMlp = Sequential<Input<12>, Dense<10>, Dropout<30>, Tanh, Residual<Dense<10>, ReLU, Dropout<20>>, Dense<8>,
                              ReLU, Dense<4>>;  // 7 layers
// BatchNorm in the main path and inside a residual block.
using BatchNormMlp =
    Sequential<Input<12>, Dense<10>, BatchNorm<>, ReLU, Residual<Dense<10>, BatchNorm<>, Tanh>, Dense<4>>;  // 5 layers
// Convolutions, pooling and ReLU, which turn a last-bit difference into another path: a small CNN, and a
// small ResNet with BatchNorm in its residual blocks.
using Cnn = Sequential<Input<1, 6, 2>, Conv2D<4, 3, Pad<1>>, ReLU, MaxPool2D<2>, Flatten, Dense<8>, ReLU, Dense<4>>;
using ResNet = Sequential<Input<1, 6, 2>, Conv2D<4, 3, Pad<1>>, BatchNorm<>, ReLU,
                          Residual<Conv2D<4, 3, Pad<1>>, BatchNorm<>, ReLU, Conv2D<4, 3, Pad<1>>, BatchNorm<>>, ReLU,
                          Flatten, Dense<4>>;

Expect expected_for(int ranks) { return batch_chunks % ranks == 0 ? Expect::bitwise : Expect::close; }
}  // namespace

TEST_CASE("data_parallel.equals_serial_training") {
  // 37 samples in batches of 10: the last batch has 7; 10 rows do not divide among 3 or 4 ranks.
  for (int ranks : {1, 2, 3, 4}) {
    CAPTURE(ranks);
    check_equivalence<Mlp, DataParallel<Local>>({.ranks = ranks}, expected_for(ranks));
  }
  // Tiny buckets (one per layer) and no overlap give the same weights.
  check_equivalence<Mlp, DataParallel<Local>>({.ranks = 2, .bucket_bytes = 1});
  check_equivalence<Mlp, DataParallel<Local>>({.ranks = 4, .overlap = false});
  // More ranks than samples in a batch: some ranks get none.
  check_equivalence<Mlp, DataParallel<Local>>({.ranks = 4}, Expect::bitwise, /*batch=*/3, /*steps=*/3);
  // 8 ranks: one chunk each.
  check_equivalence<Mlp, DataParallel<Local>>({.ranks = 8}, Expect::bitwise, /*batch=*/16);
}

TEST_CASE("data_parallel.bit_for_bit_on_convolutions_batch_norm_and_every_optimiser") {
  // 36 samples in batches of 12 over 10 steps, long enough for ReLU and max-pooling to turn any last-bit
  // difference into another path.
  for (int ranks : {2, 4}) {
    CAPTURE(ranks);
    check_equivalence<Cnn, DataParallel<Local>>({.ranks = ranks}, Expect::bitwise, 12, 10, 36);
    check_equivalence<ResNet, DataParallel<Local>>({.ranks = ranks}, Expect::bitwise, 12, 10, 36);
    check_equivalence<BatchNormMlp, DataParallel<Local>>({.ranks = ranks});
    check_equivalence<Cnn, DataParallel<Local>, Adam>({.ranks = ranks});
    check_equivalence<BatchNormMlp, DataParallel<Local>, LARS>({.ranks = ranks});
  }
  // 3 ranks cut chunks: BatchNorm's statistics are still the whole batch's, to rounding.
  check_equivalence<ResNet, DataParallel<Local>>({.ranks = 3}, Expect::close);
}

TEST_CASE("dropout.every_strategy_drops_what_serial_training_drops") {
  // Masks belong to samples (the seed, the step, the layer and the sample's place in the global batch),
  // not to replicas or micro-batches: with a per-replica stream, 2 ranks differed by 0.06 after 3 steps.
  for (int ranks : {1, 2, 3, 4}) {
    CAPTURE(ranks);
    check_equivalence<DropoutMlp, DataParallel<Local>>({.ranks = ranks}, expected_for(ranks));
  }
  check_equivalence<DropoutMlp, ModelParallel<Split<3>>>({.ranks = 2});
  check_equivalence<DropoutMlp, Pipeline<Split<2, 4>, Microbatches<4>, GPipe>>({.ranks = 3});
  check_equivalence<DropoutMlp, Pipeline<Split<3>, Microbatches<8>, OneFOneB>>({.ranks = 2});
}

TEST_CASE("batch_norm.whole_batch_statistics_unless_a_pipeline_opts_out") {
  // Layer partitioning computes every stage on the whole batch: BatchNorm's statistics are serial training's.
  check_equivalence<BatchNormMlp, ModelParallel<Split<2>>>({.ranks = 2});
  check_equivalence<BatchNormMlp, ModelParallel<Split<1, 3>>>({.ranks = 3});
  check_equivalence<ResNet, ModelParallel<Split<4>>>({.ranks = 2}, Expect::bitwise, 12, 10, 36);
  // Micro-batches normalised alone are another model (tests/compile_fail/pipeline_over_batch_norm.cpp
  // shows that it needs the opt-in): it trains, and its weights leave serial training's.
  const auto data = testing::synthetic_data(40, 12, 4);  // micro-batches of 5: BatchNorm needs 2 or more
  BatchNormMlp serial(11);
  Optimizer<SGD> serial_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  testing::train(serial, serial_optimizer, data, 10, 4);
  Distributed<BatchNormMlp, Pipeline<Split<2>, Microbatches<2, StatisticsPerMicrobatch>, GPipe>> pipeline(11,
                                                                                                          {.ranks = 2});
  Optimizer<SGD> pipeline_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  const auto losses = testing::train(pipeline, pipeline_optimizer, data, 10, 4);
  for (float loss : losses) CHECK(std::isfinite(loss));
  CHECK(testing::relative_difference(serial, pipeline.gathered()) > 1e-3);
}

TEST_CASE("model_parallel.equals_serial_training") {
  check_equivalence<Mlp, ModelParallel<Split<2>>>({.ranks = 2});
  check_equivalence<Mlp, ModelParallel<Split<2, 4>>>({.ranks = 3});
  check_equivalence<Mlp, ModelParallel<Split<1, 2, 3, 4>>>({.ranks = 5});
}

TEST_CASE("pipeline.equals_serial_training") {
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<1>, GPipe>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<2>, GPipe>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<2>, OneFOneB>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, GPipe>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<8>, GPipe>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<1>, OneFOneB>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, OneFOneB>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<8>, OneFOneB>>({.ranks = 2});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<1>, GPipe>>({.ranks = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<4>, GPipe>>({.ranks = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, GPipe>>({.ranks = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<1>, OneFOneB>>({.ranks = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB>>({.ranks = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, OneFOneB>>({.ranks = 3});
  // Convolutions and pooling, over more steps; and another optimiser.
  check_equivalence<Cnn, Pipeline<Split<3>, Microbatches<2>, GPipe>>({.ranks = 2}, Expect::bitwise, 12, 10, 36);
  check_equivalence<Cnn, Pipeline<Split<2, 5>, Microbatches<4>, OneFOneB>>({.ranks = 3}, Expect::bitwise, 12, 10, 36);
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, GPipe>, Adam>({.ranks = 2});
  // 3 micro-batches cut chunks: to rounding.
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<3>, OneFOneB>>({.ranks = 2}, Expect::close);
}

TEST_CASE("pipeline.one_f_one_b_bounds_live_activations") {
  const auto data = testing::synthetic_data(16, 12, 4);
  Optimizer<SGD> optimizer;
  Distributed<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, OneFOneB>> one_f_one_b(1, {.ranks = 3});
  testing::train(one_f_one_b, optimizer, data, 16, 1);
  for (int stage = 0; stage < 3; ++stage) {
    CAPTURE(stage);
    CHECK(one_f_one_b.strategy_rank(stage).max_live_microbatches() == 3 - stage);  // at most (stages - stage)
  }
  Distributed<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, GPipe>> gpipe(1, {.ranks = 3});
  testing::train(gpipe, optimizer, data, 16, 1);
  for (int stage = 0; stage < 3; ++stage) CHECK(gpipe.strategy_rank(stage).max_live_microbatches() == 8);
}

TEST_CASE("distributed.predict_and_save_match_serial") {
  const auto data = testing::synthetic_data(20, 12, 4);
  Distributed<Mlp, Pipeline<Split<2, 4>, Microbatches<2>, OneFOneB>> pipeline(5, {.ranks = 3});
  Optimizer<SGD> optimizer({.learning_rate = 0.1});
  testing::train(pipeline, optimizer, data, 10, 2);
  Mlp whole = pipeline.gathered();
  const auto expected = whole.predict(data.inputs.view());
  const auto actual = pipeline.predict(data.inputs.view());
  REQUIRE(actual.shape() == expected.shape());
  for (pnn::index i = 0; i < actual.size(); ++i) REQUIRE(actual.data()[i] == doctest::Approx(expected.data()[i]));
}

namespace {
// Trains serially and with Strategy, resets both optimisers, trains on: the weights agree as in
// check_equivalence, and the caller's optimiser counts Distributed's steps as a serial model's.
template <class Strategy>
void check_optimizer_bookkeeping(const DistributedOptions& options) {
  const auto data = testing::synthetic_data(37, Mlp::input_shape::size, Mlp::output_shape::size);
  Mlp serial(11);
  Distributed<Mlp, Strategy> parallel(11, options);
  Optimizer<SGD> serial_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  Optimizer<SGD> parallel_optimizer({.learning_rate = 0.1, .momentum = 0.9});
  testing::train(serial, serial_optimizer, data, 10, 3);
  testing::train(parallel, parallel_optimizer, data, 10, 3);
  CHECK(parallel_optimizer.steps() == 3);
  CHECK(parallel_optimizer.steps() == serial_optimizer.steps());
  // Momentum forgotten on every rank, as serially: training on differs otherwise.
  serial_optimizer.reset();
  parallel_optimizer.reset();
  CHECK(parallel_optimizer.steps() == 0);
  testing::train(serial, serial_optimizer, data, 10, 2);
  testing::train(parallel, parallel_optimizer, data, 10, 2);
  CHECK(parallel_optimizer.steps() == 2);
  const double difference = testing::relative_difference(serial, parallel.gathered());
  INFO("relative weight difference to serial training: " << difference);
  CHECK(difference <= 1e-5);
}

// Every forward first, then every backward in the order of the forwards: neither GPipe nor 1F1B, and
// accepted by Pipeline<> because it provides what PipelineSchedule asks for.
struct ForwardsThenBackwardsInOrder {
  static constexpr const char* name = "forwards, then backwards in order";
  static std::vector<Operation> order(int, int, pnn::index microbatches) {
    std::vector<Operation> order;
    for (pnn::index j = 0; j < microbatches; ++j) order.push_back({Pass::forward, j});
    for (pnn::index j = 0; j < microbatches; ++j) order.push_back({Pass::backward, j});
    return order;
  }
};
static_assert(PipelineSchedule<ForwardsThenBackwardsInOrder>);
}  // namespace

TEST_CASE("distributed.optimizer_steps_and_reset_as_serial") {
  SUBCASE("data parallel") { check_optimizer_bookkeeping<DataParallel<Local>>({.ranks = 3}); }
  SUBCASE("pipeline") { check_optimizer_bookkeeping<Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB>>({.ranks = 3}); }
}

TEST_CASE("pipeline.schedules_are_policies") {
  // The orders the built-in schedules produce: stage 0 of 3 with 4 micro-batches.
  auto text = [](const std::vector<Operation>& order) {
    std::string result;
    for (const Operation& op : order) {
      result += op.pass == Pass::forward ? 'F' : 'B';
      result += std::to_string(op.microbatch) + " ";
    }
    return result;
  };
  CHECK(text(GPipe::order(0, 3, 4)) == "F0 F1 F2 F3 B3 B2 B1 B0 ");
  CHECK(text(OneFOneB::order(0, 3, 4)) == "F0 F1 F2 B0 F3 B1 B2 B3 ");
  CHECK(text(OneFOneB::order(2, 3, 4)) == "F0 B0 F1 B1 F2 B2 F3 B3 ");
  // A schedule written outside the library is one struct.
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<4>, ForwardsThenBackwardsInOrder>>({.ranks = 3});
}

TEST_CASE("distributed.ranks_are_handed_only_their_rows") {
  // Data parallel: rank r of p gets rows [B r / p, B (r + 1) / p) of inputs and of targets.
  using DataParallelMlp = DataParallel<Local>::rank<Mlp>;
  const BatchRows middle = DataParallelMlp::rows(10, 1, 3);
  CHECK(middle.inputs.begin == 3);
  CHECK(middle.inputs.count == 3);
  CHECK(middle.targets.begin == 3);
  CHECK(middle.targets.count == 3);
  CHECK(DataParallelMlp::rows(10, 2, 3).inputs.count == 4);
  CHECK(DataParallelMlp::rows(2, 0, 4).inputs.count == 0);  // more ranks than rows: some get none
  // Pipeline: the first stage reads the inputs, the last the targets, the one between neither.
  using Stage = Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB>::rank<Mlp>;
  CHECK(Stage::rows(10, 0, 3).inputs.count == 10);
  CHECK(Stage::rows(10, 0, 3).targets.count == 0);
  CHECK(Stage::rows(10, 1, 3).inputs.count == 0);
  CHECK(Stage::rows(10, 1, 3).targets.count == 0);
  CHECK(Stage::rows(10, 2, 3).inputs.count == 0);
  CHECK(Stage::rows(10, 2, 3).targets.count == 10);
}

TEST_CASE("distributed.parameter_count_without_a_model") {
  CHECK(Distributed<Mlp, DataParallel<Local>>::parameter_count() == Mlp(1).parameter_count());
  CHECK(Distributed<Mlp, ModelParallel<Split<2>>>::parameter_count() == 12 * 10 + 10 + 10 * 8 + 8 + 8 * 4 + 4);
}

namespace {
// 37 samples of 12 features in 4 classes, as images: fit() shuffles them into batches of 10 (the last of
// each epoch has 7), which divide among neither 4 data-parallel ranks nor 4 micro-batches evenly.
Dataset shuffled_dataset() { return testing::random_dataset(37, {1, 3, 4}, 4, 23); }

template <class Model>
std::vector<double> epoch_losses(Model& model) {
  Optimizer<SGD> optimizer(testing::equivalence_rule<SGD>());
  const auto history = fit(model, optimizer, shuffled_dataset(), nullptr,
                           {.epochs = 3, .batch_size = 10, .seed = 9, .shuffle = true, .progress = nullptr});
  std::vector<double> losses;
  for (const auto& epoch : history) losses.push_back(epoch.train_loss);
  return losses;
}

template <class Strategy>
void check_fit(const DistributedOptions& options) {
  DropoutMlp serial(11);
  const auto serial_losses = epoch_losses(serial);
  Distributed<DropoutMlp, Strategy> parallel(11, options);
  const auto parallel_losses = epoch_losses(parallel);
  testing::check_same_values(serial, parallel.gathered());
  CHECK(parallel_losses == serial_losses);
}
}  // namespace

TEST_CASE("fit.shuffled_epochs_are_bit_for_bit_under_every_exact_layout") {
  check_fit<DataParallel<Local>>({.ranks = 4});
  check_fit<DataParallel<Local>>({.ranks = 2});
  check_fit<Pipeline<Split<3>, Microbatches<2>, OneFOneB>>({.ranks = 2});
  check_fit<Pipeline<Split<2, 5>, Microbatches<4>, GPipe>>({.ranks = 3});
}
