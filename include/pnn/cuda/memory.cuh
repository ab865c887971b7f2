// pnn/cuda/memory.cuh: device memory for pnn::cuda tensors (DeviceTraits<cuda>) and the copies between
// host and device: pnn::copy(host view, device view), pnn::copy(device view, host view), and device to
// device (the same-device copy() of core/tensor.hpp, through DeviceTraits<cuda>::copy).
//
// Allocation is stream-ordered (cudaMallocFromPoolAsync / cudaFreeAsync on pnn's compute stream of the
// device) from pnn's own memory pool of the device (runtime.cuh), which keeps freed blocks and hands them
// out again: a training step reuses the memory of the step before it without asking the driver. Freeing
// is ordered after the work already enqueued, so a tensor may be destroyed while kernels that read it are
// still running. A pool's memory is reachable from other devices only once cuda_share_memory() opens it
// to them (Nccl does, for the GPUs of a group: NCCL's kernels read their peers' buffers directly).
//
// Copies: host to device returns once the source has been read (the host buffer may then be reused);
// device to host synchronises pnn's stream before returning, since the caller reads the data next;
// device to device stays on the streams, and between two devices orders itself after the source
// device's work and before that device's later work with a pair of events (no host synchronisation).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "pnn/core/device.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cuda/runtime.cuh"

namespace pnn {

template <>
struct DeviceTraits<cuda> {
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    void* memory = nullptr;
    const cuda_detail::DeviceState& state = cuda_detail::device_state(cuda_detail::current_device());
    cuda_detail::CaptureLedger* ledger = cuda_detail::CaptureLedger::open();
    if (ledger && ledger->live.size() == ledger->live.capacity())  // so that recording it below cannot throw
      ledger->live.reserve(2 * ledger->live.size() + 16);
    PNN_CUDA_CHECK(cudaMallocFromPoolAsync(&memory, bytes, state.pool, state.stream));
    if (ledger) ledger->live.push_back(memory);
    return memory;
  }

  static void deallocate(void* memory) noexcept {
    if (memory == nullptr) return;
    try {
      // Inside a capture (graph.cuh) memory the captured work allocated has no pointer attributes until
      // the graph runs: it is freed on the capturing stream, which is where it was allocated. Memory from
      // before the capture waits in the ledger until the capture ends.
      if (cudaStream_t capturing = cuda_detail::capturing_stream()) {
        if (cuda_detail::CaptureLedger* ledger = cuda_detail::CaptureLedger::open()) {
          const auto found = std::find(ledger->live.begin(), ledger->live.end(), memory);
          if (found == ledger->live.end()) {
            ledger->foreign.push_back(memory);
            return;
          }
          ledger->live.erase(found);
        }
        cuda_detail::report(cudaFreeAsync(memory, capturing), "cudaFreeAsync (while capturing a CUDA graph)");
        return;
      }
      // Otherwise on the stream of the device that holds it, which need not be the caller's current device
      // (a rank's model may be destroyed by another thread).
      cudaPointerAttributes attributes{};
      const cudaError_t found = cudaPointerGetAttributes(&attributes, memory);
      if (found != cudaSuccess || attributes.type != cudaMemoryTypeDevice) {
        // Not memory CUDA knows: an address a refused CudaGraphStep capture left in a layer (graph.cuh
        // keeps that graph, so the address is never handed out again). Nothing to free.
        if (found != cudaSuccess) (void)cudaGetLastError();
        std::fprintf(stderr, "pnn: not freeing %p, which is not device memory (%s)\n", memory,
                     found != cudaSuccess ? cudaGetErrorString(found) : "no device holds it");
        return;
      }
      // The device made current too: the programming guide promises cross-device streams only to copies.
      cuda_detail::DeviceGuard guard(attributes.device);
      cuda_detail::report(cudaFreeAsync(memory, cuda_stream(attributes.device)), "cudaFreeAsync");
    } catch (const std::exception& error) {
      std::fprintf(stderr, "pnn: freeing device memory failed: %s\n", error.what());
    }
  }

  static void fill_zero(void* memory, std::size_t bytes) {
    if (bytes == 0) return;
    if (cudaStream_t capturing = cuda_detail::capturing_stream()) {  // as in deallocate()
      PNN_CUDA_CHECK(cudaMemsetAsync(memory, 0, bytes, capturing));
      return;
    }
    const int device = cuda_detail::device_of(memory);
    cuda_detail::DeviceGuard guard(device);
    PNN_CUDA_CHECK(cudaMemsetAsync(memory, 0, bytes, cuda_stream(device)));
  }

