// IDX files and datasets: raw and gzip files read back exactly, every kind of bad file is reported with
// its name and its problem, and the real Fashion-MNIST loads with the expected shape and balance.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <pnn/data/dataset.hpp>
#include <pnn/data/idx.hpp>

#include "support/check_io_error.hpp"
#include "support/scratch_directory.hpp"

using namespace pnn;

namespace {

using pnn::testing::ScratchDirectory;

using Bytes = std::vector<std::uint8_t>;

// The header of an IDX file: magic number, then one big-endian size per dimension.
Bytes idx_header(const std::vector<std::uint32_t>& dims, std::uint8_t type_code = 0x08) {
  Bytes bytes = {0, 0, type_code, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<std::uint8_t>(d >> shift));
  return bytes;
}

Bytes idx_file(const std::vector<std::uint32_t>& dims, const Bytes& values) {
  Bytes bytes = idx_header(dims);
  bytes.insert(bytes.end(), values.begin(), values.end());
  return bytes;
}

Bytes counting_values(std::size_t count) {
  Bytes values(count);
  for (std::size_t i = 0; i < count; ++i) values[i] = static_cast<std::uint8_t>(i * 7 % 256);
  return values;
}

void write_raw(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void write_gzip(const std::filesystem::path& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  if (!bytes.empty())
    REQUIRE(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(file) == Z_OK);
}

Bytes read_raw(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("idx.reads_raw_and_gzip_files") {
  ScratchDirectory directory("idx-valid");
  const Bytes values = counting_values(2 * 3 * 4);
  write_raw(directory / "raw.idx", idx_file({2, 3, 4}, values));
  write_gzip(directory / "compressed.idx.gz", idx_file({2, 3, 4}, values));
  for (const char* name : {"raw.idx", "compressed.idx.gz"}) {
    CAPTURE(name);
    const IdxArray array = read_idx(directory / name);
    CHECK(array.dims == std::vector<pnn::index>{2, 3, 4});
    CHECK(array.values == values);
  }
  // Every rank from 1 to 4, and a zero dimension (an empty but valid file).
  write_raw(directory / "vector.idx", idx_file({5}, counting_values(5)));
  CHECK(read_idx(directory / "vector.idx").values == counting_values(5));
  write_gzip(directory / "rank4.gz", idx_file({2, 1, 3, 2}, counting_values(12)));
  CHECK(read_idx(directory / "rank4.gz").dims == std::vector<pnn::index>{2, 1, 3, 2});
  write_raw(directory / "empty.idx", idx_file({0, 28, 28}, {}));
  const IdxArray empty = read_idx(directory / "empty.idx");
  CHECK(empty.dims == std::vector<pnn::index>{0, 28, 28});
  CHECK(empty.values.empty());
}

TEST_CASE("idx.gzip_is_detected_by_content_not_name") {
  ScratchDirectory directory("idx-detect");
  const Bytes values = counting_values(6);
  write_gzip(directory / "compressed.idx", idx_file({6}, values));  // gzip without .gz
  write_raw(directory / "plain.gz", idx_file({6}, values));         // .gz without gzip
  CHECK(read_idx(directory / "compressed.idx").values == values);
  CHECK(read_idx(directory / "plain.gz").values == values);
}

TEST_CASE("idx.concatenated_gzip_members_read_as_one_stream") {
  // gzip allows several members in one file (`cat a.gz b.gz`); the data is their concatenation.
  ScratchDirectory directory("idx-members");
  const Bytes file = idx_file({4, 5}, counting_values(20));
  write_gzip(directory / "first.gz", Bytes(file.begin(), file.begin() + 11));
  write_gzip(directory / "second.gz", Bytes(file.begin() + 11, file.end()));
  Bytes joined = read_raw(directory / "first.gz");
  const Bytes second = read_raw(directory / "second.gz");
  joined.insert(joined.end(), second.begin(), second.end());
  write_raw(directory / "joined.gz", joined);
  CHECK(read_idx(directory / "joined.gz").values == counting_values(20));
}

TEST_CASE("idx.bad_headers") {
  ScratchDirectory directory("idx-header");
  const auto missing = directory / "missing.idx";
  CHECK_IO_ERROR(read_idx(missing), missing, "No such file or directory");
  CHECK_IO_ERROR(read_idx(directory.path()), directory.path(), "is a directory");

  const auto empty = directory / "empty.idx";
  write_raw(empty, {});
  CHECK_IO_ERROR(read_idx(empty), empty, "too short to hold an IDX header: the magic number needs 4 bytes, found 0");

  const auto short_magic = directory / "short-magic.idx";
  write_raw(short_magic, {0, 0, 8});
  CHECK_IO_ERROR(read_idx(short_magic), short_magic, "the magic number needs 4 bytes, found 3");

  const auto short_dims = directory / "short-dims.idx";
  Bytes header = idx_header({60000, 28, 28});
  header.resize(12);  // the third size is missing
  write_raw(short_dims, header);
  CHECK_IO_ERROR(read_idx(short_dims), short_dims, "3 dimensions need a header of 16 bytes, found 12");

  const auto text = directory / "text.idx";
  write_raw(text, {'h', 'e', 'l', 'l', 'o', '\n'});
  CHECK_IO_ERROR(read_idx(text), text, "bad magic number 0x68 0x65 0x6c 0x6c");

  const auto no_dims = directory / "no-dims.idx";
  write_raw(no_dims, {0, 0, 8, 0});
  CHECK_IO_ERROR(read_idx(no_dims), no_dims, "it says 0 dimensions, an IDX file has 1 to 4");

  const auto five_dims = directory / "five-dims.idx";
  write_raw(five_dims, idx_file({1, 1, 1, 1, 1}, {7}));
  CHECK_IO_ERROR(read_idx(five_dims), five_dims, "it says 5 dimensions");

  const auto floats = directory / "floats.idx";
  Bytes float_file = idx_header({2}, 0x0D);
  float_file.resize(float_file.size() + 8);
  write_raw(floats, float_file);
  CHECK_IO_ERROR(read_idx(floats), floats, "unsupported element type code 0x0d (32-bit float)");

  const auto huge = directory / "huge.idx";
  write_raw(huge, idx_file({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {1, 2, 3}));
  CHECK_IO_ERROR(read_idx(huge), huge, "describe more than 2^36 values");
  // Just under the limit but far beyond the file: reported as truncated, without allocating 64 GB.
  const auto lying = directory / "lying.idx.gz";
  write_gzip(lying, idx_file({1 << 16, 1 << 19}, {1, 2, 3}));
  CHECK_IO_ERROR(read_idx(lying), lying, "announces 34359738368 bytes of values after its 12 header bytes, found 3");
  // The same in a raw file of 100 bytes: its size says at once that it cannot hold them.
  const auto lying_raw = directory / "lying.idx";
  write_raw(lying_raw, idx_file({1 << 16, 1 << 19}, Bytes(88, 1)));
  CHECK_IO_ERROR(read_idx(lying_raw), lying_raw,
                 "announces 34359738368 bytes of values after its 12 header bytes, but the file holds only 88 more");
}

TEST_CASE("idx.sizes_that_disagree_with_the_header") {
  ScratchDirectory directory("idx-size");
  const auto truncated = directory / "truncated.idx";
  write_raw(truncated, idx_file({2, 3, 4}, counting_values(20)));
  CHECK_IO_ERROR(read_idx(truncated), truncated,
                 "truncated: the header (dimensions 2 x 3 x 4) announces 24 bytes of values after its 16 header "
                 "bytes, but the file holds only 20 more");
  const auto truncated_gzip = directory / "truncated.gz";
  write_gzip(truncated_gzip, idx_file({2, 3, 4}, counting_values(20)));
  CHECK_IO_ERROR(read_idx(truncated_gzip), truncated_gzip, "found 20 after decompression");

  const auto long_file = directory / "long.idx";
  write_raw(long_file, idx_file({2, 3, 4}, counting_values(25)));
  CHECK_IO_ERROR(read_idx(long_file), long_file, "trailing data: the header (dimensions 2 x 3 x 4) announces 24 bytes");
  const auto long_gzip = directory / "long.gz";
  write_gzip(long_gzip, idx_file({2, 3, 4}, counting_values(25)));
  CHECK_IO_ERROR(read_idx(long_gzip), long_gzip, "but there are more after decompression");
}

TEST_CASE("idx.gzip_bomb_stops_after_the_announced_size") {
  // A header announcing 10 values, then 1 GiB of zeros in 1024 gzip members of 1 MiB each (about 1 kB
  // compressed): the reader must stop at the eleventh byte rather than inflate (and keep) everything.
  ScratchDirectory directory("idx-bomb");
  write_gzip(directory / "header.gz", idx_header({10}));
  write_gzip(directory / "zeros.gz", Bytes(std::size_t{1} << 20, 0));
  Bytes bomb_bytes = read_raw(directory / "header.gz");
  const Bytes zeros_member = read_raw(directory / "zeros.gz");
  for (int member = 0; member < 1024; ++member)
    bomb_bytes.insert(bomb_bytes.end(), zeros_member.begin(), zeros_member.end());
  const auto bomb = directory / "bomb.gz";
  write_raw(bomb, bomb_bytes);
  CHECK(std::filesystem::file_size(bomb) < (std::size_t{4} << 20));

  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const long peak_kilobytes_before = usage.ru_maxrss;
  CHECK_IO_ERROR(read_idx(bomb), bomb, "trailing data");
  ::getrusage(RUSAGE_SELF, &usage);
  CHECK(usage.ru_maxrss - peak_kilobytes_before < 64 * 1024);
}

TEST_CASE("idx.corrupt_gzip") {
  ScratchDirectory directory("idx-gzip");
  const auto valid = directory / "valid.gz";
  write_gzip(valid, idx_file({50, 20}, counting_values(1000)));
  const Bytes compressed = read_raw(valid);
  REQUIRE(compressed.size() > 30);

  const auto bad_block = directory / "bad_block.gz";
  Bytes damaged = compressed;
  damaged[10] |= 0x06;  // the first deflate block header (after gzip's 10 header bytes) gets the reserved type 3
  write_raw(bad_block, damaged);
  CHECK_IO_ERROR(read_idx(bad_block), bad_block, "corrupt gzip data (zlib: invalid block type)");

  const auto bad_checksum = directory / "bad-checksum.gz";
  damaged = compressed;
  damaged[damaged.size() - 8] ^= 0xFF;  // the CRC-32 of the trailer
  write_raw(bad_checksum, damaged);
  CHECK_IO_ERROR(read_idx(bad_checksum), bad_checksum, "corrupt gzip data (zlib: incorrect data check)");

  const auto cut = directory / "cut.gz";
  write_raw(cut, Bytes(compressed.begin(), compressed.end() - 4));
  CHECK_IO_ERROR(read_idx(cut), cut, "the .gz file is truncated");

  const auto garbage = directory / "garbage-after.gz";
  damaged = compressed;
  damaged.insert(damaged.end(), {'x', 'y', 'z'});
  write_raw(garbage, damaged);
  CHECK_IO_ERROR(read_idx(garbage), garbage, "corrupt gzip data");
}

namespace {
// A small MNIST-like pair of files: `count` images of 2 x 3 pixels and labels i % classes.
void write_dataset(const std::filesystem::path& images, const std::filesystem::path& labels, std::uint32_t count,
                   bool gzip, std::uint8_t classes = 10) {
  Bytes label_values(count);
  for (std::uint32_t i = 0; i < count; ++i) label_values[i] = static_cast<std::uint8_t>(i % classes);
  const auto write = gzip ? write_gzip : write_raw;
  write(images, idx_file({count, 2, 3}, counting_values(count * 6)));
  write(labels, idx_file({count}, label_values));
}
}  // namespace

TEST_CASE("dataset.load_idx_dataset") {
  ScratchDirectory directory("dataset");
  const auto images = directory / "images.idx";
  const auto labels = directory / "labels.idx.gz";
  write_raw(images, idx_file({4, 2, 3}, counting_values(24)));
  write_gzip(labels, idx_file({4}, {3, 0, 9, 1}));
  const Dataset data = load_idx_dataset(images, labels);
  CHECK(data.size() == 4);
  CHECK(data.features() == 6);
  CHECK(data.sample_shape == std::array<pnn::index, 3>{1, 2, 3});
  CHECK(data.classes == 10);
  CHECK(data.labels[2] == 9);
  CHECK(data.labels_file == labels);  // so that fit() can name it for a label outside the model's classes
  CHECK(data.images(1, 0) == counting_values(24)[6]);
  CHECK(data.images(3, 5) == counting_values(24)[23]);

  // Four dimensions: (count, rows, columns, channels), kept channels-last.
  const auto colour = directory / "colour.idx";
  write_raw(colour, idx_file({4, 2, 1, 3}, counting_values(24)));
  const Dataset coloured = load_idx_dataset(colour, labels);
  CHECK(coloured.sample_shape == std::array<pnn::index, 3>{3, 2, 1});
  CHECK(coloured.images(2, 4) == counting_values(24)[16]);
}

TEST_CASE("dataset.bad_files") {
  ScratchDirectory directory("dataset-bad");
  const auto images = directory / "images.idx";
  const auto labels = directory / "labels.idx";
  write_raw(images, idx_file({4, 2, 3}, counting_values(24)));

  write_raw(labels, idx_file({4}, {3, 0, 10, 1}));
  CHECK_IO_ERROR(load_idx_dataset(images, labels), labels, "label 10 of sample 2 is outside the 10 classes");
  CHECK_IO_ERROR(load_idx_dataset(images, labels, 4), labels, "label 10 of sample 2 is outside the 4 classes");
  CHECK_NOTHROW(load_idx_dataset(images, labels, 11));

  write_raw(labels, idx_file({5}, {3, 0, 9, 1, 2}));
  CHECK_IO_ERROR(load_idx_dataset(images, labels), images, "holds 4 images but labels file");
  CHECK_IO_ERROR(load_idx_dataset(images, labels), labels, "holds 5 labels");

  const auto flat_images = directory / "flat.idx";
  write_raw(flat_images, idx_file({4, 6}, counting_values(24)));
  CHECK_IO_ERROR(load_idx_dataset(flat_images, labels), flat_images, "has 2 dimensions (4 x 6); expected 3");
  write_raw(labels, idx_file({2, 2}, {0, 1, 2, 3}));
  CHECK_IO_ERROR(load_idx_dataset(images, labels), labels, "has 2 dimensions (2 x 2); expected 1");

  CHECK_THROWS_AS(load_idx_dataset(images, labels, 0), ArgumentError);
}

TEST_CASE("dataset.load_mnist_format_directory") {
  ScratchDirectory directory("mnist-format");
  // Mixed on purpose: compressed training files, raw test files.
  write_dataset(directory / "train-images-idx3-ubyte.gz", directory / "train-labels-idx1-ubyte.gz", 30, true);
  write_dataset(directory / "t10k-images-idx3-ubyte", directory / "t10k-labels-idx1-ubyte", 7, false);
  const TrainTestData data = load_mnist_format(directory.path());
  CHECK(data.train.size() == 30);
  CHECK(data.test.size() == 7);
  CHECK(data.train.labels[23] == 3);
  CHECK(data.test.sample_shape == std::array<pnn::index, 3>{1, 2, 3});

  // Both forms present: the raw file is read (here it has other contents, so the choice is visible).
  write_dataset(directory / "train-images-idx3-ubyte", directory / "train-labels-idx1-ubyte", 12, false);
  CHECK(load_mnist_format(directory.path()).train.size() == 12);

  // A missing file: the message names the directory and the file, and says how to point pnn elsewhere.
  std::filesystem::remove(directory / "t10k-labels-idx1-ubyte");
  CHECK_IO_ERROR(load_mnist_format(directory.path()), directory.path(), "cannot find t10k-labels-idx1-ubyte in ");
  CHECK_THROWS_WITH_AS(load_mnist_format(directory.path()), doctest::Contains("PNN_DATA"), IoError);
  CHECK_THROWS_WITH_AS(load_mnist_format(directory.path()), doctest::Contains("--data"), IoError);
  CHECK_IO_ERROR(load_mnist_format(directory / "nowhere"), directory / "nowhere", "the directory does not exist");

  // Training and test images of different shapes do not belong together.
  write_dataset(directory / "t10k-images-idx3-ubyte", directory / "t10k-labels-idx1-ubyte", 7, false);
  write_raw(directory / "t10k-images-idx3-ubyte", idx_file({7, 3, 2}, counting_values(42)));
  CHECK_IO_ERROR(load_mnist_format(directory.path()), directory / "t10k-images-idx3-ubyte",
                 "have shape (1, 2, 3) but the test images in");
}

TEST_CASE("dataset.default_data_directory") {
  const char* saved = std::getenv("PNN_DATA");
  const std::string saved_value = saved ? saved : "";
  ::setenv("PNN_DATA", "/somewhere/else", 1);
  CHECK(default_data_directory() == std::filesystem::path("/somewhere/else"));
  ::setenv("PNN_DATA", "", 1);
  CHECK(default_data_directory() == std::filesystem::path("/usr/share/datasets/fashion-mnist"));
  ::unsetenv("PNN_DATA");
  CHECK(default_data_directory() == std::filesystem::path("/usr/share/datasets/fashion-mnist"));
  if (saved) ::setenv("PNN_DATA", saved_value.c_str(), 1);
}

TEST_CASE("dataset.fashion_mnist") {
  const TrainTestData data = load_mnist_format(default_data_directory());
  CHECK(data.train.size() == 60000);
  CHECK(data.test.size() == 10000);
  CHECK(data.train.features() == 784);
  CHECK(data.train.sample_shape == std::array<pnn::index, 3>{1, 28, 28});
  CHECK(data.test.sample_shape == std::array<pnn::index, 3>{1, 28, 28});
  CHECK(data.train.classes == 10);
  std::array<pnn::index, 10> train_counts{};
  std::array<pnn::index, 10> test_counts{};
  for (pnn::index i = 0; i < data.train.size(); ++i) ++train_counts[static_cast<std::size_t>(data.train.labels[i])];
  for (pnn::index i = 0; i < data.test.size(); ++i) ++test_counts[static_cast<std::size_t>(data.test.labels[i])];
  for (std::size_t c = 0; c < 10; ++c) {
    CAPTURE(c);
    CHECK(train_counts[c] == 6000);
    CHECK(test_counts[c] == 1000);
  }
  // Images are not blank: the pixels span the full byte range.
  const auto pixels = data.train.images.view().flat();
  std::uint8_t darkest = 255, brightest = 0;
  for (pnn::index i = 0; i < pixels.size(); ++i) {
    darkest = std::min(darkest, pixels[i]);
    brightest = std::max(brightest, pixels[i]);
  }
  CHECK(darkest == 0);
  CHECK(brightest == 255);
}
