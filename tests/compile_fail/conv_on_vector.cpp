// A convolution needs (channels, height, width) samples; Input<784> gives vectors. The error must name
// the layer and the shape it was given, and come alone (GCC reports one error; clang adds one more).
// expect-error: layer_input_error
// expect-error: Conv2D<16, 5, pnn::Pad<2>
// expect-error: Shape<784>
// expect-max-errors: 2
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<784>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::Dense<10>>;

int main() {
  Net net(1);
  return static_cast<int>(net.parameter_count());
}
