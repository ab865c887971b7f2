// Checkpoints: a run resumed from one continues bit for bit as the run that never stopped (SGD with
// momentum and weight decay, Adam, LARS; an MLP with Dropout and a CNN with BatchNorm); what a file holds;
// the refusals (another model, another rule, a truncated file, a damaged header), after which the model
// and the optimiser are unchanged; and a write killed midway, which leaves the previous checkpoint.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <pnn/pnn.hpp>
#include <string>
#include <vector>

using namespace pnn;

namespace {

using Mlp = Sequential<Input<6>, Dense<8>, ReLU, Dropout<30>, Dense<3>>;
using Cnn = Sequential<Input<1, 5, 5>, Conv2D<2, 3>, BatchNorm<>, ReLU, Flatten, Dense<3>>;
using OtherMlp = Sequential<Input<6>, Dense<9>, ReLU, Dropout<30>, Dense<3>>;

constexpr pnn::index batch = 5;

std::filesystem::path scratch(const std::string& name) {
  const auto directory = std::filesystem::temp_directory_path() / ("pnn-test-checkpoint-" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  return directory / name;
}

std::vector<std::byte> file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> result(bytes.size());
  std::memcpy(result.data(), bytes.data(), bytes.size());
  return result;
}
void write_bytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Step `step`'s batch: inputs and labels drawn from a stream keyed by the step.
template <class Net>
struct StepData {
  Tensor<float, 2> inputs{Extents<2>{batch, Net::input_shape::size}};
  Tensor<std::int32_t, 1> labels{Extents<1>{batch}};
  explicit StepData(pnn::index step) {
    Generator random = Generator(99).split(static_cast<std::uint64_t>(step));
    for (pnn::index i = 0; i < inputs.size(); ++i) inputs.data()[i] = random.uniform<float>(-1.0f, 1.0f);
    for (pnn::index i = 0; i < batch; ++i) labels[i] = static_cast<std::int32_t>(random.next() % 3);
  }
};

template <class Net, class Rule>
float step(Net& net, Optimizer<Rule>& optimizer, pnn::index number) {
  const StepData<Net> data(number);
  return train_step(net, data.inputs.view(), data.labels.view(), optimizer, SoftmaxCrossEntropy{});
}

template <class Net>
std::vector<float> values(const Net& net) {
  std::vector<float> all(net.parameter_values().data(), net.parameter_values().data() + net.parameter_values().size());
  all.insert(all.end(), net.buffer_values().data(), net.buffer_values().data() + net.buffer_values().size());
  return all;
}

template <class Rule>
std::vector<float> state_values(const Optimizer<Rule>& optimizer, std::span<const Parameter<float, cpu>> parameters) {
  std::vector<float> all;
  for (const auto& [name, tensor] : optimizer.state(parameters).tensors)
    all.insert(all.end(), tensor.data(), tensor.data() + tensor.size());
  return all;
}

// 40 steps straight against 20 steps, a checkpoint, a fresh model and optimiser, and 20 steps more.
template <class Net, class Rule>
void check_resume_is_exact(const Rule& rule) {
  const auto path = scratch("resume.safetensors");
  Net straight(7);
  Optimizer<Rule> straight_optimizer(rule);
  std::vector<float> losses;
  for (pnn::index i = 0; i < 40; ++i) losses.push_back(step(straight, straight_optimizer, i));

  {
    Net first(7);
    Optimizer<Rule> optimizer(rule);
    for (pnn::index i = 0; i < 20; ++i) step(first, optimizer, i);
    save_checkpoint(first, optimizer, {.step = 20, .epoch = 1, .batch = 2, .seed = 3, .batch_size = batch}, path);
  }
  Net resumed(7);
  Optimizer<Rule> optimizer(rule);
  const TrainingPosition position = load_checkpoint(resumed, optimizer, path);
  CHECK(position == TrainingPosition{.step = 20, .epoch = 1, .batch = 2, .seed = 3, .batch_size = batch});
  CHECK(optimizer.steps() == 20);
  for (pnn::index i = 20; i < 40; ++i) CHECK(step(resumed, optimizer, i) == losses[static_cast<std::size_t>(i)]);
  CHECK(values(resumed) == values(straight));  // bit for bit: every weight and running statistic
  CHECK(optimizer.steps() == straight_optimizer.steps());
  CHECK(state_values(optimizer, resumed.parameters()) == state_values(straight_optimizer, straight.parameters()));
}

}  // namespace

