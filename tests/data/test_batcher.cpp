// Batcher and copy_samples: every sample once per epoch, reproducible and epoch-dependent shuffling,
// uneven and dropped last batches, pixel scaling, storage reuse and argument checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include <pnn/data/batcher.hpp>

using namespace pnn;

namespace {

// `count` samples of 3 pixels each; sample i has label i and pixels (i, 2i, 255 - i) modulo 256, so a
// batch row tells which sample it came from and whether its pixels travelled with its label.
Dataset numbered_dataset(pnn::index count) {
  Dataset data;
  data.images = Tensor<std::uint8_t, 2>(count, 3);
  data.labels = Tensor<std::int32_t, 1>(count);
  data.sample_shape = {1, 1, 3};
  data.classes = static_cast<pnn::index>(count);
  for (pnn::index i = 0; i < count; ++i) {
    data.images(i, 0) = static_cast<std::uint8_t>(i % 256);
    data.images(i, 1) = static_cast<std::uint8_t>(2 * i % 256);
    data.images(i, 2) = static_cast<std::uint8_t>(255 - i % 256);
    data.labels[i] = static_cast<std::int32_t>(i);
  }
  return data;
}

// The samples of one epoch, in the order the batches delivered them; checks each row against its label.
template <class T = float>
std::vector<pnn::index> run_epoch(Batcher& batcher, pnn::index epoch, std::vector<pnn::index>* batch_sizes = nullptr) {
  batcher.start_epoch(epoch);
  BasicBatch<T> batch;
  std::vector<pnn::index> seen;
  while (batcher.next(batch)) {
    if (batch_sizes) batch_sizes->push_back(batch.size());
    REQUIRE(batch.inputs.dim(0) == batch.size());
    REQUIRE(batch.inputs.dim(1) == 3);
    for (pnn::index row = 0; row < batch.size(); ++row) {
      const pnn::index sample = batch.labels[row];
      CHECK(batch.inputs(row, 0) == static_cast<T>(sample % 256) / T(255));
      CHECK(batch.inputs(row, 1) == static_cast<T>(2 * sample % 256) / T(255));
      seen.push_back(sample);
    }
  }
  return seen;
}

std::vector<pnn::index> sorted(std::vector<pnn::index> samples) {
  std::sort(samples.begin(), samples.end());
  return samples;
}

std::vector<pnn::index> first_samples(pnn::index count) {
  std::vector<pnn::index> samples(static_cast<std::size_t>(count));
  std::iota(samples.begin(), samples.end(), pnn::index{0});
  return samples;
}

}  // namespace

TEST_CASE("batcher.every_sample_once_per_epoch") {
  const Dataset data = numbered_dataset(103);
  Batcher batcher(data, 10, 42);
  CHECK(batcher.batches_per_epoch() == 11);
  CHECK(batcher.samples_per_epoch() == 103);
  for (pnn::index epoch = 0; epoch < 3; ++epoch) {
    CAPTURE(epoch);
    std::vector<pnn::index> sizes;
    const auto seen = run_epoch(batcher, epoch, &sizes);
    CHECK(sorted(seen) == first_samples(103));
    CHECK(seen != first_samples(103));  // shuffled
    CHECK(sizes == std::vector<pnn::index>{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3});
  }
  // The epoch is over until the next start_epoch().
  Batch batch;
  CHECK_FALSE(batcher.next(batch));
  CHECK_FALSE(batcher.next(batch));
}

