// pnn/data/cifar.hpp: read_cifar10_files(), which reads files of CIFAR-10's binary version into one
// Dataset, and load_cifar10() for the directory that holds them.
//
// A CIFAR-10 binary file is a sequence of 3073-byte records: a label byte (0 to 9), then a 32 x 32 colour
// image as 1024 red, 1024 green and 1024 blue bytes, each plane row-major. The data set is
// data_batch_1.bin ... data_batch_5.bin (10000 records each) for training and test_batch.bin for testing,
// in the folder cifar-10-batches-bin that https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz unpacks
// to (its batches.meta.txt, the class names, is not needed).
//
// The file holds each image plane by plane, (C, H, W); pnn stores a sample of Shape<C, H, W> channels-last,
// as (H, W, C) (layers/layer.hpp), so the planes are interleaved on reading: a pixel's red, green and blue
// bytes end up next to each other, as in an IDX file with channels. Pixels stay bytes, scaled to [0, 1]
// one batch at a time (data/batcher.hpp), as for IDX data.
//
// A file is untrusted input. Its size, taken from the open file before anything is read, must be a positive
// multiple of 3073 bytes and at most max_cifar_records records; only then is memory allocated, for exactly
// that many records, which are read and must be followed by the end of the file. Every label must be below
// 10. Each refusal is an IoError naming the file and the problem.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <sys/stat.h>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/data/dataset.hpp"
#include "pnn/data/idx.hpp"

