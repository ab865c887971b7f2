// CIFAR-10 binary files: records read back with their planes interleaved channels-last, a directory's
// training files concatenated in order, and every kind of bad file or directory reported with its name and
// its problem.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <pnn/data/batcher.hpp>
#include <pnn/data/cifar.hpp>

#include "support/check_io_error.hpp"
#include "support/scratch_directory.hpp"

using namespace pnn;
using pnn::testing::ScratchDirectory;

namespace {

using Bytes = std::vector<std::uint8_t>;

// The byte of channel `channel` at pixel (row, column) of record `record` in the test files: different for
// every channel and nearby pixel, so a transposed or mixed-up copy shows.
std::uint8_t pixel_value(int record, int channel, int row, int column) {
  return static_cast<std::uint8_t>(record * 31 + channel * 85 + row * 3 + column * 7);
}

// One record in the file's layout, written out by hand: the label, then the red plane, the green plane and
// the blue plane, each row by row.
Bytes cifar_record(int record, std::uint8_t label) {
  Bytes bytes = {label};
  for (int channel = 0; channel < 3; ++channel)
    for (int row = 0; row < 32; ++row)
      for (int column = 0; column < 32; ++column) bytes.push_back(pixel_value(record, channel, row, column));
  return bytes;
}

Bytes cifar_file(int first_record, const std::vector<std::uint8_t>& labels) {
  Bytes bytes;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const Bytes record = cifar_record(first_record + static_cast<int>(i), labels[i]);
    bytes.insert(bytes.end(), record.begin(), record.end());
  }
  return bytes;
}

void write_raw(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A CIFAR-10 directory of a few records: `per_file[i]` records in data_batch_{i+1}.bin, the test file last.
// Record r of the whole directory (training files first) has label r % 10 and pixel_value(r, ...) pixels.
void write_cifar_directory(const std::filesystem::path& directory, const std::vector<int>& per_file) {
  int record = 0;
  for (std::size_t f = 0; f < per_file.size(); ++f) {
    std::vector<std::uint8_t> labels;
    for (int i = 0; i < per_file[f]; ++i) labels.push_back(static_cast<std::uint8_t>((record + i) % 10));
    const std::string name = f < 5 ? "data_batch_" + std::to_string(f + 1) + ".bin" : "test_batch.bin";
    write_raw(directory / name, cifar_file(record, labels));
    record += per_file[f];
  }
}

}  // namespace

TEST_CASE("cifar.records_become_channels_last_samples") {
  ScratchDirectory directory("cifar-records");
  const auto path = directory / "batch.bin";
  Bytes file = cifar_file(0, {3, 9});
  // A pixel set by hand in the file's (C, H, W) layout: record 1, row 1, column 2, at offset 3073 (record 0)
  // + 1 (its label) + channel * 1024 + 1 * 32 + 2.
  file[3073 + 1 + 0 * 1024 + 34] = 200;  // red
  file[3073 + 1 + 1 * 1024 + 34] = 100;  // green
  file[3073 + 1 + 2 * 1024 + 34] = 50;   // blue
  write_raw(path, file);

  const Dataset data = read_cifar10_files({path});
  REQUIRE(data.size() == 2);
  CHECK(data.features() == 3072);
  CHECK(data.sample_shape == std::array<pnn::index, 3>{3, 32, 32});
  CHECK(data.classes == 10);
  CHECK(data.labels_file == path);
  CHECK(data.labels[0] == 3);
  CHECK(data.labels[1] == 9);
  // Channels-last: pixel (1, 2) is the 34th pixel of the image, its red, green and blue bytes at 3 * 34 + c.
  const std::uint8_t* second = data.images.data() + 3072;
  CHECK(int{second[102]} == 200);
  CHECK(int{second[103]} == 100);
  CHECK(int{second[104]} == 50);
  // Every other byte where the (H, W, C) layout puts it.
  int wrong = 0;
  for (int record = 0; record < 2; ++record)
    for (int row = 0; row < 32; ++row)
      for (int column = 0; column < 32; ++column)
        for (int channel = 0; channel < 3; ++channel) {
          if (record == 1 && row == 1 && column == 2) continue;
          const std::uint8_t got = data.images.data()[record * 3072 + (row * 32 + column) * 3 + channel];
          wrong += got != pixel_value(record, channel, row, column);
        }
  CHECK(wrong == 0);

  // Batches scale the bytes to [0, 1] as for IDX data.
  Batch batch;
  const std::vector<pnn::index> samples = {1};
  copy_samples(data, std::span<const pnn::index>(samples), batch);
  CHECK(batch.inputs(0, 102) == doctest::Approx(200.0 / 255.0));
  CHECK(batch.inputs(0, 104) == doctest::Approx(50.0 / 255.0));
  CHECK(batch.labels[0] == 9);
}

