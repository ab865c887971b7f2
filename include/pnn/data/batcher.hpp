// pnn/data/batcher.hpp: Batcher, which cuts a Dataset into mini-batches (shuffled anew each epoch), and
// copy_samples(), which turns chosen samples into a batch of floats in [0, 1].
//
// Epoch e's order comes from Generator(seed).split(streams::shuffling).split(e) applied to 0, 1, 2, ...:
// it depends on the seed and the epoch only, not on how many batches of earlier epochs were taken, so a
// resumed or step-limited run sees the same batches as an uninterrupted one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <type_traits>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/random.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/data/dataset.hpp"

namespace pnn {

// A mini-batch: one row of inputs per sample, and the samples' labels.
template <class T = float>
struct BasicBatch {
  static_assert(std::is_floating_point_v<T>,
                "BasicBatch<T> holds network inputs: T must be float or double, the model's value_type");

  Tensor<T, 2> inputs;             // (size, features), pixels scaled to [0, 1]
  Tensor<std::int32_t, 1> labels;  // (size,)

  index size() const { return labels.size(); }
};
using Batch = BasicBatch<float>;

enum class BatchOrder {
  sequential,  // 0, 1, 2, ... every epoch (evaluation, debugging)
  shuffled,    // a new permutation every epoch (training)
};

// Fills `batch` with the given samples of `data`, in that order. The batch's tensors are reused: they
// allocate only when they grow.
template <class T>
void copy_samples(const Dataset& data, std::span<const index> sample_indices, BasicBatch<T>& batch) {
  const index count = static_cast<index>(sample_indices.size());
  const index features = data.features();
  batch.inputs.resize({count, features});
  batch.labels.resize({count});
  for (const index sample : sample_indices)
    PNN_CHECK(sample >= 0 && sample < data.size(), ArgumentError, "copy_samples: sample index ", sample,
              " is outside a dataset of ", data.size(), " samples");
  for (index row = 0; row < count; ++row) {
    const index sample = sample_indices[static_cast<std::size_t>(row)];
#if defined(__GNUC__)
    // Shuffled rows are scattered over the whole dataset: fetching the next row while this one converts
    // makes a shuffled batch of 64 Fashion-MNIST images three times quicker (75 -> 25 us).
    if (row + 1 < count) {
      const std::uint8_t* next = data.images.data() + sample_indices[static_cast<std::size_t>(row + 1)] * features;
      for (index offset = 0; offset < features; offset += 64) __builtin_prefetch(next + offset);
    }
#endif
    const std::uint8_t* source = data.images.data() + sample * features;
    T* destination = batch.inputs.data() + row * features;
    // A division (not a multiplication by 1/255) so that 255 becomes exactly 1; it vectorises all the same.
    for (index feature = 0; feature < features; ++feature)
      destination[feature] = static_cast<T>(source[feature]) / T(255);
    batch.labels[row] = data.labels[sample];
  }
}

// Hands out the mini-batches of one epoch after another:
//
//   Batcher batcher(data.train, 64, seed);
//   Batch batch;
//   for (index epoch = 0; epoch < epochs; ++epoch) {
//     batcher.start_epoch(epoch);
//     while (batcher.next(batch)) { ... }
//   }
//
// The batcher refers to `data`, which must outlive it.
class Batcher {
 public:
  Batcher(const Dataset& data, index batch_size, std::uint64_t seed, BatchOrder order = BatchOrder::shuffled,
          bool drop_last = false)
      : data_(&data), batch_size_(batch_size), order_(order), drop_last_(drop_last),
        shuffling_(Generator(seed).split(streams::shuffling)) {
    PNN_CHECK(batch_size > 0, ArgumentError, "Batcher: the batch size must be positive, got ", batch_size);
    PNN_CHECK(data.size() > 0, ArgumentError, "Batcher: the dataset is empty");
    PNN_CHECK(data.labels.size() == data.size(), ArgumentError, "Batcher: the dataset has ", data.size(),
              " images but ", data.labels.size(), " labels");
    PNN_CHECK(!drop_last || batch_size <= data.size(), ArgumentError, "Batcher: with drop_last, a batch size of ",
              batch_size, " leaves no batch of a dataset of ", data.size(), " samples; use a smaller batch");
    samples_.resize(static_cast<std::size_t>(data.size()));
    start_epoch(0);
  }
  Batcher(Dataset&&, index, std::uint64_t, BatchOrder = BatchOrder::shuffled, bool = false) = delete;  // would dangle

  // Sets the sample order for `epoch` and rewinds to its first batch.
  void start_epoch(index epoch) {
    PNN_CHECK(epoch >= 0, ArgumentError, "Batcher: the epoch must not be negative, got ", epoch);
    std::iota(samples_.begin(), samples_.end(), index{0});
    if (order_ == BatchOrder::shuffled)
      shuffling_.split(static_cast<std::uint64_t>(epoch)).shuffle(std::span<index>(samples_));
    position_ = 0;
  }

  // Fills `batch` with the next batch of this epoch; false (and `batch` untouched) once the epoch is over.
  template <class T>
  bool next(BasicBatch<T>& batch) {
    const index end = samples_per_epoch();
    if (position_ >= end) return false;
    const index count = std::min(batch_size_, end - position_);
    copy_samples(*data_, std::span<const index>(samples_).subspan(static_cast<std::size_t>(position_),
                                                                   static_cast<std::size_t>(count)),
                 batch);
    position_ += count;
    return true;
  }

  index batches_per_epoch() const {
    return drop_last_ ? data_->size() / batch_size_ : (data_->size() + batch_size_ - 1) / batch_size_;
  }
  // The dataset's size, less the samples of a dropped incomplete last batch.
  index samples_per_epoch() const { return drop_last_ ? data_->size() / batch_size_ * batch_size_ : data_->size(); }
  index batch_size() const { return batch_size_; }
  // This epoch's sample order (all samples, including those of a dropped last batch).
  std::span<const index> order() const { return samples_; }

 private:
  const Dataset* data_;
  index batch_size_;
  BatchOrder order_;
  bool drop_last_;
  Generator shuffling_;
  std::vector<index> samples_;
  index position_ = 0;
};

}  // namespace pnn
