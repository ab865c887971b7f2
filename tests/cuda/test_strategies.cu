// Every parallel strategy with models on pnn::cuda against serial training on the GPU, its ranks as
// threads sharing one GPU through HostStaged (host_staged.cuh), so the strategies' logic is tested with
// cuda tensors on any machine with a GPU. test_nccl.cu runs them over NCCL, one GPU per rank.
#include "cuda_equivalence.cuh"
#include "dist/statistics.hpp"
#include "host_staged.cuh"

using namespace pnn;
using testing::check_cuda_equivalence;
using testing::HostStaged;
using testing::needs_gpu;

TEST_CASE("cuda.data_parallel.equals_serial_training" * needs_gpu()) {
  // 37 samples in batches of 10: the last batch has 7; 10 rows do not divide among 3 ranks.
  for (int ranks : {1, 2, 3}) {
    CAPTURE(ranks);
    check_cuda_equivalence<DataParallel<HostStaged>>({.ranks = ranks});
  }
  // One bucket per layer, and no overlap of the reductions with backward.
  check_cuda_equivalence<DataParallel<HostStaged>>({.ranks = 2, .bucket_bytes = 1});
  check_cuda_equivalence<DataParallel<HostStaged>>({.ranks = 3, .overlap = false});
}

TEST_CASE("cuda.model_parallel.equals_serial_training" * needs_gpu()) {
  check_cuda_equivalence<ModelParallel<Split<2>, HostStaged>>({.ranks = 2});
  check_cuda_equivalence<ModelParallel<Split<2, 4>, HostStaged>>({.ranks = 3});
}

TEST_CASE("cuda.pipeline.equals_serial_training" * needs_gpu()) {
  SUBCASE("GPipe") { check_cuda_equivalence<Pipeline<Split<3>, Microbatches<4>, GPipe, HostStaged>>({.ranks = 2}); }
  SUBCASE("1F1B, three stages") {
    check_cuda_equivalence<Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB, HostStaged>>({.ranks = 3});
  }
}

// The strategies' statistics with cuda models keep the relations of times on one clock. (A host clock
// would keep them too: that Timeline<cuda> times the device is cuda.timeline's test, test_cuda.)
TEST_CASE("cuda.strategies.statistics_time_the_device" * needs_gpu()) {
  const auto data = testing::device_data(40, 12, 4);
  Optimizer<SGD, float, cuda> optimizer({.learning_rate = 0.1});
  constexpr double slack = 1e-5;  // event times are float milliseconds
  SUBCASE("data parallel") {
    Distributed<testing::CudaMlp, DataParallel<HostStaged>> model(1, {.ranks = 2, .bucket_bytes = 1});
    testing::train(model, optimizer, data, 10, 5);
    for (const StrategyStatistics& s : model.statistics()) testing::check_data_parallel_statistics(s, 5, slack);
  }
  SUBCASE("pipeline") {
    Distributed<testing::CudaMlp, Pipeline<Split<3>, Microbatches<4>, OneFOneB, HostStaged>> model(1, {.ranks = 2});
    testing::train(model, optimizer, data, 10, 5);
    for (const StrategyStatistics& s : model.statistics()) testing::check_pipeline_statistics(s, 5, slack);
  }
}
