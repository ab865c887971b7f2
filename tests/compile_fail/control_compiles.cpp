// The control: the same harness on a valid model must succeed, so a harness that fails everything
// (a wrong include path, a broken header) cannot pass the tests above.
// expect: compiles
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>,
                            pnn::Conv2D<32, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>, pnn::Flatten,
                            pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;
static_assert(std::is_same_v<Net::output_shape, pnn::Shape<10>>);

int main() {
  Net net(1);
  pnn::Tensor<float, 2> images(2, 784);
  const auto scores = net.forward(images.view());
  net.backward(scores);
  return static_cast<int>(scores.dim(1));
}
