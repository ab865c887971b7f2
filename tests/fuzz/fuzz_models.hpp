// tests/fuzz/fuzz_models.hpp: the models the safetensors and checkpoint targets load into, shared with
// make_corpus.cpp, which writes the seed files from them (the seeds must match them to reach the loads).
#pragma once

#include <pnn/pnn.hpp>

namespace fuzz {

using WeightsNet = pnn::BasicSequential<float, pnn::cpu, pnn::Input<4>, pnn::Dense<3>, pnn::ReLU, pnn::Dense<2>>;
using CheckpointNet = pnn::Sequential<pnn::Input<4>, pnn::Dense<3>, pnn::ReLU, pnn::Dropout<30>, pnn::Dense<2>>;
using CheckpointOptimizer = pnn::Optimizer<pnn::Adam>;
inline constexpr std::uint64_t model_seed = 5;

}  // namespace fuzz
