// Every parallel strategy with models on pnn::cuda against serial training on the GPU, its ranks as
// threads sharing one GPU through HostStaged (host_staged.cuh), so the strategies' logic is tested with
// cuda tensors on any machine with a GPU. test_nccl.cu runs them over NCCL, one GPU per rank.
#include "cuda_equivalence.cuh"
#include "host_staged.cuh"

using namespace pnn;
using testing::check_cuda_equivalence;
using testing::HostStaged;
using testing::needs_gpu;

TEST_CASE("cuda.data_parallel.equals_serial_training" * needs_gpu()) {
  // 37 samples in batches of 10: the last batch has 7; 10 rows do not divide among 3 workers.
  for (int workers : {1, 2, 3}) {
    CAPTURE(workers);
    check_cuda_equivalence<DataParallel<HostStaged>>({.workers = workers});
  }
  // One bucket per layer, and no overlap of the reductions with backward.
  check_cuda_equivalence<DataParallel<HostStaged>>({.workers = 2, .bucket_bytes = 1});
  check_cuda_equivalence<DataParallel<HostStaged>>({.workers = 3, .overlap = false});
}

TEST_CASE("cuda.model_parallel.equals_serial_training" * needs_gpu()) {
  check_cuda_equivalence<ModelParallel<Split<2>, HostStaged>>({.workers = 2});
  check_cuda_equivalence<ModelParallel<Split<2, 4>, HostStaged>>({.workers = 3});
}

TEST_CASE("cuda.pipeline.equals_serial_training" * needs_gpu()) {
  SUBCASE("GPipe") { check_cuda_equivalence<Pipeline<Split<3>, Microbatches<4>, GPipe, HostStaged>>({.workers = 2}); }
  SUBCASE("1F1B, three stages") {
    check_cuda_equivalence<Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB, HostStaged>>({.workers = 3});
  }
}
