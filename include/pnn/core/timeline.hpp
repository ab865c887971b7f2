// pnn/core/timeline.hpp: Timeline<D>, marks taken in the work a thread hands a device, and the device's
// time between them. The strategies measure their statistics through it (dist/strategy.hpp).
//
//   Timeline<D> timeline;
//   const auto a = timeline.mark();   ... work on D ...   const auto b = timeline.mark();
//   timeline.wait();                  // the device has passed every mark
//   double seconds = timeline.seconds(a, b);
//
// Why a device seam: the cpu does its work when it is called, so a mark is simply the time it is taken.
// A GPU call only enqueues work; a host clock would time the enqueueing. There a mark is an event on
// pnn's compute stream (cuda/timeline.cuh), passed once the device has done everything enqueued before
// it, and seconds() is the device's time. wait() is then a synchronisation point, which is why ready()
// can ask without waiting.
//
// Marks are indices, valid until clear(); a cleared timeline reuses what it holds (events, on a GPU).
#pragma once

#include <concepts>
#include <cstddef>
#include <vector>

#include "pnn/core/config.hpp"
#include "pnn/core/device.hpp"
#include "pnn/core/error.hpp"

namespace pnn {

template <class D>
class Timeline {
  static_assert(always_false<D>,
                "pnn has no Timeline for this device type. For pnn::cpu, include <pnn/cpu/cpu.hpp>; for pnn::cuda, "
                "include <pnn/cuda/cuda.hpp> in a .cu file compiled by nvcc; a new device specialises Timeline "
                "next to its DeviceTraits.");
};

template <class T>
concept DeviceTimeline = std::movable<T> && requires(T timeline, const T& const_timeline, typename T::Mark mark) {
  { timeline.mark() } -> std::same_as<typename T::Mark>;
  { const_timeline.ready() } -> std::same_as<bool>;
  const_timeline.wait();
  { const_timeline.seconds(mark, mark) } -> std::same_as<double>;
  timeline.clear();
  { const_timeline.size() } -> std::same_as<std::size_t>;
};

namespace detail {
inline void check_marks(std::size_t from, std::size_t to, std::size_t size) {
  PNN_CHECK(from < size && to < size, ArgumentError, "Timeline::seconds(", from, ", ", to, "): the timeline holds ",
            size, " marks (marks are forgotten by clear())");
}
}  // namespace detail

}  // namespace pnn
