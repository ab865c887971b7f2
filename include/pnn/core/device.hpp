// pnn/core/device.hpp: the device tags (cpu, cuda), the Device concept, and device memory.
//
// A device is a tag type. Everything device-specific goes through seams keyed on the tag:
//   DeviceTraits<D>   allocates and frees memory and copies it between devices,
//   Executor<D>       evaluates expressions (core/executor.hpp),
//   Timeline<D>       marks the device's progress and times it (core/timeline.hpp), for statistics.
// The cpu specialisations live in core/; the cuda ones in include/pnn/cuda/,
// which only .cu translation units include, so CPU users never see a CUDA header.
#pragma once

#include <cstdlib>
#include <cstring>
#include <new>

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
                "pnn has no DeviceTraits for this device type. For pnn::cuda, include <pnn/cuda/cuda.hpp> "
                "in a .cu file compiled by nvcc; a new device specialises DeviceTraits and Executor.");
};

// Allocation alignment on the host: one cache line, and enough for AVX-512 aligned loads.
inline constexpr std::size_t cpu_alignment = 64;

template <>
struct DeviceTraits<cpu> {
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = (bytes + cpu_alignment - 1) / cpu_alignment * cpu_alignment;
    void* memory = std::aligned_alloc(cpu_alignment, rounded);
    if (memory == nullptr) throw std::bad_alloc();
    return memory;
  }
  static void deallocate(void* memory) noexcept { std::free(memory); }
  static void fill_zero(void* memory, std::size_t bytes) {
    if (bytes) std::memset(memory, 0, bytes);
  }
  static void copy(void* destination, const void* source, std::size_t bytes) {
    if (bytes) std::memmove(destination, source, bytes);
  }
};

template <class D>
concept Device = requires(void* p, const void* q, std::size_t n) {
  { D::name };
  { DeviceTraits<D>::allocate(n) };
  DeviceTraits<D>::deallocate(p);
  DeviceTraits<D>::fill_zero(p, n);
  DeviceTraits<D>::copy(p, q, n);
};

static_assert(Device<cpu>);

}  // namespace pnn