TEST_CASE("cifar.load_cifar10_concatenates_the_training_files_in_order") {
  ScratchDirectory directory("cifar-directory");
  write_cifar_directory(directory.path(), {2, 1, 1, 3, 1, 2});
  const TrainTestData data = load_cifar10(directory.path());
  REQUIRE(data.train.size() == 8);
  REQUIRE(data.test.size() == 2);
  CHECK(data.train.sample_shape == std::array<pnn::index, 3>{3, 32, 32});
  CHECK(data.test.sample_shape == std::array<pnn::index, 3>{3, 32, 32});
  for (int r = 0; r < 8; ++r) {
    CAPTURE(r);
    CHECK(data.train.labels[r] == r % 10);
    CHECK(data.train.images.data()[r * 3072 + 3 * 5 + 1] == pixel_value(r, 1, 0, 5));
  }
  CHECK(data.test.labels[0] == 8);
  CHECK(data.test.labels[1] == 9);
  CHECK(data.test.images.data()[3072 + 3 * 33 + 2] == pixel_value(9, 2, 1, 1));
  CHECK(data.test.labels_file == directory / "test_batch.bin");
}

TEST_CASE("cifar.bad_files") {
  ScratchDirectory directory("cifar-bad-files");
  const auto missing = directory / "missing.bin";
  CHECK_IO_ERROR(read_cifar10_files({missing}), missing, "No such file or directory");
  CHECK_IO_ERROR(read_cifar10_files({directory.path()}), directory.path(), "it is a directory, not a file");

  const auto empty = directory / "empty.bin";
  write_raw(empty, {});
  CHECK_IO_ERROR(read_cifar10_files({empty}), empty, "the file is empty");

  const auto cut = directory / "cut.bin";
  const Bytes two = cifar_file(0, {1, 2});
  write_raw(cut, Bytes(two.begin(), two.end() - 5));
  CHECK_IO_ERROR(read_cifar10_files({cut}), cut,
                 "its size, 6141 bytes, is not a multiple of 3073 (a CIFAR-10 record is 1 label byte and 3072 pixel "
                 "bytes): 1 whole records and 3068 bytes left over");

  const auto label = directory / "label.bin";
  write_raw(label, cifar_file(0, {9, 10}));
  CHECK_IO_ERROR(read_cifar10_files({label}), label, "record 1 has label 10; CIFAR-10 labels are 0 to 9");
  const auto label255 = directory / "label255.bin";
  write_raw(label255, cifar_file(0, {255}));
  CHECK_IO_ERROR(read_cifar10_files({label255}), label255, "record 0 has label 255");

  // A size that passes the multiple-of-3073 check but makes more records than any CIFAR-10 file: refused
  // from the size alone, before 3 GB are allocated (the file is sparse: no disk is used).
  const auto huge = directory / "huge.bin";
  write_raw(huge, {});
  std::filesystem::resize_file(huge, static_cast<std::uintmax_t>(max_cifar_records + 1) * 3073);
  CHECK_IO_ERROR(read_cifar10_files({huge}), huge, "more than the 1048576 pnn accepts in one file");

  // A named pipe is refused without opening it (which would wait for a writer).
  const auto pipe = directory / "pipe.bin";
  REQUIRE(::mkfifo(pipe.c_str(), 0600) == 0);
  CHECK_IO_ERROR(read_cifar10_files({pipe}), pipe, "not a regular file");

  // The first bad file of several is named, even when the others are good.
  const auto good = directory / "good.bin";
  write_raw(good, cifar_file(0, {1}));
  CHECK_IO_ERROR(read_cifar10_files({good, label}), label, "record 1 has label 10");
}

TEST_CASE("cifar.bad_directories") {
  ScratchDirectory directory("cifar-bad-directories");
  const auto nowhere = directory / "nowhere";
  CHECK_IO_ERROR(load_cifar10(nowhere), nowhere, "cannot read CIFAR-10 directory");
  CHECK_IO_ERROR(load_cifar10(nowhere), nowhere, "it does not exist");
  const auto file = directory / "a-file";
  write_raw(file, {1});
  CHECK_IO_ERROR(load_cifar10(file), file, "it is not a directory");

  // Each missing file is named, the training files first.
  const auto partial = directory / "partial";
  std::filesystem::create_directories(partial);
  write_cifar_directory(partial, {1, 1, 1, 1, 1, 1});
  std::filesystem::remove(partial / "data_batch_3.bin");
  CHECK_IO_ERROR(load_cifar10(partial), partial / "data_batch_3.bin", "cannot find CIFAR-10 file");
  CHECK_IO_ERROR(load_cifar10(partial), partial / "data_batch_3.bin", "no such file");
  write_cifar_directory(partial, {1, 1, 1, 1, 1, 1});
  std::filesystem::remove(partial / "test_batch.bin");
  CHECK_IO_ERROR(load_cifar10(partial), partial / "test_batch.bin", "no such file");

  // A bad file among good ones is named with its problem.
  write_cifar_directory(partial, {1, 1, 1, 1, 1, 1});
  write_raw(partial / "data_batch_4.bin", Bytes(100, 0));
  CHECK_IO_ERROR(load_cifar10(partial), partial / "data_batch_4.bin", "is not a multiple of 3073");

  // A directory that cannot be read. Root reads it anyway, so this part only runs for other users.
  if (::geteuid() != 0) {
    write_cifar_directory(partial, {1, 1, 1, 1, 1, 1});
    REQUIRE(::chmod(partial.c_str(), 0) == 0);
    CHECK_IO_ERROR(load_cifar10(partial), partial / "data_batch_1.bin", "Permission denied");
    REQUIRE(::chmod(partial.c_str(), 0700) == 0);
  }
}
