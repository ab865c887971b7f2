// pnn/cpu/device.hpp: DeviceTraits<cpu>, host memory: 64-byte aligned, copied with memmove.
#pragma once

#include <cstdlib>
#include <cstring>
#include <new>

#include "pnn/core/device.hpp"

namespace pnn {

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

static_assert(Device<cpu>);

}  // namespace pnn
