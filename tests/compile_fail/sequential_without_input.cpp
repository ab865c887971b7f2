// A model must say the shape of its samples first, with Input<...>.
// expect-error: must start with Input
#include <pnn/pnn.hpp>

using Net = pnn::Sequential<pnn::Dense<10>>;

int main() {
  Net net(1);
  return static_cast<int>(net.parameter_count());
}
