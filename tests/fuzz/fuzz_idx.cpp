// tests/fuzz/fuzz_idx.cpp: read_idx() on any bytes, raw and gzip-compressed; and load_idx_dataset() on
// any labels file that reads.
//
// The first byte of an input chooses how the rest becomes the file: bit 0 clear, the rest as it is (a raw
// file, or a gzip file as the fuzzer mutates it); bit 0 set, the rest compressed with gzip here, so that
// the fuzzer's mutations of the IDX content reach the parser through the gzip reader too. Bits 1-4 give
// the number of classes (1 to 16) for the labels check.
#include <zlib.h>

#include <cstdint>
#include <vector>

#include <pnn/data/dataset.hpp>
#include <pnn/data/idx.hpp>

#include "fuzz_support.hpp"

namespace {

std::vector<std::uint8_t> gzip(const std::uint8_t* data, std::size_t size) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fuzz::fail("deflateInit2 failed");
  std::vector<std::uint8_t> out(deflateBound(&stream, static_cast<uLong>(size)) + 32);
  stream.next_in = const_cast<Bytef*>(data);
  stream.avail_in = static_cast<uInt>(size);
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  if (deflate(&stream, Z_FINISH) != Z_STREAM_END) fuzz::fail("deflate did not finish");
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// The labels in `labels` checked against `classes` by load_idx_dataset, with an images file to match.
void check_labels(const fuzz::MemoryFile& labels, const pnn::IdxArray& read, pnn::index classes) {
  const pnn::index count = read.dims[0];
  std::vector<std::uint8_t> images = {0, 0, 0x08, 3};
  for (const std::uint32_t dim : {static_cast<std::uint32_t>(count), 1u, 1u})
    for (int shift = 24; shift >= 0; shift -= 8) images.push_back(static_cast<std::uint8_t>(dim >> shift));
  images.resize(images.size() + static_cast<std::size_t>(count), 0);
  const fuzz::MemoryFile images_file(images.data(), images.size());
  bool out_of_range = false;
  for (const std::uint8_t label : read.values) out_of_range |= label >= classes;
  try {
    const pnn::Dataset data = pnn::load_idx_dataset(images_file.path(), labels.path(), classes);
    fuzz::require(!out_of_range, "load_idx_dataset accepted a label outside the classes");
    for (pnn::index i = 0; i < count; ++i)
      fuzz::require(data.labels[i] == read.values[static_cast<std::size_t>(i)], "a label changed on loading");
  } catch (const pnn::IoError& error) {
    fuzz::require(out_of_range, std::string("load_idx_dataset refused valid labels: ") + error.what());
    fuzz::check_refusal(error, labels.path());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool compress = data[0] & 1;
  const pnn::index classes = 1 + ((data[0] >> 1) & 15);
  const std::uint8_t* content = data + 1;
  const std::size_t content_size = size - 1;
  const std::vector<std::uint8_t> file_bytes =
      compress ? gzip(content, content_size) : std::vector<std::uint8_t>(content, content + content_size);
  const fuzz::MemoryFile file(file_bytes.data(), file_bytes.size());

  pnn::IdxArray read;
  try {
    read = pnn::read_idx(file.path());
  } catch (const pnn::IoError& error) {
    fuzz::check_refusal(error, file.path());
    return 0;
  }
  // What was read is what the file holds: the header's dimensions, then exactly their product of values.
  fuzz::require(!read.dims.empty() && read.dims.size() <= 4, "read_idx returned a rank outside 1 to 4");
  std::size_t product = 1;
  for (const pnn::index dim : read.dims) product *= static_cast<std::size_t>(dim);
  fuzz::require(read.values.size() == product, "read_idx returned other than the product of the dimensions");
  const bool gzip_input = !compress && content_size >= 2 && content[0] == 0x1f && content[1] == 0x8b;
  if (!gzip_input) {  // the content is the IDX file itself: its values are its last bytes
    const std::size_t header = 4 + 4 * read.dims.size();
    fuzz::require(content_size == header + product, "read_idx accepted a file whose size disagrees with its header");
    fuzz::require(std::equal(read.values.begin(), read.values.end(), content + header), "read_idx changed the values");
  }
  if (read.dims.size() == 1 && read.dims[0] <= 4096) check_labels(file, read, classes);
  return 0;
}
