// check_layer_parity<Spec, InputShape>(): one layer on cuda against the same layer on the cpu.
//
// Both models are built from the same seed, so they start from the same weights (drawn on the host,
// copied to the device) and draw the same dropout masks. Over a few passes without zeroing the
// gradients, the forward output, the input gradient, the accumulated parameter gradients and the
// buffers (running statistics) must agree within `tolerance` of their largest magnitude. The last
// backward asks for no input gradient, as for a model's first layer.
//
// Float throughout: it is what the backend runs. The tolerance covers different summation orders
// (cuBLAS against pnn's packed GEMM, column sums in chunks); a wrong index or a missed accumulation
// shows up as an error of order one.
#pragma once

#include "cuda_testing.cuh"

namespace pnn::testing {

struct ParityOptions {
  index batch = 5;
  bool training = true;
  double tolerance = 1e-5;
  int passes = 3;
  bool warm_up = false;  // one training pass first (BatchNorm inference then uses moved running statistics)
};

template <class Spec, class InputShape>
void check_layer_parity(const ParityOptions& options = {}) {
  using HostModel = BasicSequential<float, cpu, InputFor<InputShape>, Spec>;
  using DeviceModel = typename HostModel::template on<cuda>;
  constexpr index in = HostModel::input_shape::size, out = HostModel::output_shape::size;
  INFO("layer " << HostModel::summary() << "batch " << options.batch
                << (options.training ? ", training" : ", inference"));
  HostModel host(7);
  DeviceModel device(7);
  check_close("initial parameters", host.parameter_values(), device.parameter_values(), 0);
  check_close("initial buffers", host.buffer_values(), device.buffer_values(), 0);
  typename HostModel::Trace host_trace;
  typename DeviceModel::Trace device_trace;
  if (options.warm_up) {
    const auto x = random_tensor<float>(Extents<2>{options.batch, in}, 99, -2, 3);
    const auto x_device = to_device(x);
    host.forward(x.view(), host_trace, true);
    device.forward(x_device.view(), device_trace, true);
  }
  for (int pass = 0; pass < options.passes; ++pass) {
    CAPTURE(pass);
    const bool input_gradient = pass + 1 < options.passes;
    const auto x = random_tensor<float>(Extents<2>{options.batch, in}, 100 + static_cast<std::uint64_t>(pass), -2, 3);
    const auto dy = random_tensor<float>(Extents<2>{options.batch, out}, 200 + static_cast<std::uint64_t>(pass));
    const auto x_device = to_device(x);
    const auto dy_device = to_device(dy);
    const auto y_host = host.forward(x.view(), host_trace, options.training);
    const auto y_device = device.forward(x_device.view(), device_trace, options.training);
    check_close("forward output", y_host, y_device, options.tolerance);

    Tensor<float, 2> dx(Extents<2>{options.batch, in});
    Tensor<float, 2, cuda> dx_device(Extents<2>{options.batch, in});
    host.backward(dy.view(), input_gradient ? dx.view() : TensorView<float, 2>{}, host_trace);
    device.backward(dy_device.view(), input_gradient ? dx_device.view() : TensorView<float, 2, cuda>{}, device_trace);
    if (input_gradient) check_close("input gradient", dx, dx_device, options.tolerance);
    check_close("parameter gradients", host.parameter_gradients(), device.parameter_gradients(), options.tolerance);
    check_close("buffers", host.buffer_values(), device.buffer_values(), options.tolerance);
  }
}

}  // namespace pnn::testing
