// bench/gpu/bandwidth.cu: the memory bandwidth pnn's fused element-wise kernels reach on large tensors,
// against the device's theoretical peak and against a device-to-device cudaMemcpy (the practical peak).
//
//   build-gpu/bandwidth [--elements 67108864] [--calls 20] [--warmup 3]
//
// Every kernel is one expression (or one evaluate() of several) through Executor<cuda>, on float tensors of
// --elements values each (256 MB by default, several times the L2 cache). GB/s counts the bytes a kernel
// must move at least (each operand read once, each destination written once), per call:
//
//   memcpy         cudaMemcpyAsync device to device                          8 B/element (read + write)
//   scale          y = x * 2                                                 8
//   relu_bias      y = relu(x + b), b a row of 1024 repeated over the rows   8 (b stays in cache)
//   axpy           y = a * x + y                                             12
//   sgd_momentum   pnn::SGD's update (v = mu v + g, w -= lr v), one kernel   20 (read w, g, v; write v, w)
//   adam           pnn::Adam's update (m, v, w), one kernel                  28 (read w, g, m, v; write m, v, w)
//
// The theoretical peak is 2 x memory clock x bus width (double data rate) from cudaDevAttrMemoryClockRate
// and cudaDevAttrGlobalMemoryBusWidth. One JSON line per kernel; the median of --calls timed calls.
#include <string>

#include "pnn/cuda/cuda.hpp"

#include "common.cuh"

namespace {

using Vector = pnn::Tensor<float, 1, pnn::cuda>;

double theoretical_gigabytes_per_second() {
  const int device = pnn::cuda_detail::current_device();
  int memory_clock_khz = 0, bus_width_bits = 0;
  PNN_CUDA_CHECK(cudaDeviceGetAttribute(&memory_clock_khz, cudaDevAttrMemoryClockRate, device));
  PNN_CUDA_CHECK(cudaDeviceGetAttribute(&bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  return 2.0 * memory_clock_khz * 1e3 * (bus_width_bits / 8.0) / 1e9;
}

Vector filled(pnn::index n, float value) {
  Vector v(pnn::Extents<1>{n});
  v = v * 0.0f + value;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("bandwidth", [&] {
    const bench::Arguments arguments(argc, argv, {{"elements", "67108864"}, {"calls", "20"}, {"warmup", "3"}});
    bench::require_device();
    const pnn::index n = arguments.number("elements");
    const int calls = static_cast<int>(arguments.number("calls")),
              warmup = static_cast<int>(arguments.number("warmup"));
    cudaStream_t stream = pnn::cuda_stream();
    const double theoretical = theoretical_gigabytes_per_second();
    bench::Json()
        .add("program", "bandwidth")
        .add("device", bench::device_name())
        .add("theoretical_gbps", theoretical)
        .add("elements", static_cast<long>(n))
        .print();

    constexpr pnn::index columns = 1024;
    Vector x = filled(n, 0.5f), y = filled(n, 0.25f), w = filled(n, 1.0f), g = filled(n, 0.01f);
    Vector bias = filled(columns, 0.1f);
    const auto rows = pnn::Extents<2>{n / columns, columns};
    pnn::ParameterDeclaration declaration{.name = "w", .shape = {n}};
    const pnn::Parameter<float, pnn::cuda> parameter{declaration, w.view(), g.view()};
    pnn::SGD sgd{.learning_rate = 1e-6, .momentum = 0.9};
    pnn::SGD::State<float, pnn::cuda> sgd_state(n);
    pnn::Adam adam{.learning_rate = 1e-6};
    pnn::Adam::State<float, pnn::cuda> adam_state(n);
    pnn::index adam_step = 0;

    double memcpy_gbps = 0;
    auto report = [&](const std::string& kernel, double bytes_per_element, auto&& body) {
      const bench::Timing timing = bench::time_calls(stream, warmup, calls, [&](int) { body(); });
      const double gbps = bytes_per_element * static_cast<double>(n) / (timing.median_ms * 1e-3) / 1e9;
      if (kernel == "memcpy") memcpy_gbps = gbps;
      bench::Json()
          .add("benchmark", "bandwidth")
          .add("kernel", kernel)
          .add("elements", static_cast<long>(n))
          .add("bytes_per_element", bytes_per_element)
          .add("", timing)
          .add("gbps", gbps)
          .add("theoretical_gbps", theoretical)
          .add("memcpy_gbps", memcpy_gbps)
          .add("fraction_of_theoretical", gbps / theoretical)
          .add("fraction_of_memcpy", memcpy_gbps > 0 ? gbps / memcpy_gbps : 0.0)
          .print();
    };

    report("memcpy", 8, [&] {
      PNN_CUDA_CHECK(cudaMemcpyAsync(y.data(), x.data(), sizeof(float) * static_cast<std::size_t>(n),
                                     cudaMemcpyDeviceToDevice, stream));
    });
    report("scale", 8, [&] { y.view() = x.view() * 2.0f; });
    report("relu_bias", 8, [&] { y.view().reshape(rows) = pnn::relu(x.view().reshape(rows) + bias.view()); });
    report("axpy", 12, [&] { y.view() = 0.5f * x.view() + y.view(); });
    report("sgd_momentum", 20, [&] { sgd.update(parameter, sgd_state, 0); });
    report("adam", 28, [&] { adam.update(parameter, adam_state, adam_step++); });
  });
}
