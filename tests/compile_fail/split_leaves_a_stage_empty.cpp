// Two equal split points leave the stage between them without layers.
// expect-error: split_point_leaves_a_stage_empty<1, 2>
// expect-max-errors: 2
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>

using Mlp = pnn::Sequential<pnn::Input<12>, pnn::Dense<10>, pnn::Tanh, pnn::Dense<8>, pnn::ReLU, pnn::Dense<4>>;

int main() {
  pnn::Distributed<Mlp, pnn::Pipeline<pnn::Split<2, 2>, pnn::Microbatches<4>, pnn::GPipe>> model(1, {.ranks = 3});
  return 0;
}
