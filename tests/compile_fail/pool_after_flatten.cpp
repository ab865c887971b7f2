// After Flatten the samples are vectors: a pooling layer placed after it is reported with the shape it
// got, (4 * 4 * 4) = 64 features, even though the input itself was an image.
// expect-error: layer_input_error
// expect-error: AvgPool2D<2
// expect-error: Shape<64>
// expect-max-errors: 2
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<2, 6, 6>, pnn::Conv2D<4, 3>, pnn::Flatten, pnn::AvgPool2D<2>, pnn::Dense<10>>;

int main() {
  Net net(1);
  return static_cast<int>(net.parameter_count());
}
