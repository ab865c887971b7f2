// Timeline<cpu>: marks on the host's clock, the seconds between them, and its errors.
#include <doctest/doctest.h>

#include <chrono>
#include <pnn/core/timeline.hpp>
#include <pnn/cpu/timeline.hpp>
#include <string>
#include <thread>
#include <utility>

using namespace pnn;
using namespace std::chrono_literals;

TEST_CASE("timeline.cpu_measures_between_marks") {
  Timeline<cpu> timeline;
  CHECK(timeline.size() == 0);
  const auto a = timeline.mark();
  std::this_thread::sleep_for(20ms);
  const auto b = timeline.mark();
  CHECK(timeline.size() == 2);
  CHECK(timeline.ready());
  timeline.wait();
  CHECK(timeline.seconds(a, b) >= 0.020);
  CHECK(timeline.seconds(b, a) == -timeline.seconds(a, b));
  CHECK(timeline.seconds(a, a) == 0);

  Timeline<cpu> moved = std::move(timeline);
  CHECK(moved.seconds(a, b) >= 0.020);
  moved.clear();
  CHECK(moved.size() == 0);
  CHECK(moved.mark() == 0);  // marks count from zero again
}

TEST_CASE("timeline.unknown_marks_are_errors") {
  Timeline<cpu> timeline;
  const auto a = timeline.mark();
  std::string message;
  try {
    (void)timeline.seconds(a, a + 1);
  } catch (const ArgumentError& error) {
    message = error.what();
  }
  CHECK(message.find("Timeline::seconds(0, 1)") != std::string::npos);
  CHECK(message.find("holds 1 marks") != std::string::npos);
  timeline.clear();
  CHECK_THROWS_AS((void)timeline.seconds(a, a), ArgumentError);
}