TEST_CASE("checkpoint.resume_equals_uninterrupted_training") {
  const SGD sgd{.learning_rate = 0.05, .momentum = 0.9, .weight_decay = 0.01};
  const Adam adam{.learning_rate = 0.01, .weight_decay = 0.01};
  const LARS lars{.learning_rate = 0.5, .momentum = 0.9, .weight_decay = 0.001};
  SUBCASE("mlp with dropout, sgd") { check_resume_is_exact<Mlp>(sgd); }
  SUBCASE("mlp with dropout, adam") { check_resume_is_exact<Mlp>(adam); }
  SUBCASE("mlp with dropout, lars") { check_resume_is_exact<Mlp>(lars); }
  SUBCASE("cnn with batch norm, sgd") { check_resume_is_exact<Cnn>(sgd); }
  SUBCASE("cnn with batch norm, adam") { check_resume_is_exact<Cnn>(adam); }
  SUBCASE("cnn with batch norm, lars") { check_resume_is_exact<Cnn>(lars); }
}

TEST_CASE("checkpoint.file_holds_weights_optimizer_state_and_metadata") {
  const auto path = scratch("contents.safetensors");
  Cnn net(3);
  Optimizer<Adam> optimizer({.learning_rate = 0.01});
  for (pnn::index i = 0; i < 3; ++i) step(net, optimizer, i);
  save_checkpoint(net, optimizer, {.step = 3, .seed = 11, .batch_size = batch, .samples_per_epoch = 50}, path);
  const SafetensorsFile file = read_safetensors(path);
  save(net, scratch("contents-weights.safetensors"));
  const SafetensorsFile weights_file = read_safetensors(scratch("contents-weights.safetensors"));
  for (const auto& p : net.parameters()) {
    const TensorRecord* weights = file.find(p.name());
    const TensorRecord* saved = weights_file.find(p.name());
    REQUIRE(weights);
    REQUIRE(saved);
    CHECK(weights->shape == p.declaration.shape);
    CHECK(weights->dtype == saved->dtype);
    CHECK(weights->data == saved->data);  // pnn::save's layouts (PyTorch's)
    if (!p.trainable()) continue;
    for (const char* field : {"first_moment", "second_moment"}) {
      const TensorRecord* state = file.find("optimizer." + p.name() + "." + field);
      REQUIRE(state);
      CHECK(state->shape == p.declaration.shape);
      CHECK(state->dtype == "F32");
    }
  }
  // The convolution's optimiser state is laid out as its weight: (F, C, K, K) in the file, (F, K, K, C) in
  // memory.
  const auto conv_state = optimizer.state(net.parameters()).tensors.at("0.weight.first_moment");
  const TensorRecord* conv_file = file.find("optimizer.0.weight.first_moment");
  REQUIRE(conv_file);
  REQUIRE(conv_file->shape == std::vector<pnn::index>{2, 1, 3, 3});
  for (pnn::index f = 0; f < 2; ++f)
    for (pnn::index k = 0; k < 9; ++k) {
      float in_file;
      std::memcpy(&in_file, conv_file->data.data() + 4 * (f * 9 + k), 4);
      CHECK(in_file == conv_state.data()[f * 9 + k]);  // one channel: (kh, kw) order is the same in both
    }
  // conv, batch norm (2 trainable, 3 buffers), dense; moments
  CHECK(file.tensors.size() == 2 + 5 + 2 + 3 * 4);
  CHECK(file.metadata.at("pnn.checkpoint") == "2");
  CHECK(file.metadata.at("optimizer.rule") == "Adam");
  CHECK(file.metadata.at("optimizer.steps") == "3");
  CHECK(file.metadata.at("optimizer.hyper_parameters").find("learning_rate=0.01") != std::string::npos);
  CHECK(file.metadata.at("model.summary") == Cnn::summary());
  CHECK(file.metadata.at("model.seed") == "3");
  CHECK(file.metadata.at("training.seed") == "11");
  CHECK(file.metadata.at("training.samples_per_epoch") == "50");
  // The weights are pnn::save's: a checkpoint also loads as a weights file's tensors.
  Cnn copy(3);
  load_checkpoint(copy, optimizer, path);
  CHECK(values(copy) == values(net));
}

