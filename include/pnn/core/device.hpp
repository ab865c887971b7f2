// pnn/core/device.hpp: the device tags (cpu, cuda), the DeviceTraits seam and the Device concept.
//
// A device is a tag type. Everything device-specific goes through seams keyed on the tag, which
// core/backend.hpp lists in full (the Backend concept):
//   DeviceTraits<D>   allocates and frees memory and copies it between devices,
//   Executor<D>       evaluates expressions (core/executor.hpp),
//   Timeline<D>       marks the device's progress and times it (core/timeline.hpp), for statistics,
//   and the kernels: gemm, column sums, window kernels, losses, copies between devices.
// Each device's side of every seam lives in its own folder: cpu/ for pnn::cpu, cuda/ for pnn::cuda,
// which only .cu translation units include, so CPU users never see a CUDA header.
#pragma once

#include <cstddef>

#include "pnn/core/config.hpp"

namespace pnn {

// Host memory, computed by Eigen and pnn's own loops.
struct cpu {
  static constexpr const char* name = "cpu";
};

// NVIDIA GPU memory, computed by pnn's CUDA kernels and cuBLAS. Its traits and executor are defined
// in include/pnn/cuda/ and only exist in translation units compiled by nvcc.
struct cuda {
  static constexpr const char* name = "cuda";
};

template <class D>
struct DeviceTraits {
  static_assert(always_false<D>,
                "pnn has no DeviceTraits for this device type. For pnn::cpu, include <pnn/cpu/cpu.hpp>; for "
                "pnn::cuda, include <pnn/cuda/cuda.hpp> in a .cu file compiled by nvcc; a new device supplies "
                "everything core/backend.hpp lists.");
};

template <class D>
concept Device = requires(void* p, const void* q, std::size_t n) {
  { D::name };
  { DeviceTraits<D>::allocate(n) };
  DeviceTraits<D>::deallocate(p);
  DeviceTraits<D>::fill_zero(p, n);
  DeviceTraits<D>::copy(p, q, n);
};

}  // namespace pnn
