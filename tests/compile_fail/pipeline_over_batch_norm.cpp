// A pipeline of several micro-batches over a model with BatchNorm (here inside a residual block) would
// normalise each micro-batch alone: another model than serial training's. The error says so and names the
// opt-in and the alternative.
// expect-error: pipeline_over_batch_statistics
// expect-error: Microbatches<m, pnn::StatisticsPerMicrobatch>
// expect-error: ModelParallel<Split<...>>
// expect-max-errors: 2
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<12>, pnn::Dense<10>, pnn::Residual<pnn::Dense<10>, pnn::BatchNorm<>>, pnn::ReLU,
                            pnn::Dense<4>>;

int main() {
  pnn::Distributed<Net, pnn::Pipeline<pnn::Split<2>, pnn::Microbatches<4>, pnn::GPipe>> model(1, {.ranks = 2});
  return 0;
}
