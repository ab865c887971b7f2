// tests/fuzz/make_corpus.cpp: writes the committed seed corpus of the fuzz targets into tests/fuzz/corpus/
// (one folder per target): small valid files and near-valid ones, each a step away from a refusal the
// reader must make. Rebuild the corpus after changing a format or fuzz_models.hpp:
//   g++ -std=c++20 -Iinclude $(pkg-config --cflags eigen3) tests/fuzz/make_corpus.cpp -lz -o /tmp/make_corpus
//   /tmp/make_corpus tests/fuzz/corpus
// Inputs the fuzzers found to crash go in by hand next to these (named crash-<what>), and into the
// doctest suites as regression tests.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_models.hpp"

namespace {

using Bytes = std::vector<std::uint8_t>;
namespace fs = std::filesystem;

void write(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}
Bytes read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Bytes idx(const std::vector<std::uint32_t>& dims, const Bytes& values, std::uint8_t type = 0x08) {
  Bytes bytes = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<std::uint8_t>(d >> shift));
  bytes.insert(bytes.end(), values.begin(), values.end());
  return bytes;
}
Bytes gzip(const Bytes& data) {
  z_stream stream{};
  deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  Bytes out(deflateBound(&stream, static_cast<uLong>(data.size())) + 32);
  stream.next_in = const_cast<Bytef*>(data.data());
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}
// An input of fuzz_idx: the mode byte (bit 0: compress the rest; bits 1-4: classes - 1), then the content.
Bytes idx_input(bool compress, int classes, const Bytes& content) {
  Bytes bytes = {static_cast<std::uint8_t>((compress ? 1 : 0) | ((classes - 1) << 1))};
  bytes.insert(bytes.end(), content.begin(), content.end());
  return bytes;
}

void idx_corpus(const fs::path& dir) {
  const Bytes labels = idx({6}, {0, 1, 2, 3, 4, 9});
  const Bytes images = idx({2, 3, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 255});
  write(dir / "labels", idx_input(false, 10, labels));
  write(dir / "labels-compressed-here", idx_input(true, 10, labels));
  write(dir / "labels.gz", idx_input(false, 10, gzip(labels)));
  write(dir / "label-outside-the-classes", idx_input(false, 5, labels));
  write(dir / "images", idx_input(false, 10, images));
  write(dir / "images.gz", idx_input(false, 10, gzip(images)));
  write(dir / "images-channels", idx_input(true, 10, idx({1, 2, 2, 3}, Bytes(12, 7))));
  write(dir / "empty-dimension", idx_input(false, 10, idx({3, 0, 4}, {})));
  Bytes two_members = gzip(idx({2}, {1, 2}));
  const Bytes second = gzip(Bytes{});
  two_members.insert(two_members.end(), second.begin(), second.end());
  write(dir / "two-gzip-members", idx_input(false, 10, two_members));

  write(dir / "truncated-values", idx_input(false, 10, idx({4}, {1, 2})));
  write(dir / "trailing-byte", idx_input(false, 10, idx({2}, {1, 2, 3})));
  write(dir / "float-type", idx_input(false, 10, idx({1}, {0, 0, 0, 0}, 0x0D)));
  write(dir / "rank-5", idx_input(false, 10, idx({1, 1, 1, 1, 1}, {0})));
  write(dir / "huge-dimensions", idx_input(false, 10, idx({0xffffffff, 0xffffffff, 2}, {1, 2, 3})));
  write(dir / "2-to-the-35-values", idx_input(true, 10, idx({1u << 15, 1u << 10, 1u << 10}, {1, 2, 3})));
  Bytes truncated_gzip = gzip(images);
  truncated_gzip.resize(truncated_gzip.size() - 6);
  write(dir / "truncated.gz", idx_input(false, 10, truncated_gzip));
  write(dir / "short-header", idx_input(false, 10, {0, 0, 8, 3, 0, 0}));
}

// CIFAR-10 records with these labels, each image a different ramp of bytes.
Bytes cifar(const Bytes& labels) {
  Bytes bytes;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    bytes.push_back(labels[r]);
    for (int i = 0; i < 3072; ++i) bytes.push_back(static_cast<std::uint8_t>(r * 17 + i * 5));
  }
  return bytes;
}

void cifar_corpus(const fs::path& dir) {
  write(dir / "one-record", cifar({3}));
  write(dir / "two-records", cifar({0, 9}));
  write(dir / "label-10", cifar({10}));
  Bytes truncated = cifar({1, 2});
  truncated.resize(truncated.size() - 1);
  write(dir / "truncated", truncated);
  Bytes trailing = cifar({4});
  trailing.push_back(0);
  write(dir / "trailing-byte", trailing);
  write(dir / "label-only", {5});
}