TEST_CASE("batcher.shuffling_depends_on_seed_and_epoch_only") {
  const Dataset data = numbered_dataset(200);
  Batcher first(data, 16, 7);
  Batcher second(data, 16, 7);
  Batcher other_seed(data, 16, 8);
  const auto epoch0 = run_epoch(first, 0);
  const auto epoch1 = run_epoch(first, 1);
  CHECK(run_epoch(second, 0) == epoch0);
  CHECK(run_epoch(second, 1) == epoch1);
  CHECK(epoch0 != epoch1);
  CHECK(run_epoch(other_seed, 0) != epoch0);

  // Epoch 1 does not depend on how much of epoch 0 was consumed, nor on the order epochs are started in.
  Batcher skipping(data, 16, 7);
  Batch batch;
  REQUIRE(skipping.next(batch));
  CHECK(run_epoch(skipping, 1) == epoch1);
  CHECK(run_epoch(skipping, 0) == epoch0);
  // Nor on the batch size: the order is a property of the epoch.
  Batcher other_batch_size(data, 50, 7);
  CHECK(run_epoch(other_batch_size, 1) == epoch1);
  // And it is Generator(seed).split(streams::shuffling).split(epoch) applied to 0, 1, 2, ...
  std::vector<pnn::index> expected = first_samples(200);
  Generator(7).split(streams::shuffling).split(1).shuffle(std::span<pnn::index>(expected));
  CHECK(epoch1 == expected);
  CHECK(std::vector<pnn::index>(first.order().begin(), first.order().end()) == epoch1);
}

TEST_CASE("batcher.skip_passes_over_batches") {
  // A resumed run skips the batches it took before it stopped, and then sees the same ones.
  const Dataset data = numbered_dataset(23);
  Batcher whole(data, 5, 9), resumed(data, 5, 9);
  Batch expected, batch;
  whole.start_epoch(2);
  resumed.start_epoch(2);
  for (int i = 0; i < 3; ++i) REQUIRE(whole.next(expected));
  resumed.skip(2);
  resumed.skip(1);
  while (whole.next(expected)) {
    REQUIRE(resumed.next(batch));
    CHECK(std::vector<std::int32_t>(batch.labels.data(), batch.labels.data() + batch.size()) ==
          std::vector<std::int32_t>(expected.labels.data(), expected.labels.data() + expected.size()));
  }
  CHECK_FALSE(resumed.next(batch));
  resumed.start_epoch(0);
  resumed.skip(5);  // all of them: the epoch is over
  CHECK_FALSE(resumed.next(batch));
  resumed.start_epoch(0);
  CHECK_THROWS_WITH_AS(resumed.skip(6), doctest::Contains("cannot skip 6 batches; 5 are left"), ArgumentError);
}

TEST_CASE("batcher.sequential_order") {
  const Dataset data = numbered_dataset(25);
  Batcher batcher(data, 4, 3, BatchOrder::sequential);
  CHECK(run_epoch(batcher, 0) == first_samples(25));
  CHECK(run_epoch(batcher, 5) == first_samples(25));
}

TEST_CASE("batcher.uneven_and_dropped_last_batch") {
  const Dataset data = numbered_dataset(23);
  Batcher keep(data, 5, 1);
  std::vector<pnn::index> sizes;
  CHECK(run_epoch(keep, 0, &sizes).size() == 23);
  CHECK(sizes == std::vector<pnn::index>{5, 5, 5, 5, 3});

  Batcher drop(data, 5, 1, BatchOrder::shuffled, true);
  CHECK(drop.batches_per_epoch() == 4);
  CHECK(drop.samples_per_epoch() == 20);
  sizes.clear();
  const auto seen = run_epoch(drop, 0, &sizes);
  CHECK(sizes == std::vector<pnn::index>{5, 5, 5, 5});
  // The dropped samples are the epoch's last three, and differ from epoch to epoch.
  const std::vector<pnn::index> kept(drop.order().begin(), drop.order().begin() + 20);
  CHECK(seen == kept);
  const auto dropped_in_epoch0 = std::vector<pnn::index>(drop.order().begin() + 20, drop.order().end());
  run_epoch(drop, 1);
  CHECK(std::vector<pnn::index>(drop.order().begin() + 20, drop.order().end()) != dropped_in_epoch0);

  // A batch as large as the dataset, or larger without drop_last: one batch.
  Batcher whole(data, 23, 1, BatchOrder::sequential, true);
  CHECK(whole.batches_per_epoch() == 1);
  Batcher larger(data, 100, 1);
  sizes.clear();
  CHECK(sorted(run_epoch(larger, 0, &sizes)) == first_samples(23));
  CHECK(sizes == std::vector<pnn::index>{23});
}

