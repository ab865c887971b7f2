// bench/strategies_mlp.cpp: the example MLP (examples/train_mlp.cpp) under every strategy.
#include "strategies.hpp"

namespace bench {

namespace {
using Mlp = pnn::Sequential<pnn::Input<784>, pnn::Dense<256>, pnn::ReLU, pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;
// The examples' cut: the first Dense+ReLU, the rest (the first stage does 80% of the multiply-adds).
using MlpStages = pnn::Split<2>;
const std::string split = "[2]";
}  // namespace

std::string run_mlp(const RunOptions& options, const pnn::Dataset& train) {
  if (options.strategy == "serial") return run<Mlp>(options, train);
  if (options.strategy == "data_parallel")
    return run<pnn::Distributed<Mlp, pnn::DataParallel<pnn::Local>>>(options, train);
  if (options.strategy == "model_parallel")
    return run<pnn::Distributed<Mlp, pnn::ModelParallel<MlpStages>>>(options, train, split);
  if (options.strategy == "pipeline") {
    PNN_CHECK(
        options.microbatches == 8, pnn::ArgumentError,
        "the mlp pipeline is built with 8 micro-batches (the examples' choice); use --model balanced to vary them");
    return run<pnn::Distributed<Mlp, pnn::Pipeline<MlpStages, pnn::Microbatches<8>, pnn::OneFOneB>>>(options, train,
                                                                                                     split);
  }
  throw pnn::ArgumentError("--strategy must be serial, data_parallel, model_parallel or pipeline, got " +
                           options.strategy);
}

}  // namespace bench
