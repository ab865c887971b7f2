// bench/strategies_balanced.cpp: an MLP whose two pipeline stages cost the same, to compare the measured
// pipeline bubble with the theory (p - 1) / (m + p - 1), which assumes equal stages.
//
//   784 -> 512 -> 512 | 512 -> 512 -> 10   (ReLU after every hidden layer; the cut before layer 4)
//
// Multiply-adds per sample, forward + backward: stage 0 has 784x512 + 512x512 forward, and backward the
// weight gradients of both plus the input gradient of the second only (nobody needs the image's
// gradient): 1.588M. Stage 1 has 2 x 512x512 + 512x10 forward, and backward weight and input gradients
// of all three: 1.587M. (Per pass they differ: stage 0 does 25% more forward work and 13% less backward.)
#include "strategies.hpp"

namespace bench {

namespace {
using Balanced = pnn::Sequential<pnn::Input<784>, pnn::Dense<512>, pnn::ReLU, pnn::Dense<512>, pnn::ReLU,
                                 pnn::Dense<512>, pnn::ReLU, pnn::Dense<512>, pnn::ReLU, pnn::Dense<10>>;
using BalancedStages = pnn::Split<4>;
const std::string split = "[4]";

template <pnn::index M>
using BalancedPipeline = pnn::Distributed<Balanced, pnn::Pipeline<BalancedStages, pnn::Microbatches<M>, pnn::OneFOneB>>;
}  // namespace

std::string run_balanced(const RunOptions& options, const pnn::Dataset& train) {
  if (options.strategy == "serial") return run<Balanced>(options, train);
  if (options.strategy == "data_parallel")
    return run<pnn::Distributed<Balanced, pnn::DataParallel<pnn::Local>>>(options, train);
  if (options.strategy == "model_parallel")
    return run<pnn::Distributed<Balanced, pnn::ModelParallel<BalancedStages>>>(options, train, split);
  if (options.strategy == "pipeline") {
    switch (options.microbatches) {
      case 1:
        return run<BalancedPipeline<1>>(options, train, split);
      case 2:
        return run<BalancedPipeline<2>>(options, train, split);
      case 4:
        return run<BalancedPipeline<4>>(options, train, split);
      case 8:
        return run<BalancedPipeline<8>>(options, train, split);
      case 16:
        return run<BalancedPipeline<16>>(options, train, split);
      default:
        throw pnn::ArgumentError("the balanced pipeline is built for 1, 2, 4, 8 or 16 micro-batches, got " +
                                 std::to_string(options.microbatches));
    }
  }
  throw pnn::ArgumentError("--strategy must be serial, data_parallel, model_parallel or pipeline, got " +
                           options.strategy);
}

}  // namespace bench
