// pnn/cuda/runtime.cuh: what every part of pnn's CUDA backend shares: error checking (PNN_CUDA_CHECK),
// the configuration tag and kernel visibility macros, devices, pnn's compute stream per device, launch
// geometry, and the run-time settings (TF32).
//
// Streams: pnn runs all of its work for a device on ONE compute stream of that device, created on first
// use and shared by every thread of the process, so work that different threads enqueue for the same
// device stays ordered (a Distributed model's rank threads each drive their own device). Nothing in the
// library synchronises the whole device; the documented synchronisation points are the ones that hand a
// value to the host: a device-to-host copy, a reduction's result, a loss value.
//
// Configuration: macros that change what kernels compute (the block size, the reduction grid) name an
// inline namespace, PNN_CUDA_ABI_TAG, around the kernels, launchers and executor internals, so two
// translation units built with different settings do not silently share one of their definitions.
// Process-wide state (streams, memory pools, cuBLAS handles, settings) does not depend on them and is
// deliberately outside the tag: there must be one compute stream per device, whatever the settings.
#pragma once

#if !defined(__CUDACC__)
#error "pnn's CUDA headers (include/pnn/cuda/) are compiled by nvcc only: include them from .cu files"
#endif

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pnn/core/config.hpp"
#include "pnn/core/device.hpp"
#include "pnn/core/error.hpp"

// Threads per block of pnn's element-wise and reduction kernels.
#ifndef PNN_CUDA_BLOCK_THREADS
#define PNN_CUDA_BLOCK_THREADS 256
#endif
// The largest grid of a reduction's first pass. The grid depends only on the element count, never on
// the device, so a reduction adds in the same order (and gives the same bits) on every GPU.
#ifndef PNN_CUDA_REDUCTION_BLOCKS
#define PNN_CUDA_REDUCTION_BLOCKS 1024
#endif

#define PNN_CUDA_ABI_JOIN2(threads, blocks) cuda_v0_threads##threads##_reduction##blocks
#define PNN_CUDA_ABI_JOIN(threads, blocks) PNN_CUDA_ABI_JOIN2(threads, blocks)
// The inline namespace that holds everything whose behaviour depends on the macros above.
#define PNN_CUDA_ABI_TAG PNN_CUDA_ABI_JOIN(PNN_CUDA_BLOCK_THREADS, PNN_CUDA_REDUCTION_BLOCKS)

// Every pnn kernel: hidden, so a shared library built with pnn does not export (and clash over) them.
// PNN_KERNEL_WITH_BLOCK(threads) also tells ptxas the largest block the kernel is launched with, so it
// keeps registers under 65536 / threads (max-pool backward takes 80 per thread unbounded, which would
// fail to launch in blocks of 1024). PNN_KERNEL is for kernels launched with block_threads.
#define PNN_KERNEL_WITH_BLOCK(threads) __global__ __launch_bounds__(threads) __attribute__((visibility("hidden")))
#define PNN_KERNEL PNN_KERNEL_WITH_BLOCK(PNN_CUDA_BLOCK_THREADS)

// PNN_CUDA_CHECK(cudaCall(...)): throws pnn::CudaError naming the call, CUDA's reason, and file:line.
#define PNN_CUDA_CHECK(call) ::pnn::cuda_detail::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: throws pnn::CudaError naming the kernel if the launch failed.
#define PNN_CUDA_CHECK_LAUNCH(kernel_name) \
  ::pnn::cuda_detail::check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)

namespace pnn {

static_assert(PNN_CUDA_BLOCK_THREADS >= 32 && PNN_CUDA_BLOCK_THREADS <= 1024 &&
                  (PNN_CUDA_BLOCK_THREADS & (PNN_CUDA_BLOCK_THREADS - 1)) == 0,
              "PNN_CUDA_BLOCK_THREADS must be a power of two between 32 and 1024");
static_assert(PNN_CUDA_REDUCTION_BLOCKS >= 1 && PNN_CUDA_REDUCTION_BLOCKS <= 1024 &&
                  (PNN_CUDA_REDUCTION_BLOCKS & (PNN_CUDA_REDUCTION_BLOCKS - 1)) == 0,
              "PNN_CUDA_REDUCTION_BLOCKS must be a power of two between 1 and 1024 (one block reduces them)");

// A CUDA runtime, cuBLAS or NCCL call failed; the message names the call.
class CudaError : public Error {
 public:
  using Error::Error;
};

// Run-time switches of the CUDA backend, shared by every thread.
struct CudaSettings {
  // Let float matrix products use TF32 tensor cores (10-bit mantissa inputs, float accumulation):
  // several times faster on Ampere and Hopper, at about 1e-3 relative error instead of float's 1e-6.
  // Off by default, so results match the CPU's to float precision.
  std::atomic<bool> allow_tf32{false};
};

inline CudaSettings& cuda_settings() {
  static CudaSettings settings;
  return settings;
}

namespace cuda_detail {

inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    // The runtime also keeps the error as its "last error": cleared, so that a caller who catches this
    // exception does not see it again from the next launch check (sticky errors stay regardless).
    (void)cudaGetLastError();
    throw CudaError(detail::concat(call, " failed: ", cudaGetErrorString(status), " (", cudaGetErrorName(status),
                                   ") at ", file, ":", line));
  }
}

