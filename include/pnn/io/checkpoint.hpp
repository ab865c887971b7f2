// pnn/io/checkpoint.hpp: a training run saved so that it resumes exactly where it stopped.
//
//   pnn::save_checkpoint(net, optimizer, position, "run.checkpoint");
//   const pnn::TrainingPosition position = pnn::load_checkpoint(net, optimizer, "run.checkpoint");
//
// fit() writes and resumes checkpoints (FitOptions::checkpoint_path, checkpoint_every, resume_from).
// Distributed models have overloads (dist/distributed.hpp) that write the serial model's checkpoint, so a
// run may be resumed with another strategy or number of ranks.
//
// A checkpoint is a safetensors file (io/safetensors.hpp) holding
//   - the model's parameters and buffers under the names, shapes and layouts pnn::save uses (PyTorch's:
//     "0.weight", a convolution's (F, C, K, K)), so it also opens as a weights file (in PyTorch too);
//   - the optimiser's state as "optimizer.<parameter>.<field>" ("optimizer.0.weight.velocity"), each
//     shaped and laid out as its parameter; the fields are those the rule's State names (Optimizer::state);
//   - in "__metadata__": "pnn.checkpoint" (the format version), "model.summary", "model.seed",
//     "optimizer.rule", "optimizer.hyper_parameters" (informative: a resumed run uses the caller's),
//     "optimizer.steps", and the TrainingPosition as "training.*".
// The random streams need nothing more: dropout masks are keyed by the model's seed and the optimiser's
// step (layers/layer.hpp, Context), an epoch's shuffled order by the data seed and the epoch
// (data/batcher.hpp).
//
// The file is written atomically (io/atomic_file.hpp): a write killed midway leaves the previous file.
// Loading refuses a file that is damaged, not a checkpoint, of another model (layers, parameter names or
// shapes, seed) or of another optimiser rule, with an IoError naming the file and the difference; the
// model and the optimiser are then unchanged (everything is read and checked before either is written).
// This header stands on io/ and core/ alone: the optimiser is any type with Optimizer's state() and
// set_state() (optim/optimizer.hpp).
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"
#include "pnn/io/atomic_file.hpp"
#include "pnn/io/safetensors.hpp"
#include "pnn/io/weights.hpp"

namespace pnn {

// Where a training run stands: what fit() needs to take the same batches in the same order.
struct TrainingPosition {
  index step = 0;               // optimiser steps fit() has taken (FitOptions::max_steps counts them)
  index epoch = 0;              // the epoch of the next batch, from 0
  index batch = 0;              // batches of that epoch already taken
  std::uint64_t seed = 0;       // FitOptions::seed: every epoch's shuffled order
  bool shuffle = true;          // FitOptions::shuffle
  index batch_size = 0;         // FitOptions::batch_size
  index samples_per_epoch = 0;  // the training set's size
  double epoch_loss_sum = 0;    // the epoch's batch losses so far, each times its sample count (its metrics)
  index epoch_samples = 0;      // the epoch's samples so far
  bool operator==(const TrainingPosition&) const = default;
};

// What a checkpoint needs of an optimiser (pnn::Optimizer): its rule, and its state as named host tensors.
template <class O, class M>
concept CheckpointableOptimizer = requires(O& optimizer, const O& const_optimizer, const M& model) {
  typename O::rule_type;
  { O::rule_type::name() } -> std::convertible_to<std::string>;
  { const_optimizer.rule.hyper_parameters() } -> std::convertible_to<std::string>;
  const_optimizer.state(model.parameters());
  optimizer.set_state(model.parameters(), const_optimizer.state(model.parameters()));
};

namespace detail::checkpoint {

// Version 2: PyTorch's layouts (a convolution's weight (F, C, K, K), Flatten's (c, h, w) order, BatchNorm's
// num_batches_tracked). Version 1 files held pnn's memory layouts and are refused.
inline constexpr std::string_view format_version = "2";
inline constexpr std::string_view optimizer_prefix = "optimizer.";

template <class Number>
std::string text(Number value) {
  char digits[32];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  return std::string(digits, end);
}

// The checkpoint's metadata, read with messages that name the file.
class Metadata {
 public:
  Metadata(const std::filesystem::path& path, const std::map<std::string, std::string>& values)
      : path_(path), values_(values) {}

