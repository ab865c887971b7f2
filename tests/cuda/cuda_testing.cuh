// What the CUDA test programs share: whether a GPU is present (and why not, printed once), copies of
// whole tensors between host and device, random host tensors, and the comparison of a cuda result with
// the cpu one.
//
// Every test case that touches a GPU carries `* needs_gpu()` (or `* needs_gpus(n)`): without a device
// doctest reports it as skipped, never as passed, and the program prints once why. Skipping is only for
// machines without a GPU: where a CUDA driver is installed, or PNN_REQUIRE_GPU is set (to anything but 0),
// a missing device is a broken setup, and the program fails at once naming the reason instead of passing
// with every GPU case skipped. PNN_REQUIRE_GPU=0 lets a machine with a driver but no device skip.
#pragma once

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <pnn/cuda/cuda.hpp>
#include <string>
#include <string_view>
#include <type_traits>

namespace pnn::testing {

// The CUDA devices this process sees. The first call (made while the test cases register, before main)
// prints the reason when there are none, or ends the program when there should be one.
inline int gpu_count() {
  static const int count = [] {
    std::string reason;
    const int found = cuda_device_count(&reason);
    if (found > 0) return found;
    const char* required = std::getenv("PNN_REQUIRE_GPU");
    const bool skipping_allowed = required != nullptr && std::string_view(required) == "0";
    const bool gpu_required = required != nullptr && *required != '\0' && !skipping_allowed;
    int driver = 0;  // stays 0 without a driver
    (void)cudaDriverGetVersion(&driver);
    if (gpu_required || (driver > 0 && !skipping_allowed)) {
      if (gpu_required)
        std::fprintf(stderr,
                     "[pnn] PNN_REQUIRE_GPU=%s, but no CUDA device is usable (%s): failing instead of skipping the "
                     "GPU test cases\n",
                     required, reason.c_str());
      else
        std::fprintf(stderr,
                     "[pnn] CUDA driver %d.%d is installed, but no CUDA device is usable (%s): failing instead of "
                     "skipping the GPU test cases (PNN_REQUIRE_GPU=0 skips them)\n",
                     driver / 1000, (driver % 1000) / 10, reason.c_str());
      std::exit(EXIT_FAILURE);
    }
    std::printf("[pnn] no CUDA device: %s; the GPU test cases are skipped\n", reason.c_str());
    return 0;
  }();
  return count;
}

// Whether the program runs under compute-sanitizer: scripts/gpu-check.sh sets PNN_UNDER_SANITIZER to the
// tool's name. Some tools make launches wait for their kernels, so checks of host-side timing skip.
inline bool under_sanitizer() {
  const char* tool = std::getenv("PNN_UNDER_SANITIZER");
  return tool != nullptr && *tool != '\0';
}

// Decorators: skip the test case unless the process sees a GPU, or at least `count` of them.
inline doctest::skip needs_gpu() { return doctest::skip(gpu_count() == 0); }
inline doctest::skip needs_gpus(int count) {
  const int found = gpu_count();
  if (found > 0 && found < count) {
    // Printed once per distinct count, so the log says why these cases were skipped.
    static std::array<bool, 16> said{};
    if (!said[static_cast<std::size_t>(std::min(count, 15))]) {
      said[static_cast<std::size_t>(std::min(count, 15))] = true;
      std::printf("[pnn] %d CUDA device(s): the test cases that need %d are skipped\n", found, count);
    }
  }
  return doctest::skip(found < count);
}

template <class T, std::size_t R>
Tensor<T, R, cuda> to_device(const Tensor<T, R, cpu>& host) {
  Tensor<T, R, cuda> device(host.shape());
  copy(host.view(), device.view());
  return device;
}

template <class T, std::size_t R>
Tensor<std::remove_const_t<T>, R, cpu> to_host(TensorView<T, R, cuda> device) {
  Tensor<std::remove_const_t<T>, R, cpu> host(device.shape());
  copy(TensorView<const std::remove_const_t<T>, R, cuda>(device.data(), device.shape()), host.view());
  return host;
}
template <class T, std::size_t R>
Tensor<T, R, cpu> to_host(const Tensor<T, R, cuda>& device) {
  return to_host(device.view());
}

// A host tensor of values uniform in [low, high).
template <class T = float, std::size_t R>
Tensor<T, R, cpu> random_tensor(const Extents<R>& shape, std::uint64_t seed, double low = -1, double high = 1) {
  Tensor<T, R, cpu> t(shape);
  Generator random(seed);
  for (index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(random.uniform<double>(low, high));
  return t;
}

// A read-only view of a tensor or view, whatever the constness of its elements.
template <class X>
auto const_view(const X& x) {
  using T = std::remove_const_t<typename X::element_type>;
  return TensorView<const T, X::rank, typename X::device>(x.data(), x.shape());
}

// max |actual - expected| / max |expected| (or the plain difference when expected is all zeros).
template <class T, std::size_t R>
double scaled_difference(TensorView<const T, R, cpu> expected, TensorView<const T, R, cpu> actual) {
  REQUIRE(expected.shape() == actual.shape());
  double scale = 0, difference = 0;
  for (index i = 0; i < expected.size(); ++i) {
    const double e = static_cast<double>(expected[i]), a = static_cast<double>(actual[i]);
    scale = std::max(scale, std::abs(e));
    difference = std::isnan(a) != std::isnan(e) ? INFINITY : std::max(difference, std::abs(a - e));
  }
  return scale > 0 ? difference / scale : difference;
}

// Checks that a cuda tensor holds a cpu one's values within `tolerance` of the largest magnitude.
template <class Expected, class Actual>
void check_close(const std::string& what, const Expected& expected, const Actual& actual, double tolerance) {
  static_assert(std::is_same_v<typename Expected::device, cpu> && std::is_same_v<typename Actual::device, cuda>,
                "check_close(what, cpu tensor, cuda tensor, tolerance)");
  const auto host = to_host(const_view(actual));
  const double difference = scaled_difference(const_view(expected), const_view(host));
  CHECK_MESSAGE(difference <= tolerance, what << ": cuda differs from cpu by " << difference
                                              << " of the largest magnitude (tolerance " << tolerance << ")");
}

}  // namespace pnn::testing
