// fit() with a loss whose targets the data does not hold: MeanSquaredError wants target rows, a Dataset
// holds class labels. The error must say which loss goes with which data, and come nearly alone.
// expect-error: the loss takes other targets than the data holds
// expect-error: MeanSquaredError a regression model on a pnn::RegressionDataset
// expect-max-errors: 2
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<784>, pnn::Dense<10>>;

int main() {
  Net net(1);
  pnn::Optimizer<pnn::SGD> optimizer;
  const pnn::Dataset data;
  pnn::fit(net, optimizer, data, nullptr, {.epochs = 1}, pnn::MeanSquaredError{});
}
