// pnn/cuda/timeline.cuh: Timeline<cuda> (core/timeline.hpp), marks that are events on pnn's compute
// stream, so the strategies' statistics measure the GPU's time rather than the host's enqueueing.
//
// Every mark of a timeline is recorded on the compute stream of one device (the calling thread's
// current device when the first mark was taken): events on one stream complete in the order they were
// recorded, so the last mark passed means every mark passed. A timeline that is cleared keeps its
// events and records them again. Waiting and measuring make the events' device current, so a thread
// driving another device (Distributed's caller, reading its ranks' statistics) may ask.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "pnn/core/timeline.hpp"
#include "pnn/cuda/runtime.cuh"

namespace pnn {

template <>
class Timeline<cuda> {
 public:
  using Mark = std::size_t;

  Timeline() = default;
  Timeline(Timeline&& other) noexcept
      : events_(std::move(other.events_)), used_(std::exchange(other.used_, 0)), device_(other.device_) {
    other.events_.clear();
  }
  Timeline& operator=(Timeline&& other) noexcept {
    if (this != &other) {
      destroy_events();
      events_ = std::move(other.events_);
      other.events_.clear();
      used_ = std::exchange(other.used_, 0);
      device_ = other.device_;
    }
    return *this;
  }
  ~Timeline() { destroy_events(); }

  Mark mark() {
    const int device = cuda_detail::current_device();
    if (device != device_) {
      PNN_CHECK(used_ == 0, ArgumentError, "Timeline<cuda>: marks were taken on device ", device_,
                " and this one on device ", device, "; a timeline measures one device (clear() it to move)");
      destroy_events();  // they belong to the other device
      device_ = device;
    }
    if (used_ == events_.size()) {
      events_.reserve(
          std::max<std::size_t>(16, 2 * events_.size()));  // before creating: push_back cannot then throw and leak it
      cudaEvent_t event = nullptr;
      PNN_CUDA_CHECK(cudaEventCreate(&event));  // with timing: not cudaEventDisableTiming
      events_.push_back(event);
    }
    PNN_CUDA_CHECK(cudaEventRecord(events_[used_], cuda_stream(device)));
    return used_++;
  }

  bool ready() const {
    if (used_ == 0) return true;
    const cuda_detail::DeviceGuard guard(device_);
    const cudaError_t status = cudaEventQuery(events_[used_ - 1]);
    if (cuda_detail::not_ready(status)) return false;
    PNN_CUDA_CHECK(status);
    return true;
  }

  void wait() const {
    if (used_ == 0) return;
    const cuda_detail::DeviceGuard guard(device_);
    PNN_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
  }

  // The device's time from one mark to the other (negative if `to` is the earlier mark, as on the cpu:
  // measured from the earlier, since cudaEventElapsedTime promises nothing about a negative span).
  // Both must have been passed: after wait(), or when ready() says so.
  double seconds(Mark from, Mark to) const {
    detail::check_marks(from, to, used_);
    if (to < from) return -seconds(to, from);
    const cuda_detail::DeviceGuard guard(device_);
    float milliseconds = 0;
    PNN_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, events_[from], events_[to]));
    return static_cast<double>(milliseconds) / 1000.0;
  }

  void clear() { used_ = 0; }
  std::size_t size() const { return used_; }

 private:
  // Never throws: report() stays quiet when the runtime is already unloading at process exit.
  void destroy_events() noexcept {
    if (events_.empty()) return;
    int previous = device_;
    cuda_detail::report(cudaGetDevice(&previous), "cudaGetDevice");
    if (previous != device_) cuda_detail::report(cudaSetDevice(device_), "cudaSetDevice");
    // A recorded event may be destroyed before it completes: CUDA releases it once it does.
    for (cudaEvent_t event : events_) cuda_detail::report(cudaEventDestroy(event), "cudaEventDestroy");
    if (previous != device_) cuda_detail::report(cudaSetDevice(previous), "cudaSetDevice");
    events_.clear();
    used_ = 0;
  }

  std::vector<cudaEvent_t> events_;
  std::size_t used_ = 0;  // events_[0, used_) hold this timeline's marks
  int device_ = -1;
};

static_assert(DeviceTimeline<Timeline<cuda>>);

}  // namespace pnn