// For destructors, which must not throw: prints the failure. A runtime already being torn down at
// process exit (its memory goes with it) is not a failure worth a message.
inline void report(cudaError_t status, const char* call) noexcept {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();  // as in check(): not to be reported again by the next launch check
  // At exit, the runtime may already be gone; in a failed capture, frees join it and fail with it.
  if (status == cudaErrorCudartUnloading || status == cudaErrorContextIsDestroyed ||
      status == cudaErrorStreamCaptureInvalidated)
    return;
  std::fprintf(stderr, "pnn: %s failed: %s\n", call, cudaGetErrorString(status));
}

// Whether a query (cudaEventQuery, cudaStreamQuery) found the work unfinished. That answer is "not an
// error", but is cleared from the thread's last error anyway (as PyTorch does), so that it can never be
// reported by the next launch check.
inline bool not_ready(cudaError_t status) noexcept {
  if (status != cudaErrorNotReady) return false;
  (void)cudaGetLastError();
  return true;
}

// Sets the current device for its lifetime and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    PNN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) PNN_CUDA_CHECK(cudaSetDevice(device));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) report(cudaSetDevice(previous_), "cudaSetDevice");
  }

 private:
  int previous_ = 0;
};

// An event (without timing), destroyed with its last owner. Destroying a recorded event is allowed: CUDA
// releases it once it completes.
struct EventDeleter {
  void operator()(cudaEvent_t event) const noexcept { report(cudaEventDestroy(event), "cudaEventDestroy"); }
};
using Event = std::shared_ptr<std::remove_pointer_t<cudaEvent_t>>;

// A new event, recorded on `stream` (of the current device).
inline Event record_event(cudaStream_t stream) {
  cudaEvent_t event = nullptr;
  PNN_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  Event owned(event, EventDeleter{});
  PNN_CUDA_CHECK(cudaEventRecord(event, stream));
  return owned;
}

inline constexpr int max_devices = 64;

// What pnn keeps per device: its compute stream, its memory pool and the numbers launches are sized by.
struct DeviceState {
  std::once_flag created;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  int multiprocessors = 1;
};

inline DeviceState& device_state(int device) {
  static std::array<DeviceState, max_devices> states;
  PNN_CHECK(device >= 0 && device < max_devices, CudaError, "CUDA device ", device, " is outside the ", max_devices,
            " devices pnn supports");
  DeviceState& state = states[static_cast<std::size_t>(device)];
  std::call_once(state.created, [&] {
    DeviceGuard guard(device);
    int pools_supported = 0;
    PNN_CUDA_CHECK(cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, device));
    PNN_CHECK(pools_supported != 0, CudaError, "CUDA device ", device,
              " does not support stream-ordered memory pools (cudaMallocAsync), which pnn allocates from");
    // pnn's own pool, not the device's default one: its settings are pnn's business and nobody else's (the
    // default pool belongs to every cudaMallocAsync of the process), and what it holds is pnn's memory.
    cudaMemPoolProps properties{};
    properties.allocType = cudaMemAllocationTypePinned;
    properties.handleTypes = cudaMemHandleTypeNone;
    properties.location.type = cudaMemLocationTypeDevice;
    properties.location.id = device;
    PNN_CUDA_CHECK(cudaMemPoolCreate(&state.pool, &properties));
    try {
      // Freed blocks stay in the pool for the next allocation instead of returning to the driver at every
      // synchronisation: after the first step, training allocates no new device memory.
      std::uint64_t keep_everything = UINT64_MAX;
      PNN_CUDA_CHECK(cudaMemPoolSetAttribute(state.pool, cudaMemPoolAttrReleaseThreshold, &keep_everything));
      PNN_CUDA_CHECK(cudaDeviceGetAttribute(&state.multiprocessors, cudaDevAttrMultiProcessorCount, device));
      // Non-blocking: pnn's stream does not wait for the legacy default stream other code may use.
      PNN_CUDA_CHECK(cudaStreamCreateWithFlags(&state.stream, cudaStreamNonBlocking));
    } catch (...) {
      // call_once runs again on the next call: it must not find half a state.
      report(cudaMemPoolDestroy(state.pool), "cudaMemPoolDestroy");
      state.pool = nullptr;
      throw;
    }
  });
  return state;
}

