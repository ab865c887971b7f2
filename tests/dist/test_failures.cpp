// Never hang, never lie: a rank that throws, a rank that never arrives, and ranks holding different
// models each end every rank with a message naming the rank and the operation, within bounded time.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>
#include <thread>

using namespace pnn;
using namespace std::chrono_literals;

namespace {
// Fails on a NaN input, or sleeps on a negative first input: models a rank that hits bad data or stalls.
struct Tripwire {
  template <class T, class D, class In>
  class layer : public WithoutParameters {
   public:
    using value_type = T;
    using device = D;
    using input_shape = In;
    using output_shape = In;
    struct State {};
    static std::string name() { return "Tripwire"; }
    void forward(TensorView<const T, 2, D> x, TensorView<T, 2, D> y, State&, const Context&) const {
      for (pnn::index i = 0; i < x.size(); ++i)
        if (std::isnan(x.data()[i])) throw ArgumentError("NaN in the input batch");
      if (x.size() > 0 && x.data()[0] < -100) std::this_thread::sleep_for(1500ms);
      y = x;
    }
    void backward(TensorView<const T, 2, D>, TensorView<const T, 2, D>, TensorView<const T, 2, D> dy,
                  TensorView<T, 2, D> dx, State&, const Context&) const {
      if (dx) dx = dy;
    }
  };
};

using Net = Sequential<Input<4>, Tripwire, Dense<3>>;

struct TripwireBatch {
  Tensor<float, 2> inputs{4, 4};
  Tensor<std::int32_t, 1> labels{Extents<1>{4}};
};
}  // namespace

TEST_CASE("distributed.a_throwing_rank_stops_every_rank") {
  Distributed<Net, DataParallel<Local>> model(1, {.ranks = 2});
  Optimizer<SGD> optimizer;
  TripwireBatch batch;
  batch.inputs(3, 1) = std::nanf("");  // row 3 belongs to rank 1's half
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(train_step(model, batch.inputs.view(), batch.labels.view(), optimizer, SoftmaxCrossEntropy{}),
                       "rank 1 failed in train_step: NaN in the input batch", RankFailure);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  // The model refuses further use rather than hanging or computing with a broken group.
  CHECK_THROWS_WITH_AS(train_step(model, batch.inputs.view(), batch.labels.view(), optimizer, SoftmaxCrossEntropy{}),
                       doctest::Contains("cannot be used after a failure"), RankFailure);
}

TEST_CASE("distributed.a_throwing_pipeline_stage_stops_every_stage") {
  Distributed<Sequential<Input<4>, Dense<4>, Tripwire, Dense<3>>, Pipeline<Split<1>, Microbatches<2>, OneFOneB>> model(
      1, {.ranks = 2});
  Optimizer<SGD> optimizer;
  TripwireBatch batch;
  // Stage 1 starts with the Tripwire; a NaN input reaches it through Dense.
  batch.inputs(0, 0) = std::nanf("");
  CHECK_THROWS_WITH_AS(train_step(model, batch.inputs.view(), batch.labels.view(), optimizer, SoftmaxCrossEntropy{}),
                       doctest::Contains("rank 1 failed in train_step: NaN in the input batch"), RankFailure);
}

TEST_CASE("distributed.a_rank_that_never_arrives_is_named") {
  Distributed<Net, DataParallel<Local>> model(1, {.ranks = 2, .communicator = {.timeout = 300ms}});
  Optimizer<SGD> optimizer;
  TripwireBatch batch;
  batch.inputs(2, 0) = -1000;  // the first row of rank 1's half: rank 1 stalls in forward
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(train_step(model, batch.inputs.view(), batch.labels.view(), optimizer, SoftmaxCrossEntropy{}),
                       doctest::Contains("rank(s) 1 did not arrive"), RankFailure);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("distributed.ranks_with_different_models_refuse_to_start") {
  using Other = Sequential<Input<4>, Tripwire, Dense<5>, Dense<3>>;
  auto ranks = Local::group(2, {.timeout = 5s});
  std::string errors[2];
  auto run = [&](auto model_tag, int rank) {
    using Model = typename decltype(model_tag)::type;
    try {
      DataParallelRank<Model, Local> worker(ranks[static_cast<std::size_t>(rank)], 1, {});
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  std::thread first([&] { run(std::type_identity<Net>{}, 0); });
  std::thread second([&] { run(std::type_identity<Other>{}, 1); });
  first.join();
  second.join();
  for (const auto& e : errors) CHECK(e.find("rank 1's model architecture differs from rank 0's") != std::string::npos);
}

TEST_CASE("distributed.pipeline_needs_one_rank_per_stage") {
  using Wrong = Distributed<Net, Pipeline<Split<1>, Microbatches<2>, GPipe>>;
  CHECK_THROWS_WITH_AS(Wrong(1, {.ranks = 3}), doctest::Contains("2 stages needs 2 ranks, but the communicator has 3"),
                       RankFailure);
}