namespace pnn {

inline constexpr index cifar_channels = 3;
inline constexpr index cifar_side = 32;
inline constexpr index cifar_pixels = cifar_side * cifar_side;             // one plane: 1024 bytes
inline constexpr index cifar_image_bytes = cifar_channels * cifar_pixels;  // 3072
inline constexpr index cifar_record_bytes = 1 + cifar_image_bytes;         // the label byte, then the image
inline constexpr index cifar10_classes = 10;

// More records than this in one file is taken as not a CIFAR-10 file (each real one holds 10000).
inline constexpr index max_cifar_records = index{1} << 20;

namespace detail {

template <class... Parts>
[[noreturn]] void cifar_error(const std::filesystem::path& path, const Parts&... parts) {
  throw IoError(concat("cannot read CIFAR-10 file ", path.string(), ": ", parts...));
}

// A CIFAR-10 file opened and measured, its records not yet read.
struct CifarFile {
  std::filesystem::path path;
  FileHandle file;
  index records = 0;
};

inline CifarFile open_cifar_file(const std::filesystem::path& path) {
  std::error_code error;
  const auto type = std::filesystem::status(path, error).type();
  if (type == std::filesystem::file_type::directory) cifar_error(path, "it is a directory, not a file");
  // Refused before opening: fopen would wait forever on a named pipe that nobody writes to.
  if (type != std::filesystem::file_type::regular && type != std::filesystem::file_type::not_found &&
      type != std::filesystem::file_type::none)
    cifar_error(path, "not a regular file (a CIFAR-10 file has a size to check)");
  CifarFile opened{path, FileHandle(std::fopen(path.c_str(), "rb")), 0};
  if (!opened.file) cifar_error(path, "cannot open it: ", std::strerror(errno));
  // The size of the open file itself (not of whatever the path names a moment later); only a regular file
  // has one that can be trusted to bound what the reads will return.
  struct stat status {};
  if (::fstat(::fileno(opened.file.get()), &status) != 0) cifar_error(path, "cannot stat it: ", std::strerror(errno));
  if (!S_ISREG(status.st_mode)) cifar_error(path, "not a regular file (a CIFAR-10 file has a size to check)");
  const auto size = static_cast<std::uint64_t>(status.st_size);
  const auto record = static_cast<std::uint64_t>(cifar_record_bytes);
  if (size == 0) cifar_error(path, "the file is empty; a CIFAR-10 file holds records of ", record, " bytes");
  if (size % record != 0)
    cifar_error(path, "its size, ", size, " bytes, is not a multiple of ", record,
                " (a CIFAR-10 record is 1 label byte and 3072 pixel bytes): ", size / record, " whole records and ",
                size % record, " bytes left over; the file is truncated or not CIFAR-10");
  if (size / record > static_cast<std::uint64_t>(max_cifar_records))
    cifar_error(path, "its size, ", size, " bytes, makes ", size / record, " records, more than the ",
                max_cifar_records, " pnn accepts in one file (a CIFAR-10 file holds 10000)");
  opened.records = static_cast<index>(size / record);
  return opened;
}

// Reads the records of `opened` into `images` ((records, 3072) bytes, each row (H, W, C)) and `labels`.
inline void read_cifar_records(CifarFile& opened, std::uint8_t* images, std::int32_t* labels) {
  std::vector<std::uint8_t> record(static_cast<std::size_t>(cifar_record_bytes));
  for (index r = 0; r < opened.records; ++r) {
    const std::size_t got = std::fread(record.data(), 1, record.size(), opened.file.get());
    if (got < record.size()) {
      if (std::ferror(opened.file.get())) cifar_error(opened.path, "read error: ", std::strerror(errno));
      cifar_error(opened.path, "truncated while reading: record ", r, " of ", opened.records, " has only ", got,
                  " of its ", cifar_record_bytes, " bytes (did the file change?)");
    }
    const unsigned label = record[0];
    if (label >= cifar10_classes)
      cifar_error(opened.path, "record ", r, " has label ", label, "; CIFAR-10 labels are 0 to ", cifar10_classes - 1);
    labels[r] = static_cast<std::int32_t>(label);
    // (C, H, W) planes in the file, (H, W, C) in memory.
    const std::uint8_t* planes = record.data() + 1;
    std::uint8_t* image = images + r * cifar_image_bytes;
    for (index pixel = 0; pixel < cifar_pixels; ++pixel)
      for (index channel = 0; channel < cifar_channels; ++channel)
        image[pixel * cifar_channels + channel] = planes[channel * cifar_pixels + pixel];
  }
  std::uint8_t extra = 0;
  if (std::fread(&extra, 1, 1, opened.file.get()) != 0)
    cifar_error(opened.path, "trailing data: the file grew beyond the ", opened.records,
                " records its size announced (did the file change?)");
}

}  // namespace detail

// Reads CIFAR-10 binary files into one Dataset, their records in the order of `paths`: samples of shape
// (3, 32, 32) stored (H, W, C), 10 classes. Every file is opened and its size checked before any memory is
// allocated for the records. labels_file names the file when there is one, and is empty for several.
inline Dataset read_cifar10_files(const std::vector<std::filesystem::path>& paths) {
  PNN_CHECK(!paths.empty(), ArgumentError, "read_cifar10_files: no files given");
  std::vector<detail::CifarFile> files;
  index total = 0;
  for (const auto& path : paths) {
    files.push_back(detail::open_cifar_file(path));
    total += files.back().records;  // at most max_cifar_records per file: no overflow for any real count
  }
  Dataset data;
  data.classes = cifar10_classes;
  data.sample_shape = {cifar_channels, cifar_side, cifar_side};
  if (paths.size() == 1) data.labels_file = paths.front();
  data.images = Tensor<std::uint8_t, 2>(Extents<2>{total, cifar_image_bytes});
  data.labels = Tensor<std::int32_t, 1>(Extents<1>{total});
  index first = 0;
  for (auto& file : files) {
    detail::read_cifar_records(file, data.images.data() + first * cifar_image_bytes, data.labels.data() + first);
    first += file.records;
  }
  return data;
}

// The names of CIFAR-10's files in its directory: the training batches, then the test batch.
inline std::vector<std::string> cifar10_training_file_names() {
  return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"};
}
inline constexpr const char* cifar10_test_file_name = "test_batch.bin";

namespace detail {
inline std::filesystem::path find_cifar_file(const std::filesystem::path& directory, const std::string& name) {
  const std::filesystem::path path = directory / name;
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  // Anything there, or a path that cannot be looked at (a directory without permission): the reader says
  // what is wrong with it when it tries to open it.
  if (status.type() != std::filesystem::file_type::not_found) return path;
  throw IoError(concat("cannot find CIFAR-10 file ", path.string(), ": no such file. Point pnn at the folder ",
                       "holding data_batch_1.bin ... data_batch_5.bin and test_batch.bin (cifar-10-batches-bin, ",
                       "from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz)"));
}
}  // namespace detail

// Reads the training set (data_batch_1.bin ... data_batch_5.bin, in that order) and the test set
// (test_batch.bin) of CIFAR-10's binary version from `directory`.
inline TrainTestData load_cifar10(const std::filesystem::path& directory) {
  std::error_code error;
  const auto status = std::filesystem::status(directory, error);
  PNN_CHECK(status.type() != std::filesystem::file_type::not_found, IoError, "cannot read CIFAR-10 directory ",
            directory.string(), ": it does not exist");
  PNN_CHECK(!error, IoError, "cannot read CIFAR-10 directory ", directory.string(), ": ", error.message());
  PNN_CHECK(std::filesystem::is_directory(status), IoError, "cannot read CIFAR-10 directory ", directory.string(),
            ": it is not a directory");
  std::vector<std::filesystem::path> training;
  for (const std::string& name : cifar10_training_file_names())
    training.push_back(detail::find_cifar_file(directory, name));
  const std::filesystem::path test = detail::find_cifar_file(directory, cifar10_test_file_name);
  return {read_cifar10_files(training), read_cifar10_files({test})};
}

}  // namespace pnn
