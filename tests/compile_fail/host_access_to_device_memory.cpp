// A tensor of another device (pnn::cuda) holds device memory, which the host must not dereference:
// element access is for cpu tensors only, and asking a device view for an element does not compile.
// (A device tag of the test's own stands in for pnn::cuda, which only nvcc compiles.)
// expect-error: operator[]
// expect-error: (pnn::TensorView<float, 1, gpu_memory>) (int)
// expect-error: is_same_v<D, pnn::cpu> [with D = gpu_memory]
// expect-max-errors: 2
#include <pnn/pnn.hpp>

struct gpu_memory {};

int main() {
  float storage[4] = {};
  pnn::TensorView<float, 1, gpu_memory> view(storage, pnn::Extents<1>{4});
  return static_cast<int>(view[0] + view(1));
}
