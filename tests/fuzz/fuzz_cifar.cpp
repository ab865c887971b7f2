// tests/fuzz/fuzz_cifar.cpp: read_cifar10_files() on any bytes.
//
// The input is the file. It must be read exactly when it is a positive whole number of 3073-byte records
// whose label bytes are all below 10, and then every byte must land where the (C, H, W) to (H, W, C)
// conversion puts it; any other input must be refused with an IoError naming the file.
#include <cstdint>

#include <pnn/data/cifar.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::MemoryFile file(data, size);
  constexpr auto record = static_cast<std::size_t>(pnn::cifar_record_bytes);
  bool valid = size > 0 && size % record == 0;
  for (std::size_t offset = 0; valid && offset < size; offset += record) valid = data[offset] < 10;

  pnn::Dataset read;
  try {
    read = pnn::read_cifar10_files({file.path()});
  } catch (const pnn::IoError& error) {
    fuzz::require(!valid, std::string("read_cifar10_files refused a valid file: ") + error.what());
    fuzz::check_refusal(error, file.path());
    return 0;
  }
  fuzz::require(valid, "read_cifar10_files accepted a file of the wrong size or with a label above 9");
  const auto records = static_cast<pnn::index>(size / record);
  fuzz::require(read.size() == records && read.features() == 3072, "read_cifar10_files returned other shapes");
  for (pnn::index r = 0; r < records; ++r) {
    const std::uint8_t* in = data + r * pnn::cifar_record_bytes;
    fuzz::require(read.labels[r] == in[0], "a label changed on reading");
    const std::uint8_t* image = read.images.data() + r * 3072;
    for (int pixel = 0; pixel < 1024; ++pixel)
      for (int channel = 0; channel < 3; ++channel)
        fuzz::require(image[3 * pixel + channel] == in[1 + 1024 * channel + pixel], "a pixel moved to the wrong place");
  }
  return 0;
}
