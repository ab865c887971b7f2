// tests/fuzz/fuzz_safetensors.cpp: read_safetensors() on any bytes, and load_parameters() (what pnn::load
// does) of the same file into a small model, which must take the whole file or change nothing.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
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
  // A load that succeeded took every tensor from the file: saving the model gives the file's tensors back,
  // byte for byte (files and memory may lay a tensor out differently: core/parameter.hpp, FileLayout), and
  // a count as the model's float holds it.
  static const std::filesystem::path saved_path =
      std::filesystem::temp_directory_path() / ("pnn-fuzz-safetensors-" + std::to_string(::getpid()) + ".saved");
  pnn::save(net, saved_path);
  const pnn::SafetensorsFile read = pnn::read_safetensors(file.path()), saved = pnn::read_safetensors(saved_path);
  for (const auto& parameter : std::as_const(net).parameters()) {
    const pnn::TensorRecord* record = read.find(parameter.name());
    const pnn::TensorRecord* written = saved.find(parameter.name());
    fuzz::require(record != nullptr && written != nullptr, "load succeeded without tensor " + parameter.name());
    if (parameter.declaration.file.count) {
      std::int64_t count = 0;
      fuzz::require(record->data.size() == sizeof count, "count " + parameter.name() + " is not one int64");
      std::memcpy(&count, record->data.data(), sizeof count);
      fuzz::require(parameter.value[0] == static_cast<float>(count), "load did not take count " + parameter.name());
    } else {
      fuzz::require(record->data == written->data, "load did not copy tensor " + parameter.name());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemoryFile file(data, size);
  check_read(file, size);
  check_load(file);
  return 0;
}