inline int current_device() {
  int device = 0;
  PNN_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

// What pnn allocated and freed while this thread captured a CUDA graph (graph.cuh keeps one open for
// the length of a capture). A captured allocation is the graph's own and is valid only while the graph
// runs: one the capture did not free too would be allocated anew by every replay, its contents lost
// between them. Memory allocated before the capture and freed during it cannot be freed by a graph at all
// (and the captured work still refers to it): it is kept here, and freed once the capture has ended.
struct CaptureLedger {
  std::vector<void*> live;     // allocated during the capture, not yet freed by it
  std::vector<void*> foreign;  // allocated before the capture, released during it

  // The ledger open on this thread, if any.
  static CaptureLedger*& open() {
    thread_local CaptureLedger* ledger = nullptr;
    return ledger;
  }
  // Keeps `ledger` open on this thread for its lifetime.
  class Scope {
   public:
    explicit Scope(CaptureLedger& ledger) : previous_(std::exchange(open(), &ledger)) {}
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope() { open() = previous_; }

   private:
    CaptureLedger* previous_;
  };
};

// pnn's stream of the current device if this thread is capturing it into a CUDA graph (graph.cuh), else
// nullptr. Memory allocated inside a capture has no pointer attributes until the graph runs, so code that
// would ask which device holds it uses this stream instead. Without a driver (process exit) nullptr too.
inline cudaStream_t capturing_stream() noexcept {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  if (device < 0 || device >= max_devices) return nullptr;
  cudaStream_t stream = nullptr;
  try {
    stream = device_state(device).stream;
  } catch (...) {
    return nullptr;
  }
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  // An invalidated capture still counts: its graph allocations have no pointer attributes either, and
  // the step's locals free them while the failed capture unwinds.
  return status != cudaStreamCaptureStatusNone ? stream : nullptr;
}

// The device that holds `memory` (allocated by pnn, or any device pointer). While this thread captures
// a CudaGraphStep (its ledger is open), the capturing device: memory the capture allocated has no
// pointer attributes yet, and a captured step runs on one device.
inline int device_of(const void* memory) {
  if (CaptureLedger::open() != nullptr) return current_device();
  cudaPointerAttributes attributes{};
  PNN_CUDA_CHECK(cudaPointerGetAttributes(&attributes, memory));
  PNN_CHECK(attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged, CudaError,
            "pnn expected device memory but got a host pointer (memory type ", static_cast<int>(attributes.type), ")");
  return attributes.device;
}

}  // namespace cuda_detail

// pnn's compute stream of `device`; every pnn kernel, copy and cuBLAS call for that device runs on it.
inline cudaStream_t cuda_stream(int device) { return cuda_detail::device_state(device).stream; }
// pnn's compute stream of the calling thread's current device.
inline cudaStream_t cuda_stream() { return cuda_stream(cuda_detail::current_device()); }

// Waits until everything pnn enqueued for the current device is done (for timing, and before handing
// device memory to code that does not use pnn's stream).
inline void cuda_synchronize() { PNN_CUDA_CHECK(cudaStreamSynchronize(cuda_stream())); }

// The number of CUDA devices, or 0 when there is none (or no driver); `reason` receives CUDA's
// explanation in that case.
inline int cuda_device_count(std::string* reason = nullptr) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (reason) *reason = cudaGetErrorString(status);
    (void)cudaGetLastError();  // the failed query must not be reported by the next launch check
    return 0;
  }
  if (count == 0 && reason) *reason = "cudaGetDeviceCount reports no device";
  return count;
}

// Whether this process can run pnn's CUDA backend (it sees at least one device); `reason` receives
// CUDA's explanation when it cannot ("no CUDA-capable device is detected", an old driver, ...).
inline bool cuda_available(std::string* reason = nullptr) { return cuda_device_count(reason) > 0; }

// One line naming the device and the settings the backend runs with, for programs to print.
inline std::string cuda_description() {
  const int device = cuda_detail::current_device();
  cudaDeviceProp properties{};
  PNN_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  int runtime = 0;
  PNN_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  return detail::concat("cuda device ", device, ": ", properties.name, " (sm_", properties.major, properties.minor,
                        ", ", properties.multiProcessorCount, " SMs, ", properties.totalGlobalMem >> 20,
                        " MiB), CUDA runtime ", runtime / 1000, ".", (runtime % 1000) / 10, ", TF32 ",
                        cuda_settings().allow_tf32 ? "on" : "off");
}

namespace cuda_detail {
inline namespace PNN_CUDA_ABI_TAG {

inline constexpr int block_threads = PNN_CUDA_BLOCK_THREADS;

// Blocks for a grid-stride loop over `count` elements: enough to fill the device several times over,
// never more than there is work for (and at least one, so a launch over nothing is never made).
inline unsigned grid_blocks(index count, int device) {
  const index wanted = (count + block_threads - 1) / block_threads;
  const index most = static_cast<index>(device_state(device).multiprocessors) * 32;
  return static_cast<unsigned>(std::clamp<index>(wanted, 1, most));
}

// The first index and the stride of a grid-stride loop, in 64 bits: tensors may hold more than 2^31
// elements.
__device__ inline index global_thread() {
  return static_cast<index>(blockIdx.x) * static_cast<index>(blockDim.x) + static_cast<index>(threadIdx.x);
}
__device__ inline index grid_threads() { return static_cast<index>(gridDim.x) * static_cast<index>(blockDim.x); }

}  // namespace PNN_CUDA_ABI_TAG
}  // namespace cuda_detail

}  // namespace pnn
