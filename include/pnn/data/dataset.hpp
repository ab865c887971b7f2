// pnn/data/dataset.hpp: Dataset (images as bytes and their labels: a classifier's data), RegressionDataset
// (real inputs and target rows: a regression model's data), load_idx_dataset() for a pair of IDX files,
// load_mnist_format() for a directory laid out like MNIST, and default_data_directory().
//
// Images stay bytes in memory (60000 Fashion-MNIST images take 47 MB, not 188 MB as floats) and become
// floats in [0, 1] one batch at a time (data/batcher.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"  // data sets live in host memory
#include "pnn/data/idx.hpp"

namespace pnn {

struct Dataset {
  Tensor<std::uint8_t, 2> images;       // (samples, features); a row holds one sample as (height, width, channels)
  Tensor<std::int32_t, 1> labels;       // (samples,), each in [0, classes)
  std::array<index, 3> sample_shape{};  // (channels, height, width): (1, 28, 28) for MNIST
  index classes = 0;
  std::filesystem::path labels_file;  // where the labels were read from; empty for data made in memory

  index size() const { return images.dim(0); }
  index features() const { return images.dim(1); }
};

// Samples for regression (what MeanSquaredError trains on): each a row of real inputs and a row of targets.
struct RegressionDataset {
  Tensor<float, 2> inputs;   // (samples, features)
  Tensor<float, 2> targets;  // (samples, outputs)

  index size() const { return inputs.dim(0); }
  index features() const { return inputs.dim(1); }
  index outputs() const { return targets.dim(1); }
};

// Reads images (an IDX file of shape (count, rows, columns) or (count, rows, columns, channels)) and their
// labels (an IDX file of shape (count,)), each raw or gzip-compressed.
inline Dataset load_idx_dataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path,
                                index classes = 10) {
  PNN_CHECK(classes >= 1, ArgumentError, "load_idx_dataset: the number of classes must be positive, got ", classes);
  IdxArray images = read_idx(images_path);
  const IdxArray labels = read_idx(labels_path);
  const std::size_t image_rank = images.dims.size();
  PNN_CHECK(image_rank == 3 || image_rank == 4, IoError, "images file ", images_path.string(), " has ", image_rank,
            " dimensions (", detail::format_idx_dims(images.dims),
            "); expected 3 (count, rows, columns) or 4 (count, rows, columns, channels)");
  PNN_CHECK(labels.dims.size() == 1, IoError, "labels file ", labels_path.string(), " has ", labels.dims.size(),
            " dimensions (", detail::format_idx_dims(labels.dims), "); expected 1 (count)");
  const index count = images.dims[0];
  PNN_CHECK(count == labels.dims[0], IoError, "images file ", images_path.string(), " holds ", count,
            " images but labels file ", labels_path.string(), " holds ", labels.dims[0],
            " labels: the two files do not belong together");

  Dataset data;
  data.classes = classes;
  data.labels_file = labels_path;
  data.sample_shape = {image_rank == 4 ? images.dims[3] : 1, images.dims[1], images.dims[2]};
  const index features = data.sample_shape[0] * data.sample_shape[1] * data.sample_shape[2];
  PNN_CHECK(features > 0, IoError, "images file ", images_path.string(), " has empty images (dimensions ",
            detail::format_idx_dims(images.dims), ")");
  // IDX stores each image row-major with the channels innermost: pnn's channels-last layout already.
  data.images = Tensor<std::uint8_t, 2>(Extents<2>{count, features});
  std::copy(images.values.begin(), images.values.end(), data.images.data());
  images.values = {};  // give the memory back before the labels are converted

  data.labels = Tensor<std::int32_t, 1>(Extents<1>{count});
  for (index i = 0; i < count; ++i) {
    const std::uint8_t label = labels.values[static_cast<std::size_t>(i)];
    PNN_CHECK(label < classes, IoError, "labels file ", labels_path.string(), ": label ", int{label}, " of sample ", i,
              " is outside the ", classes, " classes [0, ", classes, ")");
    data.labels[i] = label;
  }
  return data;
}

// Checks that every label of `data` is a class of a model with `classes` outputs, before training starts:
// a label the file format allows (any byte) but the model cannot score would otherwise stop training
// midway. Throws ArgumentError naming the labels file (when the data came from one), the sample and the
// label; `role` says which data it is ("training", "test").
inline void check_labels(const Dataset& data, index classes, const char* role) {
  for (index i = 0; i < data.labels.size(); ++i) {
    const std::int32_t label = data.labels[i];
    PNN_CHECK(label >= 0 && label < classes, ArgumentError, "the ", role, " data",
              data.labels_file.empty() ? std::string() : " (labels file " + data.labels_file.string() + ")", ": label ",
              label, " of sample ", i, " is outside the model's ", classes, " classes [0, ", classes,
              "): the model has one output per class");
  }
}

struct TrainTestData {
  Dataset train;
  Dataset test;
};

namespace detail {
// `name` or `name.gz` in `directory`; the uncompressed file wins when both exist (it is quicker to read,
// and someone who unpacked the files expects them to be used).
inline std::filesystem::path find_mnist_file(const std::filesystem::path& directory, const std::string& name) {
  const std::filesystem::path raw = directory / name;
  const std::filesystem::path compressed = directory / (name + ".gz");
  std::error_code error;
  if (std::filesystem::is_regular_file(raw, error)) return raw;
  if (std::filesystem::is_regular_file(compressed, error)) return compressed;
  const bool directory_exists = std::filesystem::is_directory(directory, error);
  throw IoError(concat("cannot find ", name, " in ", directory.string(),
                       directory_exists ? "" : " (the directory does not exist)", ": looked for ", compressed.string(),
                       " and ", raw.string(),
                       ". Point pnn at a directory holding the four MNIST-format files (train-images-idx3-ubyte, "
                       "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or .gz) "
                       "with the --data flag or the PNN_DATA environment variable; Debian's dataset-fashion-mnist "
                       "package installs Fashion-MNIST in /usr/share/datasets/fashion-mnist"));
}
}  // namespace detail

// Reads the training and test sets from a directory laid out like MNIST (Fashion-MNIST, KMNIST, ...).
inline TrainTestData load_mnist_format(const std::filesystem::path& directory, index classes = 10) {
  const auto find = [&](const char* name) { return detail::find_mnist_file(directory, name); };
  const auto train_images = find("train-images-idx3-ubyte");
  const auto train_labels = find("train-labels-idx1-ubyte");
  const auto test_images = find("t10k-images-idx3-ubyte");
  const auto test_labels = find("t10k-labels-idx1-ubyte");
  TrainTestData data{load_idx_dataset(train_images, train_labels, classes),
                     load_idx_dataset(test_images, test_labels, classes)};
  PNN_CHECK(data.train.sample_shape == data.test.sample_shape, IoError, "the training images in ",
            train_images.string(), " have shape ", format_extents<3>(data.train.sample_shape),
            " but the test images in ", test_images.string(), " have shape ",
            format_extents<3>(data.test.sample_shape));
  return data;
}

// Where load_mnist_format() looks by default: $PNN_DATA if set and not empty, else the directory of
// Debian's dataset-fashion-mnist package.
inline std::filesystem::path default_data_directory() {
  if (const char* from_environment = std::getenv("PNN_DATA"); from_environment && *from_environment)
    return from_environment;
  return "/usr/share/datasets/fashion-mnist";
}

}  // namespace pnn