  // Device to device, on one device or between two.
  static void copy(void* destination, const void* source, std::size_t bytes) {
    if (bytes == 0 || destination == source) return;
    const int to = cuda_detail::device_of(destination), from = cuda_detail::device_of(source);
    if (to == from) {
      PNN_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, cuda_stream(to)));
      return;
    }
    // The copy runs on the destination's stream after the source's pending work, and the source's
    // stream waits for the copy before it may overwrite or free the source.
    cudaStream_t source_stream = cuda_stream(from), destination_stream = cuda_stream(to);
    cuda_detail::Event source_ready, copied;
    {
      cuda_detail::DeviceGuard guard(from);
      source_ready = cuda_detail::record_event(source_stream);
    }
    {
      cuda_detail::DeviceGuard guard(to);
      PNN_CUDA_CHECK(cudaStreamWaitEvent(destination_stream, source_ready.get(), 0));
      PNN_CUDA_CHECK(cudaMemcpyPeerAsync(destination, to, source, from, bytes, destination_stream));
      copied = cuda_detail::record_event(destination_stream);
    }
    PNN_CUDA_CHECK(cudaStreamWaitEvent(source_stream, copied.get(), 0));
  }
};

static_assert(Device<cuda>);

namespace cuda_detail {
template <class Source, class Destination>
void check_copy_sizes(const Source& source, const Destination& destination, const char* direction) {
  PNN_CHECK(source.size() == destination.size(), ShapeError, "copy ", direction,
            " between tensors of different sizes: ", format_extents<Source::rank>(source.shape()), " and ",
            format_extents<Destination::rank>(destination.shape()));
}
}  // namespace cuda_detail

// Host to device. Returns once the host data has been read; the device copy completes in stream order.
template <class T, std::size_t R>
void copy(TensorView<const T, R, cpu> source, TensorView<T, R, cuda> destination) {
  cuda_detail::check_copy_sizes(source, destination, "from host to device");
  const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(source.size());
  if (bytes == 0) return;
  PNN_CUDA_CHECK(cudaMemcpyAsync(destination.data(), source.data(), bytes, cudaMemcpyHostToDevice,
                                 cuda_stream(cuda_detail::device_of(destination.data()))));
  // From page-locked or managed memory the copy is truly asynchronous, and from pageable memory CUDA
  // promises only that it "might be synchronous": wait for it, so the caller may reuse its buffer.
  PNN_CUDA_CHECK(cudaStreamSynchronize(cuda_stream(cuda_detail::device_of(destination.data()))));
}

// Device to host. A synchronisation point: returns when the data is in host memory.
template <class T, std::size_t R>
void copy(TensorView<const T, R, cuda> source, TensorView<T, R, cpu> destination) {
  cuda_detail::check_copy_sizes(source, destination, "from device to host");
  const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(source.size());
  if (bytes == 0) return;
  cudaStream_t stream = cuda_stream(cuda_detail::device_of(source.data()));
  PNN_CUDA_CHECK(cudaMemcpyAsync(destination.data(), source.data(), bytes, cudaMemcpyDeviceToHost, stream));
  PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// pnn's memory pool of `device`, which every pnn tensor on that device is allocated from (to query, or
// to trim with cudaMemPoolTrimTo once the device is idle).
inline cudaMemPool_t cuda_memory_pool(int device) { return cuda_detail::device_state(device).pool; }

// The bytes pnn's memory pool of the current device holds (in use or kept for reuse): tests check that
// training allocates nothing new after its first step.
inline std::uint64_t cuda_pool_reserved_bytes() {
  std::uint64_t reserved = 0;
  PNN_CUDA_CHECK(cudaMemPoolGetAttribute(cuda_memory_pool(cuda_detail::current_device()),
                                         cudaMemPoolAttrReservedMemCurrent, &reserved));
  return reserved;
}

// Lets each of `devices` read and write the tensors pnn allocates on the others, wherever the hardware
// allows it (cudaDeviceCanAccessPeer): pool memory is private to its device until cudaMemPoolSetAccess
// opens it, and cudaDeviceEnablePeerAccess does not. Needed by code whose kernels touch a peer's buffers
// directly (NCCL within one process); copies between devices do not need it.
inline void cuda_share_memory(const std::vector<int>& devices) {
  for (const int owner : devices) {
    for (const int peer : devices) {
      if (peer == owner) continue;
      int can_access = 0;
      PNN_CUDA_CHECK(cudaDeviceCanAccessPeer(&can_access, peer, owner));
      if (!can_access) continue;
      cudaMemAccessDesc access{};
      access.location.type = cudaMemLocationTypeDevice;
      access.location.id = peer;
      access.flags = cudaMemAccessFlagsProtReadWrite;
      PNN_CUDA_CHECK(cudaMemPoolSetAccess(cuda_memory_pool(owner), &access, 1));
    }
  }
}

}  // namespace pnn