TEST_CASE("batcher.pixel_scaling") {
  Dataset data = numbered_dataset(3);
  data.images(0, 0) = 0;
  data.images(0, 1) = 255;
  data.images(0, 2) = 51;
  data.images(1, 0) = 1;
  const std::vector<pnn::index> samples = {0, 1};
  BasicBatch<double> batch;
  copy_samples(data, std::span<const pnn::index>(samples), batch);
  CHECK(batch.inputs(0, 0) == 0.0);
  CHECK(batch.inputs(0, 1) == 1.0);
  CHECK(batch.inputs(0, 2) == doctest::Approx(0.2).epsilon(1e-15));
  CHECK(batch.inputs(1, 0) == doctest::Approx(1.0 / 255).epsilon(1e-15));
  Batch single;
  copy_samples(data, std::span<const pnn::index>(samples), single);
  CHECK(single.inputs(0, 1) == 1.0f);
  CHECK(single.inputs(0, 2) == 0.2f);
  // Every byte maps into [0, 1], in order.
  float previous = -1;
  for (int byte = 0; byte < 256; ++byte) {
    data.images(2, 0) = static_cast<std::uint8_t>(byte);
    const std::vector<pnn::index> last = {2};
    copy_samples(data, std::span<const pnn::index>(last), single);
    CHECK(single.inputs(0, 0) > previous);
    CHECK(single.inputs(0, 0) <= 1.0f);
    previous = single.inputs(0, 0);
  }
}

TEST_CASE("batcher.copy_samples_in_given_order") {
  const Dataset data = numbered_dataset(10);
  const std::vector<pnn::index> samples = {7, 2, 2, 9};
  Batch batch;
  copy_samples(data, std::span<const pnn::index>(samples), batch);
  REQUIRE(batch.size() == 4);
  CHECK(batch.labels[0] == 7);
  CHECK(batch.labels[2] == 2);
  CHECK(batch.inputs(3, 2) == static_cast<float>(255 - 9) / 255.0f);
  const std::vector<pnn::index> none;
  copy_samples(data, std::span<const pnn::index>(none), batch);
  CHECK(batch.size() == 0);
}

// A process of a distributed model makes only its rows of each batch (the inputs of some, the labels of
// others), in the serial order: the held rows are the serial batch's rows at the same places.
TEST_CASE("batcher.makes_only_the_rows_held") {
  const Dataset data = numbered_dataset(30);
  Batcher whole(data, 8, 4), part(data, 8, 4);
  const auto rows_held = [](pnn::index count) {
    return BatchRows{.inputs = {count / 4, count / 2}, .targets = {1, count - 1}};
  };
  Batch expected, batch;
  pnn::index batches = 0;
  while (whole.next(expected)) {
    REQUIRE(part.next(batch, rows_held));
    ++batches;
    const pnn::index count = expected.size();
    CHECK(batch.size() == count);
    CHECK(batch.held == rows_held(count));
    REQUIRE(batch.inputs.dim(0) == count / 2);
    REQUIRE(batch.labels.size() == count - 1);
    for (pnn::index row = 0; row < count / 2; ++row)
      for (pnn::index pixel = 0; pixel < 3; ++pixel)
        CHECK(batch.inputs(row, pixel) == expected.inputs(count / 4 + row, pixel));
    for (pnn::index row = 0; row < count - 1; ++row) CHECK(batch.labels[row] == expected.labels[1 + row]);
  }
  CHECK(batches == 4);
  CHECK_FALSE(part.next(batch, rows_held));
  const std::vector<pnn::index> samples = {1, 2, 3};
  CHECK_THROWS_WITH_AS(
      copy_samples(data, std::span<const pnn::index>(samples), batch, BatchRows{.inputs = {0, 3}, .targets = {2, 2}}),
      "copy_samples: rows [2, 4) of labels are outside a batch of 3 samples", ArgumentError);
}

