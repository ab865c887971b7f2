// The pnn side of tests/io/check_pytorch_interop.py, which runs it against PyTorch: the example models
// (examples/models.hpp) and one model holding every other layer type.
//
//   pytorch_interop MODEL save DIR    writes DIR/pnn_weights.safetensors (pnn::save, after a few training
//                                     passes so BatchNorm's statistics and counts are not their initial
//                                     values), DIR/pnn_inputs.safetensors ("x", NCHW as PyTorch takes it) and
//                                     DIR/pnn_logits.safetensors ("logits" in inference)
//   pytorch_interop MODEL check DIR   loads DIR/torch_weights.safetensors (a PyTorch state dict) with
//                                     pnn::load, runs DIR/torch_inputs.safetensors in inference and compares
//                                     with DIR/torch_logits.safetensors; exit 1 if they differ by more than
//                                     float rounding
//
// pnn holds images channels-last, (h, w, c) per row; PyTorch's inputs are (c, h, w), converted here.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <pnn/pnn.hpp>
#include <string>
#include <vector>

#include "../../examples/models.hpp"

using namespace pnn;

namespace {

// The example models, as the example programs define them.
using examples::Cnn;
using examples::Mlp;
using examples::ResNet;

// Every layer type the examples leave out, and options they do not use: three input channels, stride
// with padding, a non-default BatchNorm momentum and epsilon, BatchNorm of features, dropout (an identity
// in inference), average pooling with its own stride, sigmoid and tanh.
using Layers = Sequential<Input<3, 9, 8>, Conv2D<6, 3, Pad<1>, Stride<2>>, BatchNorm<Momentum<1, 4>, Epsilon<1, 1000>>,
                          Sigmoid, MaxPool2D<2, 1>, Conv2D<5, 1>, AvgPool2D<2, 1>, Flatten, Dense<12>, BatchNorm<>,
                          Tanh, Dropout<20>, Dense<4>>;

constexpr pnn::index samples = 5;

template <class Model>
constexpr pnn::index channels_of() {
  return Model::input_shape::rank == 3 ? Model::input_shape::dims[0] : 1;
}

TensorRecord float_record(const std::string& name, std::vector<pnn::index> shape, const std::vector<float>& values) {
  TensorRecord record{name, "F32", std::move(shape), std::vector<std::byte>(values.size() * sizeof(float))};
  std::memcpy(record.data.data(), values.data(), record.data.size());
  return record;
}

std::vector<float> float_values(const std::filesystem::path& path, const std::string& name) {
  const SafetensorsFile file = read_safetensors(path);
  const TensorRecord* record = file.find(name);
  PNN_CHECK(record && record->dtype == "F32", IoError, path.string(), " has no F32 tensor \"", name, "\"");
  std::vector<float> values(record->data.size() / sizeof(float));
  std::memcpy(values.data(), record->data.data(), values.size() * sizeof(float));
  return values;
}

// Rows of (c, h, w) samples, as PyTorch takes them, from pnn's (h, w, c) rows, or back.
template <class Model>
std::vector<float> to_pytorch(const Tensor<float, 2>& rows) {
  constexpr pnn::index c = channels_of<Model>(), positions = Model::input_shape::size / c;
  std::vector<float> values(static_cast<std::size_t>(rows.size()));
  for (pnn::index s = 0; s < rows.dim(0); ++s)
    for (pnn::index p = 0; p < positions; ++p)
      for (pnn::index k = 0; k < c; ++k)
        values[static_cast<std::size_t>((s * c + k) * positions + p)] = rows(s, p * c + k);
  return values;
}
template <class Model>
Tensor<float, 2> from_pytorch(const std::vector<float>& values) {
  constexpr pnn::index c = channels_of<Model>(), positions = Model::input_shape::size / c;
  const pnn::index count = static_cast<pnn::index>(values.size()) / Model::input_shape::size;
  Tensor<float, 2> rows(Extents<2>{count, Model::input_shape::size});
  for (pnn::index s = 0; s < count; ++s)
    for (pnn::index p = 0; p < positions; ++p)
      for (pnn::index k = 0; k < c; ++k)
        rows(s, p * c + k) = values[static_cast<std::size_t>((s * c + k) * positions + p)];
  return rows;
}

std::vector<pnn::index> pytorch_input_shape(pnn::index count, const auto& dims) {
  std::vector<pnn::index> shape{count};
  for (pnn::index d : dims) shape.push_back(d);
  return shape;
}

template <class Model>
int save_for_pytorch(const std::filesystem::path& directory) {
  Model model(/*seed=*/3);
  Generator random(17);
  Tensor<float, 2> x(Extents<2>{samples, Model::input_shape::size});
  for (pnn::index pass = 0; pass < 3; ++pass) {  // BatchNorm's running statistics and counts move
    for (pnn::index i = 0; i < x.size(); ++i)
      x.data()[i] = random.uniform<float>(0.0f, 1.0f) + static_cast<float>(pass);
    model.forward(x.view(), /*training=*/true);
  }
  for (pnn::index i = 0; i < x.size(); ++i) x.data()[i] = random.uniform<float>(0.0f, 1.0f);
  const auto logits = model.forward(x.view(), /*training=*/false);
  save(model, directory / "pnn_weights.safetensors");
  write_safetensors(
      directory / "pnn_inputs.safetensors",
      std::vector{float_record("x", pytorch_input_shape(samples, Model::input_shape::dims), to_pytorch<Model>(x))});
  write_safetensors(directory / "pnn_logits.safetensors",
                    std::vector{float_record("logits", {samples, logits.dim(1)},
                                             std::vector<float>(logits.data(), logits.data() + logits.size()))});
  return 0;
}

template <class Model>
int check_from_pytorch(const std::filesystem::path& directory) {
  Model model(/*seed=*/5);
  load(model, directory / "torch_weights.safetensors");
  const Tensor<float, 2> x = from_pytorch<Model>(float_values(directory / "torch_inputs.safetensors", "x"));
  const std::vector<float> expected = float_values(directory / "torch_logits.safetensors", "logits");
  const auto logits = model.forward(x.view(), /*training=*/false);
  PNN_CHECK(static_cast<std::size_t>(logits.size()) == expected.size(), ShapeError, "pnn computed ", logits.size(),
            " logits, PyTorch ", expected.size());
  double largest = 0;
  bool close = true;
  for (pnn::index i = 0; i < logits.size(); ++i) {
    const double difference = std::abs(static_cast<double>(logits.data()[i]) - expected[static_cast<std::size_t>(i)]);
    largest = std::max(largest, difference);
    close = close && difference <= 1e-4 * std::max(1.0, std::abs(static_cast<double>(expected[i])));
  }
  std::printf("largest difference from PyTorch's logits: %.3g\n", largest);
  return close ? 0 : 1;
}

template <class Model>
int run(const std::string& mode, const std::filesystem::path& directory) {
  if (mode == "save") return save_for_pytorch<Model>(directory);
  if (mode == "check") return check_from_pytorch<Model>(directory);
  std::fprintf(stderr, "unknown mode %s: save or check\n", mode.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s mlp|cnn|resnet|layers save|check DIR\n", argv[0]);
    return 2;
  }
  const std::string model = argv[1], mode = argv[2];
  const std::filesystem::path directory = argv[3];
  if (model == "mlp") return run<Mlp>(mode, directory);
  if (model == "cnn") return run<Cnn>(mode, directory);
  if (model == "resnet") return run<ResNet>(mode, directory);
  if (model == "layers") return run<Layers>(mode, directory);
  std::fprintf(stderr, "unknown model %s: mlp, cnn, resnet or layers\n", model.c_str());
  return 2;
} catch (const std::exception& error) {
  std::fprintf(stderr, "pytorch_interop: %s\n", error.what());
  return 1;
}