std::vector<std::byte> as_bytes(std::initializer_list<float> values) {
  std::vector<std::byte> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.begin(), bytes.size());
  return bytes;
}
// A safetensors file with `header` as its JSON header and `data` after it.
Bytes safetensors(const std::string& header, std::size_t data_bytes) {
  Bytes bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(header.size() >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.resize(bytes.size() + data_bytes, 0x3f);
  return bytes;
}

void safetensors_corpus(const fs::path& dir) {
  fuzz::WeightsNet net(7);  // another seed than the target's model: a load changes its values
  pnn::save(net, dir / "weights");
  pnn::write_safetensors(
      dir / "records",
      std::vector<pnn::TensorRecord>{
          {"scalar", "F32", {}, as_bytes({1.5f})},
          {"empty", "I64", {0, 3}, {}},
          {"bytes", "U8", {3}, {std::byte{1}, std::byte{2}, std::byte{3}}},
          {"h\xc3\xa9llo \"quoted\"", "BF16", {2}, {std::byte{0}, std::byte{1}, std::byte{2}, std::byte{3}}},
      },
      {{"format", "pt"}, {"note", "line\nbreak"}});
  write(dir / "unknown-fields-and-escapes",
        safetensors(R"({"__metadata__":null,"x\u00e9\ud83d\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4],)"
                    R"("extra":[1,-2.5e3,true,false,null,{"a":[[]]}]}})",
                    4));
  write(dir / "reversed-offsets", safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4));
  write(dir / "overlap", safetensors(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                     R"("b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                                     3));
  write(dir / "huge-shape",
        safetensors(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8));
  write(dir / "deep-nesting", safetensors(R"({"a":{"x":)" + std::string(80, '[') + std::string(80, ']') + "}}", 0));
  write(dir / "header-past-the-end", Bytes{0xff, 0, 0, 0, 0, 0, 0, 0, '{', '}'});
  pnn::SafetensorsFile negative_count = pnn::read_safetensors(dir / "weights");
  for (auto& tensor : negative_count.tensors)
    if (tensor.name == "1.num_batches_tracked") tensor.data.assign(8, std::byte{0xff});
  pnn::write_safetensors(dir / "negative-count", negative_count.tensors, negative_count.metadata);
  Bytes truncated = read(dir / "weights");
  truncated.resize(truncated.size() - 3);
  write(dir / "truncated-weights", truncated);
}

void checkpoint_corpus(const fs::path& dir) {
  fuzz::CheckpointNet net(fuzz::model_seed);
  fuzz::CheckpointOptimizer adam({.learning_rate = 0.01});
  pnn::Tensor<float, 2> inputs(pnn::Extents<2>{2, fuzz::CheckpointNet::input_shape::size});
  for (pnn::index i = 0; i < inputs.size(); ++i) inputs.data()[i] = 0.1f * static_cast<float>(i);
  pnn::Tensor<std::int32_t, 1> labels(pnn::Extents<1>{2});
  labels[0] = 1;
  labels[1] = 0;
  for (int step = 0; step < 3; ++step)
    pnn::train_step(net, inputs.view(), labels.view(), adam, pnn::SoftmaxCrossEntropy{});
  const pnn::TrainingPosition position{.step = 3,
                                       .epoch = 1,
                                       .batch = 1,
                                       .seed = 11,
                                       .batch_size = 2,
                                       .samples_per_epoch = 4,
                                       .epoch_loss_sum = 1.25,
                                       .epoch_samples = 2};
  pnn::save_checkpoint(net, adam, position, dir / "checkpoint");
  pnn::save(net, dir / "weights-only");
  fuzz::CheckpointNet other_seed(fuzz::model_seed + 1);
  pnn::save_checkpoint(other_seed, adam, position, dir / "other-seed");
  pnn::Optimizer<pnn::SGD> sgd({.learning_rate = 0.1, .momentum = 0.9});
  pnn::save_checkpoint(net, sgd, position, dir / "other-rule");

  const pnn::SafetensorsFile file = pnn::read_safetensors(dir / "checkpoint");
  auto with_metadata = [&](const std::string& name, const std::string& key, const std::string& value) {
    pnn::SafetensorsFile changed = file;
    if (value.empty()) changed.metadata.erase(key);
    else changed.metadata[key] = value;
    pnn::write_safetensors(dir / name, changed.tensors, changed.metadata);
  };
  with_metadata("negative-step", "training.step", "-3");
  with_metadata("negative-optimizer-steps", "optimizer.steps", "-1");
  with_metadata("steps-not-a-number", "optimizer.steps", "3x");
  with_metadata("no-epoch", "training.epoch", "");
  with_metadata("loss-sum-nan", "training.epoch_loss_sum", "nan");
  with_metadata("version-1", "pnn.checkpoint", "1");
  with_metadata("version-3", "pnn.checkpoint", "3");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIRECTORY (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* target : {"idx", "cifar", "safetensors", "checkpoint"}) fs::create_directories(root / target);
  idx_corpus(root / "idx");
  cifar_corpus(root / "cifar");
  safetensors_corpus(root / "safetensors");
  checkpoint_corpus(root / "checkpoint");
  return 0;
}