TEST_CASE("checkpoint.refusals_name_the_file_and_change_nothing") {
  const auto path = scratch("refused.safetensors");
  Mlp written(5);
  Optimizer<SGD> sgd({.learning_rate = 0.1, .momentum = 0.9});
  for (pnn::index i = 0; i < 2; ++i) step(written, sgd, i);
  save_checkpoint(written, sgd, {.step = 2}, path);

  // The target of every failed load: trained a little, so that its values and state are its own.
  Mlp target(5);
  Optimizer<SGD> target_sgd({.learning_rate = 0.1, .momentum = 0.9});
  step(target, target_sgd, 10);
  const auto weights_before = values(target);
  const auto state_before = state_values(target_sgd, target.parameters());
  auto unchanged = [&] {
    CHECK(values(target) == weights_before);
    CHECK(state_values(target_sgd, target.parameters()) == state_before);
    CHECK(target_sgd.steps() == 1);
  };
  auto refused = [&](const std::filesystem::path& file, const std::string& problem) {
    try {
      load_checkpoint(target, target_sgd, file);
      FAIL("loading ", file.string(), " did not throw");
    } catch (const Error& error) {
      const std::string message = error.what();
      CHECK_MESSAGE(message.find(file.string()) != std::string::npos, message);
      CHECK_MESSAGE(message.find(problem) != std::string::npos, message);
    }
    unchanged();
  };

  SUBCASE("another model") {
    OtherMlp other(5);
    Optimizer<SGD> other_sgd({.learning_rate = 0.1, .momentum = 0.9});
    const auto other_path = scratch("other-model.safetensors");
    save_checkpoint(other, other_sgd, {}, other_path);
    refused(other_path,
            "it is of another model: line 1 of its summary is `  0  Dense<9>  -> (9,)` in the checkpoint but `  0  "
            "Dense<8>  -> (8,)` in this model");
  }
  SUBCASE("another optimiser") {
    Optimizer<Adam> adam;
    const auto adam_path = scratch("adam.safetensors");
    save_checkpoint(written, adam, {}, adam_path);
    refused(adam_path, "the state of optimiser Adam, not of SGD");
  }
  SUBCASE("another seed") {
    Mlp seeded(6);
    const auto seed_path = scratch("seed.safetensors");
    save_checkpoint(seeded, sgd, {}, seed_path);
    refused(seed_path, "built with seed 6, this one was built with seed 5");
  }
  SUBCASE("a weights file") {
    const auto weights_path = scratch("weights.safetensors");
    save(written, weights_path);
    refused(weights_path, "not a pnn checkpoint");
  }
  SUBCASE("a missing optimiser tensor") {
    SafetensorsFile file = read_safetensors(path);
    std::erase_if(file.tensors, [](const TensorRecord& t) { return t.name == "optimizer.3.bias.velocity"; });
    const auto missing_path = scratch("missing.safetensors");
    write_safetensors(missing_path, file.tensors, file.metadata);
    refused(missing_path, "tensor \"optimizer.3.bias.velocity\" (shape [3], F32) is missing from the file");
  }
  SUBCASE("a wrongly shaped tensor") {
    SafetensorsFile file = read_safetensors(path);
    for (auto& t : file.tensors)
      if (t.name == "optimizer.0.weight.velocity") t.shape = {6, 8};
    const auto shape_path = scratch("shape.safetensors");
    write_safetensors(shape_path, file.tensors, file.metadata);
    refused(shape_path, "tensor \"optimizer.0.weight.velocity\" has shape [6, 8] in the file but [8, 6]");
  }
  SUBCASE("a truncated file") {
    auto bytes = file_bytes(path);
    bytes.resize(bytes.size() - 10);
    const auto truncated = scratch("truncated.safetensors");
    write_bytes(truncated, bytes);
    refused(truncated, "reach past the end of the data buffer");
  }
  SUBCASE("a flipped byte in the header") {
    auto bytes = file_bytes(path);
    bytes[8] ^= std::byte{0x04};  // the header's opening '{' becomes '\x7f'
    const auto damaged = scratch("damaged.safetensors");
    write_bytes(damaged, bytes);
    refused(damaged, "the header is not a JSON object");
  }
  SUBCASE("no file") { refused(scratch("absent.safetensors"), "No such file"); }
  // Metadata the format allows but a run cannot continue from (found by tests/fuzz/fuzz_checkpoint.cpp:
  // a negative step was accepted and handed to fit()).
  auto with_metadata = [&](const std::string& key, const std::string& value) {
    SafetensorsFile file = read_safetensors(path);
    file.metadata[key] = value;
    const auto changed = scratch("metadata.safetensors");
    write_safetensors(changed, file.tensors, file.metadata);
    return changed;
  };
  SUBCASE("a negative step") {
    refused(with_metadata("training.step", "-3"), "metadata \"training.step\" is -3, a count cannot be negative");
  }
  SUBCASE("a negative optimiser step count") {
    refused(with_metadata("optimizer.steps", "-1"), "metadata \"optimizer.steps\" is -1, a count cannot be negative");
  }
  SUBCASE("a batch size that is not a number") {
    refused(with_metadata("training.batch_size", "8 "),
            "metadata \"training.batch_size\" is \"8 \", which is not a number");
  }
  SUBCASE("a loss sum that is not finite") {
    refused(with_metadata("training.epoch_loss_sum", "nan"), "\"training.epoch_loss_sum\" is nan, not a finite number");
  }
  SUBCASE("shuffle neither 0 nor 1") {
    refused(with_metadata("training.shuffle", "2"), "metadata \"training.shuffle\" is 2, not 0 or 1");
  }
}

