// A split point past the model's last layer. The error must name the point's position, its value and
// the layer count.
// expect-error: split_point_outside_the_model<1, 9, 5>
// expect-max-errors: 2
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>

using Mlp = pnn::Sequential<pnn::Input<12>, pnn::Dense<10>, pnn::Tanh, pnn::Dense<8>, pnn::ReLU, pnn::Dense<4>>;

int main() {
  pnn::Distributed<Mlp, pnn::ModelParallel<pnn::Split<2, 9>>> model(1, {.ranks = 3});
  return 0;
}
