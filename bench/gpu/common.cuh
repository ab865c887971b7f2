// bench/gpu/common.cuh: what the GPU benchmarks share: a small command-line reader (no CLI11, so the
// programs build from nvcc and pnn's headers alone), CUDA-event timing, medians, JSON output.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "pnn/cuda/runtime.cuh"

namespace bench {

// --name value and --flag arguments; unknown names are an error, so a typo is not silently ignored.
class Arguments {
 public:
  Arguments(int argc, char** argv, std::map<std::string, std::string> defaults, std::vector<std::string> flags = {})
      : values_(std::move(defaults)) {
    for (int i = 1; i < argc; ++i) {
      std::string name = argv[i];
      if (name == "--help" || name == "-h") {
        std::printf("options (defaults):");
        for (const auto& [key, value] : values_) std::printf(" --%s %s", key.c_str(), value.c_str());
        for (const auto& flag : flags) std::printf(" --%s", flag.c_str());
        std::printf("\n");
        std::exit(0);
      }
      if (name.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument " + name);
      name = name.substr(2);
      if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
        values_[name] = "1";
      } else if (values_.count(name) && i + 1 < argc) {
        values_[name] = argv[++i];
      } else {
        throw std::invalid_argument("unknown option or missing value: --" + name);
      }
    }
  }
  std::string text(const std::string& name) const { return values_.count(name) ? values_.at(name) : ""; }
  long number(const std::string& name) const { return std::stol(text(name)); }
  bool flag(const std::string& name) const { return text(name) == "1"; }
  std::vector<std::string> list(const std::string& name) const {
    std::vector<std::string> items;
    std::stringstream stream(text(name));
    for (std::string item; std::getline(stream, item, ',');)
      if (!item.empty()) items.push_back(item);
    return items;
  }
  std::vector<long> numbers(const std::string& name) const {
    std::vector<long> items;
    for (const auto& item : list(name)) items.push_back(std::stol(item));
    return items;
  }

 private:
  std::map<std::string, std::string> values_;
};

inline double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double position = q * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(position);
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (values[above] - values[below]) * (position - static_cast<double>(below));
}

struct Timing {
  double median_ms = 0, p10_ms = 0, p90_ms = 0;  // per call, from CUDA events on the stream
  double wall_ms = 0;                            // per call: host clock over all calls, ending with a synchronisation
  int calls = 0;
};

// Times `calls` calls of body(i) after `warmup` untimed ones: an event is recorded on `stream` before the
// first call and after each, so call i takes the time between events i and i + 1 on the GPU's timeline
// (including any wait for the host to enqueue it).
template <class Body>
Timing time_calls(cudaStream_t stream, int warmup, int calls, Body&& body) {
  for (int i = 0; i < warmup; ++i) body(i);
  PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<cudaEvent_t> events(static_cast<std::size_t>(calls) + 1);
  for (auto& event : events) PNN_CUDA_CHECK(cudaEventCreate(&event));
  const auto start = std::chrono::steady_clock::now();
  PNN_CUDA_CHECK(cudaEventRecord(events[0], stream));
  for (int i = 0; i < calls; ++i) {
    body(warmup + i);
    PNN_CUDA_CHECK(cudaEventRecord(events[static_cast<std::size_t>(i) + 1], stream));
  }
  PNN_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto end = std::chrono::steady_clock::now();
  std::vector<double> times;
  for (int i = 0; i < calls; ++i) {
    float ms = 0;
    PNN_CUDA_CHECK(
        cudaEventElapsedTime(&ms, events[static_cast<std::size_t>(i)], events[static_cast<std::size_t>(i) + 1]));
    times.push_back(ms);
  }
  for (auto& event : events) PNN_CUDA_CHECK(cudaEventDestroy(event));
  Timing timing;
  timing.calls = calls;
  timing.median_ms = quantile(times, 0.5);
  timing.p10_ms = quantile(times, 0.1);
  timing.p90_ms = quantile(times, 0.9);
  timing.wall_ms = std::chrono::duration<double, std::milli>(end - start).count() / std::max(calls, 1);
  return timing;
}

// Times `repeats` back-to-back calls of body() as one interval of CUDA events, `samples` times; returns
// the median time per call (for kernels too short to time one by one).
template <class Body>
Timing time_batched(cudaStream_t stream, int warmup, int samples, int repeats, Body&& body) {
  Timing per_sample = time_calls(stream, warmup, samples, [&](int) {
    for (int r = 0; r < repeats; ++r) body();
  });
  per_sample.median_ms /= repeats;
  per_sample.p10_ms /= repeats;
  per_sample.p90_ms /= repeats;
  per_sample.wall_ms /= repeats;
  return per_sample;
}

// Builds one line of JSON from key/value pairs, in the order given.
class Json {
 public:
  Json& add(const std::string& key, const std::string& value) {
    std::string escaped;
    for (char c : value) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    return raw(key, "\"" + escaped + "\"");
  }
  Json& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  // NaN and infinities have no JSON spelling: they are written null, which readers take as "not finite".
  Json& add(const std::string& key, double value) {
    if (!std::isfinite(value)) return raw(key, "null");
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.6g", value);
    return raw(key, buffer);
  }
  Json& add(const std::string& key, long value) { return raw(key, std::to_string(value)); }
  Json& add(const std::string& key, int value) { return raw(key, std::to_string(value)); }
  Json& add(const std::string& key, std::size_t value) { return raw(key, std::to_string(value)); }
  Json& add(const std::string& key, bool value) { return raw(key, value ? "true" : "false"); }
  Json& add(const std::string& key, const Timing& timing) {
    return add(key + "median_ms", timing.median_ms)
        .add(key + "p10_ms", timing.p10_ms)
        .add(key + "p90_ms", timing.p90_ms)
        .add(key + "wall_ms", timing.wall_ms);
  }
  void print() const {
    std::printf("{%s}\n", body_.c_str());
    std::fflush(stdout);
  }

 private:
  Json& raw(const std::string& key, const std::string& value) {
    if (!body_.empty()) body_ += ", ";
    body_ += "\"" + key + "\": " + value;
    return *this;
  }
  std::string body_;
};

inline std::string device_name() {
  cudaDeviceProp properties{};
  PNN_CUDA_CHECK(cudaGetDeviceProperties(&properties, pnn::cuda_detail::current_device()));
  return properties.name;
}

// Thrown by require_device() when there is no GPU: the program exits with status 2.
struct NoDevice : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void require_device() {
  std::string reason;
  if (pnn::cuda_device_count(&reason) == 0) throw NoDevice("no CUDA device: " + reason);
}

// Runs main's body; prints any exception as a JSON error line and returns 1 (2 without a GPU).
template <class Body>
int guarded_main(const char* program, Body&& body) {
  try {
    body();
    return 0;
  } catch (const NoDevice& error) {
    Json().add("program", program).add("error", error.what()).print();
    return 2;
  } catch (const std::exception& error) {
    Json().add("program", program).add("error", error.what()).print();
    return 1;
  }
}

}  // namespace bench