  template <class... Parts>
  [[noreturn]] void refuse(Parts&&... parts) const {
    throw IoError(concat("cannot load checkpoint ", path_.string(), ": ", std::forward<Parts>(parts)...));
  }
  const std::string& at(const std::string& key) const {
    const auto found = values_.find(key);
    if (found == values_.end()) refuse("its metadata has no \"", key, "\"");
    return found->second;
  }
  template <class Number>
  Number number(const std::string& key) const {
    const std::string& value = at(key);
    Number result{};
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), result);
    if (error != std::errc{} || end != value.data() + value.size())
      refuse("metadata \"", key, "\" is \"", value, "\", which is not a number");
    return result;
  }
  // A count (steps, an epoch, a batch size): a number that must not be negative.
  index count(const std::string& key) const {
    const auto result = number<index>(key);
    if (result < 0) refuse("metadata \"", key, "\" is ", result, ", a count cannot be negative");
    return result;
  }

 private:
  std::filesystem::path path_;
  const std::map<std::string, std::string>& values_;
};

// The first line where two summaries differ, as "line N: `found` in the checkpoint, `expected` in this model".
inline std::string first_difference(const std::string& found, const std::string& expected) {
  auto lines = [](const std::string& text) {
    std::vector<std::string> result;
    std::size_t begin = 0;
    while (begin < text.size()) {
      const std::size_t end = std::min(text.find('\n', begin), text.size());
      result.push_back(text.substr(begin, end - begin));
      begin = end + 1;
    }
    return result;
  };
  const auto a = lines(found), b = lines(expected);
  for (std::size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const std::string x = i < a.size() ? a[i] : "(nothing)", y = i < b.size() ? b[i] : "(nothing)";
    if (x != y)
      return concat("line ", i + 1, " of its summary is `", x, "` in the checkpoint but `", y, "` in this model");
  }
  return "the summaries differ";
}

// The names of the fields of the optimiser's state (velocity, first_moment, ...).
template <class O>
std::vector<std::string> state_fields() {
  using State = typename O::rule_type::template State<typename O::value_type, typename O::device>;
  std::vector<std::string> fields;
  State probe(0);
  State::fields(probe, [&](const char* field, auto&) { fields.emplace_back(field); });
  return fields;
}

}  // namespace detail::checkpoint

// Writes the model's weights and buffers, the optimiser's state and `position` to `path`, atomically.
template <SavableModel M, CheckpointableOptimizer<M> O>
void save_checkpoint(const M& model, const O& optimizer, const TrainingPosition& position,
                     const std::filesystem::path& path) {
  using namespace detail::checkpoint;
  using T = typename M::value_type;
  static_assert(std::endian::native == std::endian::little,
                "save_checkpoint writes memory as it is: a big-endian host needs a byte swap here");
  const auto state = optimizer.state(model.parameters());
  typename M::template on<cpu> host(model.seed(), model.first_layer_index());
  if constexpr (!std::is_same_v<typename M::device, cpu>) {
    copy(model.parameter_values(), host.parameter_values());  // device to host: defined by the device's headers
    copy(model.buffer_values(), host.buffer_values());
  }
  const auto& source = [&]() -> const auto& {
    if constexpr (std::is_same_v<typename M::device, cpu>) return model;
    else return host;
  }();

  const std::vector<std::string> fields = state_fields<O>();
  std::vector<std::string> names;  // the optimiser tensors' names, alive until the file is written
  names.reserve(source.parameters().size() * fields.size());
  auto tensors = detail::safetensors::value_tensors<T, const T>(source.parameters());
  for (const auto& p : source.parameters()) {
    if (!p.trainable()) continue;
    for (const auto& field : fields) {
      const auto& tensor = state.tensors.at(p.name() + "." + field);
      names.push_back(std::string(optimizer_prefix) + p.name() + "." + field);
      tensors.push_back({names.back(), p.declaration.shape, &p.declaration.file,
                         std::span<const T>(tensor.data(), static_cast<std::size_t>(tensor.size()))});
    }
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"framework", "pnn"},
      {"pnn.checkpoint", std::string(format_version)},
      {"model.summary", M::summary()},
      {"model.seed", text(model.seed())},
      {"optimizer.rule", O::rule_type::name()},
      {"optimizer.hyper_parameters", optimizer.rule.hyper_parameters()},
      {"optimizer.steps", text(state.steps)},
      {"training.step", text(position.step)},
      {"training.epoch", text(position.epoch)},
      {"training.batch_in_epoch", text(position.batch)},
      {"training.seed", text(position.seed)},
      {"training.shuffle", position.shuffle ? "1" : "0"},
      {"training.batch_size", text(position.batch_size)},
      {"training.samples_per_epoch", text(position.samples_per_epoch)},
      {"training.epoch_loss_sum", text(position.epoch_loss_sum)},
      {"training.epoch_samples", text(position.epoch_samples)},
  };
  write_file_atomically(path, detail::safetensors::encode_model<T>(path, tensors, metadata));
}

