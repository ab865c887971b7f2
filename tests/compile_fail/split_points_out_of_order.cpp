// Split points must increase: the error names the position and both points.
// expect-error: split_points_out_of_order<1, 1, 3>
// expect-max-errors: 2
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>

using Mlp = pnn::Sequential<pnn::Input<12>, pnn::Dense<10>, pnn::Tanh, pnn::Dense<8>, pnn::ReLU, pnn::Dense<4>>;

int main() {
  pnn::Distributed<Mlp, pnn::Pipeline<pnn::Split<3, 1>, pnn::Microbatches<4>, pnn::OneFOneB>> model(1, {.ranks = 3});
  return 0;
}
