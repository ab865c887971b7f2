// A program whose rank 1 fails during training: run under mpirun by expect_failure.py, which checks that
// every rank stops within bounded time with a message naming rank 1 and the operation.
#include <cmath>
#include <pnn/dist.hpp>
#include <pnn/dist/mpi.hpp>
#include <pnn/pnn.hpp>

using namespace pnn;

int main() {
  using Net = Sequential<Input<4>, Dense<3>>;
  Distributed<Net, DataParallel<Mpi>> model(1);
  Optimizer<SGD> optimizer;
  Tensor<float, 2> inputs(4, 4);
  Tensor<std::int32_t, 1> labels(Extents<1>{4});
  labels[3] = 7;  // a label outside [0, 3): row 3 belongs to the last rank's share
  train_step(model, TensorView<const float, 2>(inputs), TensorView<const std::int32_t, 1>(labels), optimizer,
             SoftmaxCrossEntropy{});
  return 0;
}
