// Every strategy against serial training, with the Local communicator (threads).
#include "equivalence.hpp"

using namespace pnn;
using testing::check_equivalence;

namespace {
using Mlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 5 layers
}

TEST_CASE("data_parallel.equals_serial_training") {
  // 37 samples in batches of 10: the last batch has 7; 10 rows do not divide among 3 or 4 workers.
  for (int workers : {1, 2, 3, 4}) {
    CAPTURE(workers);
    check_equivalence<Mlp, DataParallel<Local>>({.workers = workers});
  }
  // Tiny buckets (one per layer) and no overlap give the same weights.
  check_equivalence<Mlp, DataParallel<Local>>({.workers = 2, .bucket_bytes = 1});
  check_equivalence<Mlp, DataParallel<Local>>({.workers = 3, .overlap = false});
  // More workers than samples in a batch: some ranks get none.
  check_equivalence<Mlp, DataParallel<Local>>({.workers = 4}, /*batch=*/3, /*steps=*/3);
}

TEST_CASE("model_parallel.equals_serial_training") {
  check_equivalence<Mlp, ModelParallel<Split<2>>>({.workers = 2});
  check_equivalence<Mlp, ModelParallel<Split<2, 4>>>({.workers = 3});
  check_equivalence<Mlp, ModelParallel<Split<1, 2, 3, 4>>>({.workers = 5});
}

TEST_CASE("pipeline.equals_serial_training") {
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<1>, GPipe>>({.workers = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, GPipe>>({.workers = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<8>, GPipe>>({.workers = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<1>, OneFOneB>>({.workers = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, OneFOneB>>({.workers = 2});
  check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<8>, OneFOneB>>({.workers = 2});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<1>, GPipe>>({.workers = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<4>, GPipe>>({.workers = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, GPipe>>({.workers = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<1>, OneFOneB>>({.workers = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB>>({.workers = 3});
  check_equivalence<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, OneFOneB>>({.workers = 3});
}

TEST_CASE("pipeline.one_f_one_b_bounds_live_activations") {
  const auto data = testing::synthetic_data(16, 12, 4);
  Optimizer<SGD> optimizer;
  Distributed<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, OneFOneB>> one_f_one_b(1, {.workers = 3});
  testing::train(one_f_one_b, optimizer, data, 16, 1);
  for (int stage = 0; stage < 3; ++stage) {
    CAPTURE(stage);
    CHECK(one_f_one_b.worker(stage).max_live_microbatches() == 3 - stage);  // at most (stages - stage)
  }
  Distributed<Mlp, Pipeline<Split<2, 4>, Microbatches<8>, GPipe>> gpipe(1, {.workers = 3});
  testing::train(gpipe, optimizer, data, 16, 1);
  for (int stage = 0; stage < 3; ++stage) CHECK(gpipe.worker(stage).max_live_microbatches() == 8);
}

TEST_CASE("distributed.predict_and_save_match_serial") {
  const auto data = testing::synthetic_data(20, 12, 4);
  Distributed<Mlp, Pipeline<Split<2, 4>, Microbatches<2>, OneFOneB>> pipeline(5, {.workers = 3});
  Optimizer<SGD> optimizer({.learning_rate = 0.1});
  testing::train(pipeline, optimizer, data, 10, 2);
  Mlp whole = pipeline.gathered();
  const auto expected = whole.predict(data.inputs.view());
  const auto actual = pipeline.predict(data.inputs.view());
  REQUIRE(actual.shape() == expected.shape());
  for (pnn::index i = 0; i < actual.size(); ++i) REQUIRE(actual.data()[i] == doctest::Approx(expected.data()[i]));
}
