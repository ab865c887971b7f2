// tests/fuzz/fuzz_checkpoint.cpp: load_checkpoint() on any bytes, into a small model and an Adam
// optimiser that were trained one step (so that their values are their own): a refused file leaves both
// exactly as they were, an accepted one gives a position a run can continue from.
#include <cmath>
#include <vector>

#include "fuzz_models.hpp"
#include "fuzz_support.hpp"

namespace {

struct Snapshot {
  std::vector<float> values;
  pnn::index steps;
  bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const fuzz::CheckpointNet& net, const fuzz::CheckpointOptimizer& optimizer) {
  Snapshot result{{}, optimizer.steps()};
  const auto parameters = net.parameter_values();
  result.values.assign(parameters.data(), parameters.data() + parameters.size());
  for (const auto& [name, tensor] : optimizer.state(net.parameters()).tensors)
    result.values.insert(result.values.end(), tensor.data(), tensor.data() + tensor.size());
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemoryFile file(data, size);
  fuzz::CheckpointNet net(fuzz::model_seed);
  fuzz::CheckpointOptimizer optimizer({.learning_rate = 0.01});
  {
    pnn::Tensor<float, 2> inputs(pnn::Extents<2>{2, fuzz::CheckpointNet::input_shape::size});
    for (pnn::index i = 0; i < inputs.size(); ++i) inputs.data()[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
    pnn::Tensor<std::int32_t, 1> labels(pnn::Extents<1>{2});
    labels[0] = 0;
    labels[1] = 1;
    pnn::train_step(net, inputs.view(), labels.view(), optimizer, pnn::SoftmaxCrossEntropy{});
  }
  const Snapshot before = snapshot(net, optimizer);
  pnn::TrainingPosition position;
  try {
    position = pnn::load_checkpoint(net, optimizer, file.path());
  } catch (const pnn::IoError& error) {
    fuzz::check_refusal(error, file.path());
    fuzz::require(snapshot(net, optimizer) == before, "a refused checkpoint changed the model or the optimiser");
    return 0;
  }
  // A position a run can continue from (fit() compares the rest with its own options).
  fuzz::require(position.step >= 0 && position.epoch >= 0 && position.batch >= 0 && position.batch_size >= 0 &&
                    position.samples_per_epoch >= 0 && position.epoch_samples >= 0 && optimizer.steps() >= 0,
                "load_checkpoint accepted a negative count");
  fuzz::require(std::isfinite(position.epoch_loss_sum), "load_checkpoint accepted a loss sum that is not finite");
  return 0;
}
