// A 7x7 kernel does not fit a 4x4 image without padding: no output pixel exists.
// expect-error: layer_input_error
// expect-error: Conv2D<8, 7>
// expect-error: Shape<1, 4, 4>
// expect-max-errors: 2
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<1, 4, 4>, pnn::Conv2D<8, 7>, pnn::Flatten, pnn::Dense<10>>;

int main() {
  Net net(1);
  return static_cast<int>(net.parameter_count());
}
