// pnn/train/metrics.hpp: per-epoch training metrics, their JSON-lines file, and classification accuracy.
//
// A regression model (trained with MeanSquaredError) has no accuracy: its metrics say classifier = false,
// its test_loss is the mean squared error on the test set, and its JSON has no test_accuracy key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"
#include "pnn/io/atomic_file.hpp"

namespace pnn {

struct EpochMetrics {
  index epoch = 0;
  index steps = 0;  // optimiser steps taken so far, in all epochs
  double train_loss = 0;
  double test_loss = 0;
  double test_accuracy = 0;  // classifiers only
  double seconds = 0;
  double samples_per_second = 0;
  bool classifier = true;  // false for a regression model: test_accuracy means nothing
};

inline std::string to_json(const EpochMetrics& m) {
  std::ostringstream out;
  out.precision(10);
  out << "{\"epoch\": " << m.epoch << ", \"steps\": " << m.steps << ", \"train_loss\": " << m.train_loss
      << ", \"test_loss\": " << m.test_loss;
  if (m.classifier) out << ", \"test_accuracy\": " << m.test_accuracy;
  out << ", \"seconds\": " << m.seconds << ", \"samples_per_second\": " << m.samples_per_second << "}";
  return out.str();
}

// Rewrites the whole file (one JSON object per line), atomically, so it is never seen half-written.
inline void write_metrics(const std::filesystem::path& path, const std::vector<EpochMetrics>& history) {
  std::string text;
  for (const auto& m : history) text += to_json(m) + "\n";
  write_file_atomically(path, text);
}

// The number of rows whose largest output is at the label's position (ties: the first maximum).
template <class T>
index count_correct(TensorView<const T, 2, cpu> outputs, TensorView<const std::int32_t, 1, cpu> labels) {
  PNN_CHECK(outputs.dim(0) == labels.size(), ShapeError, "count_correct: ", outputs.dim(0), " outputs but ",
            labels.size(), " labels");
  index correct = 0;
  const index classes = outputs.dim(1);
  for (index i = 0; i < outputs.dim(0); ++i) {
    const T* row = outputs.data() + i * classes;
    index best = 0;
    for (index j = 1; j < classes; ++j)
      if (row[j] > row[best]) best = j;
    correct += best == labels[i];
  }
  return correct;
}

}  // namespace pnn