TEST_CASE("batcher.reuses_batch_storage") {
  const Dataset data = numbered_dataset(50);
  Batcher batcher(data, 8, 5);
  Batch batch;
  REQUIRE(batcher.next(batch));
  const float* inputs = batch.inputs.data();
  const std::int32_t* labels = batch.labels.data();
  for (pnn::index epoch = 0; epoch < 3; ++epoch) {
    batcher.start_epoch(epoch);
    while (batcher.next(batch)) {  // includes the smaller last batch, then full ones again
      CHECK(batch.inputs.data() == inputs);
      CHECK(batch.labels.data() == labels);
    }
  }
}

TEST_CASE("batcher.bad_arguments") {
  const Dataset data = numbered_dataset(10);
  CHECK_THROWS_WITH_AS(Batcher(data, 0, 1), "Batcher: the batch size must be positive, got 0", ArgumentError);
  CHECK_THROWS_WITH_AS(Batcher(data, -3, 1), "Batcher: the batch size must be positive, got -3", ArgumentError);
  const Dataset empty{};
  CHECK_THROWS_WITH_AS(Batcher(empty, 4, 1), "Batcher: the dataset is empty", ArgumentError);
  CHECK_THROWS_WITH_AS(Batcher(data, 11, 1, BatchOrder::shuffled, true), doctest::Contains("leaves no batch"),
                       ArgumentError);
  Batcher batcher(data, 4, 1);
  CHECK_THROWS_WITH_AS(batcher.start_epoch(-1), "Batcher: the epoch must not be negative, got -1", ArgumentError);
  const std::vector<pnn::index> outside = {3, 10};
  Batch batch;
  CHECK_THROWS_WITH_AS(copy_samples(data, std::span<const pnn::index>(outside), batch),
                       "copy_samples: sample index 10 is outside a dataset of 10 samples", ArgumentError);
  const std::vector<pnn::index> negative = {-1};
  CHECK_THROWS_AS(copy_samples(data, std::span<const pnn::index>(negative), batch), ArgumentError);
}

TEST_CASE("batcher.regression_dataset") {
  // A RegressionDataset is cut in the order a Dataset of its size is (same seed), each row's inputs
  // travelling with its targets, converted to the batch's type.
  const pnn::index count = 37;
  RegressionDataset data;
  data.inputs = Tensor<float, 2>(count, 2);
  data.targets = Tensor<float, 2>(count, 3);
  for (pnn::index i = 0; i < count; ++i) {
    data.inputs(i, 0) = static_cast<float>(i);
    data.inputs(i, 1) = 0.5f * static_cast<float>(i);
    for (pnn::index j = 0; j < 3; ++j) data.targets(i, j) = static_cast<float>(10 * i + j);
  }
  const Dataset numbered = numbered_dataset(count);
  Batcher classification(numbered, 8, 11);
  BasicBatcher<RegressionDataset> regression(data, 8, 11);
  CHECK(regression.batches_per_epoch() == classification.batches_per_epoch());
  for (pnn::index epoch = 0; epoch < 2; ++epoch) {
    const auto expected = run_epoch(classification, epoch);
    regression.start_epoch(epoch);
    RegressionBatch<double> batch;
    std::vector<pnn::index> seen;
    while (regression.next(batch)) {
      REQUIRE(batch.inputs.dim(0) == batch.size());
      REQUIRE(batch.targets.dim(1) == 3);
      for (pnn::index row = 0; row < batch.size(); ++row) {
        const auto sample = static_cast<pnn::index>(batch.inputs(row, 0));
        CHECK(batch.inputs(row, 1) == 0.5 * static_cast<double>(sample));
        for (pnn::index j = 0; j < 3; ++j) CHECK(batch.targets(row, j) == static_cast<double>(10 * sample + j));
        const auto targets = batch_targets(std::as_const(batch));
        CHECK(targets.data() == batch.targets.data());
        seen.push_back(sample);
      }
    }
    CHECK(seen == expected);
  }
  RegressionDataset mismatched;
  mismatched.inputs = Tensor<float, 2>(4, 2);
  mismatched.targets = Tensor<float, 2>(3, 1);
  CHECK_THROWS_WITH_AS(BasicBatcher<RegressionDataset>(mismatched, 2, 1),
                       "Batcher: the dataset has 4 input rows but 3 target rows", ArgumentError);
}
