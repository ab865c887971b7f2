// bench/strategies_cnn.cpp: the example CNN (examples/train_cnn.cpp) under every strategy.
#include "strategies.hpp"

namespace bench {

namespace {
using Cnn = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>,
                            pnn::Conv2D<32, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>, pnn::Flatten,
                            pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;
// The examples' cut: the first convolution block, the rest (the second convolution alone holds about
// 85% of the multiply-adds, so no two-stage cut of this network is balanced).
using CnnStages = pnn::Split<3>;
const std::string split = "[3]";
}  // namespace

std::string run_cnn(const RunOptions& options, const pnn::Dataset& train) {
  if (options.strategy == "serial") return run<Cnn>(options, train);
  if (options.strategy == "data_parallel")
    return run<pnn::Distributed<Cnn, pnn::DataParallel<pnn::Local>>>(options, train);
  if (options.strategy == "model_parallel")
    return run<pnn::Distributed<Cnn, pnn::ModelParallel<CnnStages>>>(options, train, split);
  if (options.strategy == "pipeline") {
    PNN_CHECK(
        options.microbatches == 8, pnn::ArgumentError,
        "the cnn pipeline is built with 8 micro-batches (the examples' choice); use --model balanced to vary them");
    return run<pnn::Distributed<Cnn, pnn::Pipeline<CnnStages, pnn::Microbatches<8>, pnn::OneFOneB>>>(options, train,
                                                                                                     split);
  }
  throw pnn::ArgumentError("--strategy must be serial, data_parallel, model_parallel or pipeline, got " +
                           options.strategy);
}

}  // namespace bench
