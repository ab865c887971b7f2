// What a program that uses an installed pnn does: includes the umbrella header, trains a tiny regression
// for a few steps, and reads a file through pnn's IDX reader (which links zlib, the dependency pnn's
// packages must pass on). Exits 0 and prints "pnn consumer: ok" when both behave.
#include <cstdio>

#include <pnn/pnn.hpp>

int main() {
  using Regressor = pnn::Sequential<pnn::Input<3>, pnn::Dense<8>, pnn::Tanh, pnn::Dense<1>>;
  constexpr pnn::index rows = 16;
  pnn::Tensor<float, 2> inputs(rows, 3), targets(rows, 1);
  pnn::Generator random(5);
  for (pnn::index i = 0; i < rows; ++i) {
    for (pnn::index j = 0; j < 3; ++j) inputs(i, j) = random.uniform<float>(-1.0f, 1.0f);
    targets(i, 0) = inputs(i, 0) - 0.5f * inputs(i, 1);
  }
  Regressor model(1);
  pnn::Optimizer<pnn::SGD> optimizer({.learning_rate = 0.1f});
  const float first = pnn::train_step(model, pnn::TensorView<const float, 2>(inputs), targets.view(), optimizer,
                                      pnn::MeanSquaredError{});
  float last = first;
  for (int step = 1; step < 20; ++step)
    last = pnn::train_step(model, pnn::TensorView<const float, 2>(inputs), targets.view(), optimizer,
                           pnn::MeanSquaredError{});
  if (!(last < first)) {
    std::printf("pnn consumer: the loss did not fall in 20 steps (%g, then %g)\n", first, last);
    return 1;
  }

  try {
    pnn::read_idx("no-such-file-idx3-ubyte.gz");
    std::printf("pnn consumer: read_idx accepted a file that does not exist\n");
    return 1;
  } catch (const pnn::IoError&) {}
  std::printf("pnn consumer: ok (loss %g, then %g after 20 steps)\n", first, last);
  return 0;
}
