// pnn/cpu/timeline.hpp: Timeline<cpu>: the cpu does its work when it is called, so a mark is the host
// clock's time when it is taken.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

#include "pnn/core/timeline.hpp"

namespace pnn {

template <>
class Timeline<cpu> {
 public:
  using Mark = std::size_t;

  Mark mark() {
    marks_.push_back(Clock::now());
    return marks_.size() - 1;
  }
  bool ready() const { return true; }  // the cpu has done the work by the time the mark is taken
  void wait() const {}
  double seconds(Mark from, Mark to) const {
    detail::check_marks(from, to, marks_.size());
    return std::chrono::duration<double>(marks_[to] - marks_[from]).count();
  }
  void clear() { marks_.clear(); }
  std::size_t size() const { return marks_.size(); }

 private:
  using Clock = std::chrono::steady_clock;
  std::vector<Clock::time_point> marks_;
};

static_assert(DeviceTimeline<Timeline<cpu>>);

}  // namespace pnn