TEST_CASE("checkpoint.a_write_killed_midway_leaves_the_previous_checkpoint") {
  using Wide = Sequential<Input<256>, Dense<256>, ReLU, Dense<3>>;  // a checkpoint of 0.5 MB
  const auto path = scratch("killed.safetensors");
  Wide net(1);
  Optimizer<SGD> sgd({.learning_rate = 0.1, .momentum = 0.9});
  save_checkpoint(net, sgd, {.step = 1}, path);
  const auto previous = file_bytes(path);

  // A child that writes the next checkpoint dies when its file reaches 64 KiB (SIGXFSZ), as a process
  // killed in the middle of the write.
  net.parameter_values()[0] += 1;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const rlimit limit{64 * 1024, 64 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    save_checkpoint(net, sgd, {.step = 2}, path);
    ::_exit(0);  // not reached
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGXFSZ);
  CHECK(file_bytes(path) == previous);
  Wide loaded(1);
  Optimizer<SGD> loaded_sgd({.learning_rate = 0.1, .momentum = 0.9});
  CHECK(load_checkpoint(loaded, loaded_sgd, path).step == 1);

  // In this process the same failure is an IoError, and the temporary file is removed.
  struct sigaction ignore {
  }, saved{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGXFSZ, &ignore, &saved);
  rlimit old{};
  ::getrlimit(RLIMIT_FSIZE, &old);
  const rlimit limit{64 * 1024, old.rlim_max};
  ::setrlimit(RLIMIT_FSIZE, &limit);
  CHECK_THROWS_WITH_AS(save_checkpoint(net, sgd, {.step = 2}, path),
                       doctest::Contains(("cannot write " + path.string() + ": write failed").c_str()), IoError);
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::sigaction(SIGXFSZ, &saved, nullptr);
  CHECK(file_bytes(path) == previous);
  // (The killed child's temporary file stays behind, as after a crash; this process removed its own.)
  const std::string own_temporary = "killed.safetensors.tmp-" + std::to_string(::getpid()) + "-";
  for (const auto& entry : std::filesystem::directory_iterator(path.parent_path()))
    CHECK_MESSAGE(entry.path().filename().string().find(own_temporary) != 0, entry.path().string());
}
