// Pooling windows are not padded, so a 5x5 window does not fit a 4x4 map.
// expect-error: layer_input_error
// expect-error: MaxPool2D<5
// expect-error: Shape<3, 4, 4>
// expect-max-errors: 2
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<3, 4, 4>, pnn::MaxPool2D<5>, pnn::Flatten, pnn::Dense<10>>;

int main() {
  Net net(1);
  return static_cast<int>(net.parameter_count());
}
