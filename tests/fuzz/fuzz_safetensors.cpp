// tests/fuzz/fuzz_safetensors.cpp: read_safetensors() on any bytes, and load_parameters() (what pnn::load
// does) of the same file into a small model, which must take the whole file or change nothing.
#include <cstring>
#include <vector>

#include "fuzz_models.hpp"
#include "fuzz_support.hpp"

namespace {

std::vector<float> values(const fuzz::WeightsNet& net) {
  const auto all = net.parameter_values();
  return std::vector<float>(all.data(), all.data() + all.size());
}

void check_read(const fuzz::MemoryFile& file, std::size_t size) {
  pnn::SafetensorsFile read;
  try {
    read = pnn::read_safetensors(file.path());
  } catch (const pnn::IoError& error) {
    fuzz::check_refusal(error, file.path());
    return;
  }
  // Every tensor holds what its dtype and shape say, and all of them fit in the file.
  std::size_t total = 0;
  for (const auto& tensor : read.tensors) {
    std::size_t elements = 1;
    for (const pnn::index dim : tensor.shape) elements *= static_cast<std::size_t>(dim);
    fuzz::require(tensor.data.size() == elements * pnn::safetensors_dtype_size(tensor.dtype),
                  "tensor \"" + tensor.name + "\" has other than its shape's bytes");
    total += tensor.data.size();
  }
  fuzz::require(total <= size, "read_safetensors returned more data than the file holds");
}

void check_load(const fuzz::MemoryFile& file) {
  fuzz::WeightsNet net(fuzz::model_seed);
  const std::vector<float> before = values(net);
  try {
    pnn::load(net, file.path());
  } catch (const pnn::IoError& error) {
    fuzz::check_refusal(error, file.path());
    fuzz::require(values(net) == before, "a failed load changed the model");
    return;
  }
  // A load that succeeded took every parameter from the file, byte for byte.
  const pnn::SafetensorsFile read = pnn::read_safetensors(file.path());
  for (const auto& parameter : std::as_const(net).parameters()) {
    const pnn::TensorRecord* record = read.find(parameter.name());
    fuzz::require(record != nullptr, "load succeeded without tensor " + parameter.name());
    fuzz::require(record->data.size() == static_cast<std::size_t>(parameter.value.size()) * sizeof(float) &&
                      std::memcmp(record->data.data(), parameter.value.data(), record->data.size()) == 0,
                  "load did not copy tensor " + parameter.name());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemoryFile file(data, size);
  check_read(file, size);
  check_load(file);
  return 0;
}
