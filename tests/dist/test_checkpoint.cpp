// Checkpoints of distributed models are the serial model's: a data-parallel run resumed with the same
// strategy continues bit for bit; a checkpoint moves between data parallelism, a pipeline and serial
// training (its bytes survive the round trip exactly), and training resumed under another layout or world
// size continues serial training bit for bit (the canonical batch sums, docs/strategies.md "Exactness").
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>
#include <string>
#include <vector>

#include "dist/equivalence.hpp"

using namespace pnn;
using pnn::testing::synthetic_data;

namespace {

using Mlp = Sequential<Input<6>, Dense<8>, ReLU, Dropout<30>, Dense<5>, Tanh, Dense<3>>;
using DataParallel2 = Distributed<Mlp, DataParallel<Local>>;
using TwoStages = Distributed<Mlp, Pipeline<Split<3>, Microbatches<2>, GPipe, Local>>;
using DataParallel4 = Distributed<Mlp, DataParallel<Local>>;  // built with 4 ranks below
constexpr pnn::index batch = 8;
const Adam adam{.learning_rate = 0.01, .weight_decay = 0.01};

std::filesystem::path scratch(const std::string& name) {
  const auto directory =
      std::filesystem::temp_directory_path() / ("pnn-test-dist-checkpoint-" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  return directory / name;
}
std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Steps [from, to) on consecutive batches of 40 samples (step s takes rows 8 (s mod 5) onwards).
template <class Model>
std::vector<float> train(Model& model, Optimizer<Adam>& optimizer, pnn::index from, pnn::index to) {
  static const auto data = synthetic_data(40, 6, 3);
  std::vector<float> losses;
  for (pnn::index s = from; s < to; ++s) {
    const pnn::index begin = (s * batch) % 40;
    losses.push_back(train_step(model, data.inputs.view().rows(begin, batch), data.labels.view().rows(begin, batch),
                                optimizer, SoftmaxCrossEntropy{}));
  }
  return losses;
}

template <class Model>
Mlp whole(Model& model) {
  if constexpr (requires { model.gathered(); }) return model.gathered();
  else return model;
}

std::vector<float> values(const Mlp& model) {
  const auto v = model.parameter_values();
  return std::vector<float>(v.data(), v.data() + v.size());
}

// 20 steps with Writer, a checkpoint, a fresh Reader model and optimiser, 20 steps more.
template <class Writer, class Reader>
Mlp resumed(const std::filesystem::path& path, std::vector<float>& losses, int reader_ranks = 2) {
  {
    Writer first(5, {.ranks = 2});
    Optimizer<Adam> optimizer(adam);
    train(first, optimizer, 0, 20);
    save_checkpoint(first, optimizer, {.step = 20}, path);
  }
  auto second = [&] {
    if constexpr (std::is_same_v<Reader, Mlp>) return Mlp(5);
    else return Reader(5, {.ranks = reader_ranks});
  }();
  Optimizer<Adam> optimizer(adam);
  CHECK(load_checkpoint(second, optimizer, path).step == 20);
  CHECK(optimizer.steps() == 20);
  losses = train(second, optimizer, 20, 40);
  CHECK(optimizer.steps() == 40);
  return whole(second);
}

}  // namespace

TEST_CASE("dist_checkpoint.data_parallel_resumed_equals_uninterrupted") {
  DataParallel2 straight(5, {.ranks = 2});
  Optimizer<Adam> optimizer(adam);
  const auto straight_losses = train(straight, optimizer, 0, 40);
  std::vector<float> losses;
  const Mlp result = resumed<DataParallel2, DataParallel2>(scratch("data-parallel.safetensors"), losses);
  CHECK(values(result) == values(straight.gathered()));  // bit for bit
  CHECK(losses == std::vector<float>(straight_losses.begin() + 20, straight_losses.end()));
}

TEST_CASE("dist_checkpoint.round_trips_exactly_between_layouts") {
  const auto written = scratch("written.safetensors");
  DataParallel2 parallel(5, {.ranks = 2});
  Optimizer<Adam> optimizer(adam);
  train(parallel, optimizer, 0, 7);
  save_checkpoint(parallel, optimizer, {.step = 7, .seed = 2, .batch_size = batch}, written);
  const std::string bytes = file_text(written);

  // Into a serial model and out again.
  Mlp serial(5);
  Optimizer<Adam> serial_optimizer(adam);
  const TrainingPosition position = load_checkpoint(serial, serial_optimizer, written);
  save_checkpoint(serial, serial_optimizer, position, scratch("serial.safetensors"));
  CHECK(file_text(scratch("serial.safetensors")) == bytes);

  // Into a two-stage pipeline (each stage takes its layers' part) and gathered out again.
  TwoStages pipeline(5, {.ranks = 2});
  Optimizer<Adam> pipeline_optimizer(adam);
  load_checkpoint(pipeline, pipeline_optimizer, written);
  save_checkpoint(pipeline, pipeline_optimizer, position, scratch("pipeline.safetensors"));
  CHECK(file_text(scratch("pipeline.safetensors")) == bytes);

  // And into four data-parallel ranks.
  Distributed<Mlp, DataParallel<Local>> four(5, {.ranks = 4});
  Optimizer<Adam> four_optimizer(adam);
  load_checkpoint(four, four_optimizer, written);
  save_checkpoint(four, four_optimizer, position, scratch("four.safetensors"));
  CHECK(file_text(scratch("four.safetensors")) == bytes);
}

TEST_CASE("dist_checkpoint.resumed_under_another_layout_continues_serial_training_bit_for_bit") {
  Mlp straight(5);
  Optimizer<Adam> optimizer(adam);
  const auto straight_losses = train(straight, optimizer, 0, 40);
  std::vector<float> losses;
  Mlp result(5);
  SUBCASE("written by data parallelism, resumed serially") {
    result = resumed<DataParallel2, Mlp>(scratch("to-serial.safetensors"), losses);
  }
  SUBCASE("written by data parallelism, resumed by a pipeline") {
    result = resumed<DataParallel2, TwoStages>(scratch("to-pipeline.safetensors"), losses);
  }
  SUBCASE("written by a pipeline, resumed by data parallelism") {
    result = resumed<TwoStages, DataParallel2>(scratch("from-pipeline.safetensors"), losses);
  }
  SUBCASE("written by 2 data-parallel ranks, resumed by 4") {
    result = resumed<DataParallel2, DataParallel4>(scratch("to-four.safetensors"), losses, 4);
  }
  CHECK(values(result) == values(straight));
  REQUIRE(losses.size() == 20);
  for (std::size_t s = 0; s < losses.size(); ++s) CHECK(losses[s] == straight_losses[s + 20]);
}
