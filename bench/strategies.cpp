// bench/strategies.cpp: trains one model under one parallel strategy for a number of steps and prints one
// line of JSON: the time per step and per epoch, and every rank's StrategyStatistics (compute,
// communication, exposed communication, hidden fraction, bubble). bench/strategies.py runs it for every
// strategy, model and worker count, next to PyTorch DDP, and tabulates and plots the results.
//
//   strategies --model mlp|cnn|balanced --strategy serial|data_parallel|model_parallel|pipeline
//              [--workers W] [--threads T] [--microbatches M] [--steps N] [--warmup N] [--batch B]
//              [--no-overlap] [--bucket-bytes N] [--seed S] [--data DIR]
//
// Ranks are threads of this process (the Local communicator), each using T threads for matrix products.
// Model and pipeline parallelism cut the network in two stages, so they need --workers 2.
#include <cstdlib>
#include <iostream>
#include <string>

#include "strategies.hpp"

namespace {

const char* usage =
    "usage: strategies --model mlp|cnn|balanced --strategy serial|data_parallel|model_parallel|pipeline\n"
    "                  [--workers W] [--threads T] [--microbatches M] [--steps N] [--warmup N] [--batch B]\n"
    "                  [--no-overlap] [--bucket-bytes N] [--seed S] [--data DIR]\n";

long long number(const std::string& flag, const char* text, long long minimum) {
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  PNN_CHECK(end != text && *end == '\0' && value >= minimum, pnn::ArgumentError, flag, " needs an integer >= ", minimum,
            ", got '", text, "'");
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    bench::RunOptions options;
    std::string data_directory;
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      if (flag == "--help" || flag == "-h") {
        std::cout << usage;
        return 0;
      }
      if (flag == "--no-overlap") {
        options.overlap = false;
        continue;
      }
      PNN_CHECK(i + 1 < argc, pnn::ArgumentError, flag, " needs a value\n", usage);
      const char* value = argv[++i];
      if (flag == "--model") options.model = value;
      else if (flag == "--strategy") options.strategy = value;
      else if (flag == "--workers") options.workers = static_cast<int>(number(flag, value, 1));
      else if (flag == "--threads") options.threads = static_cast<int>(number(flag, value, 1));
      else if (flag == "--microbatches") options.microbatches = number(flag, value, 1);
      else if (flag == "--steps") options.steps = number(flag, value, 0);
      else if (flag == "--warmup") options.warmup = number(flag, value, 0);
      else if (flag == "--batch") options.batch = number(flag, value, 1);
      else if (flag == "--bucket-bytes") options.bucket_bytes = number(flag, value, 1);
      else if (flag == "--seed") options.seed = static_cast<std::uint64_t>(number(flag, value, 0));
      else if (flag == "--data") data_directory = value;
      else throw pnn::ArgumentError("unknown flag " + flag + "\n" + usage);
    }
    PNN_CHECK(!options.model.empty() && !options.strategy.empty(), pnn::ArgumentError,
              "--model and --strategy are required\n", usage);
    PNN_CHECK(options.strategy != "serial" || options.workers == 1, pnn::ArgumentError,
              "the serial strategy runs one worker; give it --threads instead of --workers");

    const pnn::TrainTestData data = pnn::load_mnist_format(
        data_directory.empty() ? pnn::default_data_directory() : std::filesystem::path(data_directory));
    std::string result;
    if (options.model == "mlp") result = bench::run_mlp(options, data.train);
    else if (options.model == "cnn") result = bench::run_cnn(options, data.train);
    else if (options.model == "balanced") result = bench::run_balanced(options, data.train);
    else throw pnn::ArgumentError("--model must be mlp, cnn or balanced, got " + options.model);
    std::cout << result << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "strategies: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