// Restores the model's weights and buffers and the optimiser's state from `path`, and returns where the
// run stood. Refuses (IoError naming the file and the difference) a damaged file, another model or
// another rule; the model and the optimiser are then unchanged.
template <SavableModel M, CheckpointableOptimizer<M> O>
TrainingPosition load_checkpoint(M& model, O& optimizer, const std::filesystem::path& path) {
  using namespace detail::checkpoint;
  using T = typename M::value_type;
  static_assert(std::endian::native == std::endian::little,
                "load_checkpoint copies little-endian file data as it is: a big-endian host needs a byte swap here");
  const SafetensorsFile file = read_safetensors(path);  // a damaged file is an IoError naming it
  const Metadata metadata(path, file.metadata);
  if (!file.metadata.count("pnn.checkpoint"))
    metadata.refuse(
        "it is not a pnn checkpoint (its metadata has no \"pnn.checkpoint\"); a weights file written by "
        "pnn::save loads with pnn::load");
  if (metadata.at("pnn.checkpoint") != format_version)
    metadata.refuse("it has format version ", metadata.at("pnn.checkpoint"), "; this pnn reads version ",
                    format_version);
  if (metadata.at("model.summary") != M::summary())
    metadata.refuse("it is of another model: ", first_difference(metadata.at("model.summary"), M::summary()));
  if (metadata.at("optimizer.rule") != O::rule_type::name())
    metadata.refuse("it holds the state of optimiser ", metadata.at("optimizer.rule"), ", not of ",
                    O::rule_type::name());
  const auto seed = metadata.number<std::uint64_t>("model.seed");
  if (seed != model.seed())
    metadata.refuse("it was written by a model built with seed ", seed, ", this one was built with seed ", model.seed(),
                    " (dropout draws from the seed: build the model with seed ", seed, " to resume)");

  // Everything is read into temporaries, and every tensor checked, before the model or optimiser changes.
  typename M::template on<cpu> weights(model.seed(), model.first_layer_index());
  auto state = optimizer.state(model.parameters());  // the state's names and sizes; its values are replaced
  state.steps = metadata.count("optimizer.steps");
  std::vector<std::string> names;
  const std::vector<std::string> fields = state_fields<O>();
  names.reserve(weights.parameters().size() * fields.size());
  auto tensors = detail::safetensors::value_tensors<T, T>(weights.parameters());
  for (const auto& p : weights.parameters()) {
    if (!p.trainable()) continue;
    for (const auto& field : fields) {
      auto& tensor = state.tensors.at(p.name() + "." + field);
      names.push_back(std::string(optimizer_prefix) + p.name() + "." + field);
      tensors.push_back({names.back(), p.declaration.shape, &p.declaration.file,
                         std::span<T>(tensor.data(), static_cast<std::size_t>(tensor.size()))});
    }
  }
  detail::safetensors::decode_model<T>(path, file, tensors);

  TrainingPosition position;
  position.step = metadata.count("training.step");
  position.epoch = metadata.count("training.epoch");
  position.batch = metadata.count("training.batch_in_epoch");
  position.seed = metadata.number<std::uint64_t>("training.seed");
  const int shuffle = metadata.number<int>("training.shuffle");
  if (shuffle != 0 && shuffle != 1) metadata.refuse("metadata \"training.shuffle\" is ", shuffle, ", not 0 or 1");
  position.shuffle = shuffle == 1;
  position.batch_size = metadata.count("training.batch_size");
  position.samples_per_epoch = metadata.count("training.samples_per_epoch");
  position.epoch_loss_sum = metadata.number<double>("training.epoch_loss_sum");
  if (!std::isfinite(position.epoch_loss_sum))
    metadata.refuse("metadata \"training.epoch_loss_sum\" is ", position.epoch_loss_sum, ", not a finite number");
  position.epoch_samples = metadata.count("training.epoch_samples");

  optimizer.set_state(model.parameters(), state);  // checks before it changes anything; then nothing can fail
  copy(std::as_const(weights).parameter_values(), model.parameter_values());
  copy(std::as_const(weights).buffer_values(), model.buffer_values());
  return position;
}

}  // namespace pnn
