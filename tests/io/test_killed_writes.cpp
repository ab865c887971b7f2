// A process killed with SIGKILL at any moment of writing weights, metrics or a checkpoint leaves each
// file as one complete version, the one before or the one being written, never a mixture or a truncation.
// A child process rewrites the three files over and over, alternating two versions; the parent kills it
// after a random delay, many times, and checks each file's bytes against the two versions.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <pnn/pnn.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace pnn;

namespace {

// About 4 MB of weights, so that a write takes long enough to be interrupted in the middle.
using Wide = Sequential<Input<1024>, Dense<1024>, ReLU, Dense<10>>;

std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Version {
  Wide model;
  Optimizer<SGD> optimizer{{.learning_rate = 0.1, .momentum = 0.9}};
  std::vector<EpochMetrics> metrics;
  TrainingPosition position;

  explicit Version(int which) : model(1) {
    // Every weight and momentum differs between the two versions, so any mixture of them is detected.
    for (auto& p : model.parameters())
      for (pnn::index i = 0; i < p.value.size(); ++i) p.value.data()[i] += static_cast<float>(which);
    for (int e = 0; e <= 40 * which + 40; ++e)
      metrics.push_back({.epoch = e, .steps = 100 * e, .train_loss = 1.0 / (e + 1) + which, .test_loss = 0.5});
    position = {.step = which + 1, .batch_size = 64, .samples_per_epoch = 1000};
    Tensor<float, 2> x(4, 1024);
    for (pnn::index i = 0; i < x.size(); ++i) x.data()[i] = 0.25f;
    Tensor<std::int32_t, 1> y(Extents<1>{4});
    train_step(model, TensorView<const float, 2>(x), TensorView<const std::int32_t, 1>(y), optimizer,
               SoftmaxCrossEntropy{});
  }

  void write(const std::filesystem::path& directory) const {
    save(model, directory / "weights.safetensors");
    write_metrics(directory / "metrics.jsonl", metrics);
    save_checkpoint(model, optimizer, position, directory / "checkpoint.safetensors");
  }
};

}  // namespace

TEST_CASE("killed_writes.a_sigkill_at_any_moment_leaves_one_whole_version_of_each_file") {
  const auto root = std::filesystem::temp_directory_path() / ("pnn-test-killed-writes-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  const std::vector<std::string> files = {"weights.safetensors", "metrics.jsonl", "checkpoint.safetensors"};
  const Version first(0), second(1);
  // The two complete versions of each file, written without interruption.
  std::vector<std::vector<std::string>> versions(files.size());
  for (const Version* version : {&first, &second}) {
    const auto directory = root / "reference";
    std::filesystem::create_directories(directory);
    version->write(directory);
    for (std::size_t f = 0; f < files.size(); ++f) versions[f].push_back(file_text(directory / files[f]));
  }
  for (std::size_t f = 0; f < files.size(); ++f) REQUIRE(versions[f][0] != versions[f][1]);

  const auto directory = root / "target";
  std::filesystem::create_directories(directory);
  first.write(directory);
  std::mt19937 random(7);
  // Kill until 20 kills have landed inside a write (they leave a temporary file behind), or give up.
  int interrupted = 0, kill = 0;
  constexpr int wanted = 20, most = 400;
  for (; interrupted < wanted && kill < most; ++kill) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      for (int round = 0;; ++round) (round % 2 ? first : second).write(directory);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(2000, 60000)(random)));
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    for (std::size_t f = 0; f < files.size(); ++f) {
      const std::string now = file_text(directory / files[f]);
      CHECK_MESSAGE((now == versions[f][0] || now == versions[f][1]),
                    files[f] << " after kill " << kill << " is neither complete version (" << now.size()
                             << " bytes; the versions have " << versions[f][0].size() << " and "
                             << versions[f][1].size() << ")");
    }
    // The killed child's temporary files stay behind, as after any crash: count them, then clear them.
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      if (entry.path().filename().string().find(".tmp-") == std::string::npos) continue;
      ++interrupted;
      std::filesystem::remove(entry.path());
    }
  }
  // The test means something only if kills landed inside writes.
  CHECK_MESSAGE(interrupted >= wanted, "only " << interrupted << " of " << kill << " kills hit a write");
  // What was left loads: the checkpoint into a model and an optimiser, the weights into a model.
  Wide loaded(1);
  Optimizer<SGD> optimizer({.learning_rate = 0.1, .momentum = 0.9});
  const auto position = load_checkpoint(loaded, optimizer, directory / "checkpoint.safetensors");
  CHECK((position == first.position || position == second.position));
  load(loaded, directory / "weights.safetensors");
  std::filesystem::remove_all(root);
}
