// tests/fuzz/fuzz_models.hpp: the models the safetensors and checkpoint targets load into, shared with
// make_corpus.cpp, which writes the seed files from them (the seeds must match them to reach the loads).
#pragma once

#include <pnn/pnn.hpp>

namespace fuzz {

// A convolution (whose weight files hold in another layout than memory) and BatchNorm (whose
// num_batches_tracked files hold as int64) in each, so the loads convert.
using WeightsNet = pnn::BasicSequential<float, pnn::cpu, pnn::Input<2, 3, 3>, pnn::Conv2D<2, 2>, pnn::BatchNorm<>,
                                        pnn::ReLU, pnn::Flatten, pnn::Dense<2>>;
using CheckpointNet = pnn::Sequential<pnn::Input<2, 3, 3>, pnn::Conv2D<2, 2>, pnn::BatchNorm<>, pnn::ReLU,
                                      pnn::Dropout<30>, pnn::Flatten, pnn::Dense<2>>;
using CheckpointOptimizer = pnn::Optimizer<pnn::Adam>;
inline constexpr std::uint64_t model_seed = 5;

}  // namespace fuzz
