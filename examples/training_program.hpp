// examples/training_program.hpp: the command line shared by the training examples.
//
// Each example defines its network type and where a pipeline would cut it, and calls
// run_training_program<Network, Stages>(...). The build compiles every example once per strategy from
// the same source, choosing the strategy with PNN_EXAMPLE_STRATEGY (serial, data_parallel,
// model_parallel, pipeline) and the communicator with PNN_EXAMPLE_MPI (Mpi under mpirun, else Local
// threads, --workers of them). PNN_EXAMPLE_CUDA (set by the .cu twins, e.g. train_cnn_cuda.cu) puts the
// model on the GPU, with Nccl between the ranks (one GPU each; NcclMpi under mpirun). The program parses
// the flags, loads the data (Fashion-MNIST by default; CIFAR-10 with --data-format cifar10) on the host,
// trains with fit(), which copies each batch to the model's device, reports the test accuracy, and
// optionally saves the weights and metrics.
// --checkpoint FILE writes a checkpoint when training ends (and with --checkpoint-every N every N steps);
// --resume FILE continues the run that wrote one exactly, under any strategy (io/checkpoint.hpp).
// --lr-schedule (with --lr-step, --lr-gamma, --lr-floor), --warmup-steps, --clip-norm, --accumulate and
// --eval-every set fit()'s learning-rate schedule, the optimiser's clipping, gradient accumulation and
// periodic evaluation (train/fit.hpp).
//
// The network's input shape is fixed at compile time, so a program trains on data of one shape: the data's
// sample shape is checked against the model's before training (data_shape_error), and a mismatch names both
// shapes and the example that takes the data (train_resnet_cifar10 is train_resnet for CIFAR-10's images).
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <pnn/cpu/simd.hpp>  // Eigen, under the warning fix that must precede it
#include <cstdlib>
#include <iostream>
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>
#include <stdexcept>
#include <string>

#if defined(PNN_EXAMPLE_MPI)
#include <pnn/dist/mpi.hpp>
#endif
#if defined(PNN_EXAMPLE_CUDA)
#include <pnn/cuda/cuda.hpp>
#include <pnn/cuda/nccl.cuh>
#if defined(PNN_EXAMPLE_MPI)
#include <pnn/cuda/nccl_mpi.cuh>
#endif
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace examples {

#define PNN_STRATEGY_serial 0
#define PNN_STRATEGY_data_parallel 1
#define PNN_STRATEGY_model_parallel 2
#define PNN_STRATEGY_pipeline 3
#define PNN_STRATEGY_ID(name) PNN_STRATEGY_##name
#define PNN_STRATEGY_SELECTED(name) PNN_STRATEGY_ID(name)
#if !defined(PNN_EXAMPLE_STRATEGY)
#define PNN_EXAMPLE_STRATEGY serial
#endif

#if defined(PNN_EXAMPLE_CUDA)
using Device = pnn::cuda;
#else
using Device = pnn::cpu;
#endif

#if defined(PNN_EXAMPLE_MPI) && defined(PNN_EXAMPLE_CUDA)
using Communicator = pnn::NcclMpi;
#elif defined(PNN_EXAMPLE_MPI)
using Communicator = pnn::Mpi;
#elif defined(PNN_EXAMPLE_CUDA)
using Communicator = pnn::Nccl;
#else
using Communicator = pnn::Local;
#endif

// The network on the program's device.
template <class Network>
using OnDevice = typename Network::template on<Device>;

// A pipeline's micro-batches: a network with BatchNorm (the ResNet) normalises each with its own
// statistics, which a pipeline only accepts when asked to (docs/strategies.md, "BatchNorm").
template <class Network>
using MicrobatchesFor = std::conditional_t<pnn::uses_batch_statistics<Network>,
                                           pnn::Microbatches<8, pnn::StatisticsPerMicrobatch>, pnn::Microbatches<8>>;

// The type the program trains: the network itself, or the network under the chosen strategy.
template <class Network, class Stages>
using Trained =
#if PNN_STRATEGY_SELECTED(PNN_EXAMPLE_STRATEGY) == PNN_STRATEGY_serial
    OnDevice<Network>;
#elif PNN_STRATEGY_SELECTED(PNN_EXAMPLE_STRATEGY) == PNN_STRATEGY_data_parallel
    pnn::Distributed<OnDevice<Network>, pnn::DataParallel<Communicator>>;
#elif PNN_STRATEGY_SELECTED(PNN_EXAMPLE_STRATEGY) == PNN_STRATEGY_model_parallel
    pnn::Distributed<OnDevice<Network>, pnn::ModelParallel<Stages, Communicator>>;
#elif PNN_STRATEGY_SELECTED(PNN_EXAMPLE_STRATEGY) == PNN_STRATEGY_pipeline
    pnn::Distributed<OnDevice<Network>, pnn::Pipeline<Stages, MicrobatchesFor<Network>, pnn::OneFOneB, Communicator>>;
#else
#error "PNN_EXAMPLE_STRATEGY must be serial, data_parallel, model_parallel or pipeline"
#endif

template <class Model>
inline constexpr bool is_distributed = requires { typename Model::strategy_type; };

struct Defaults {
  pnn::index epochs = 1;
  pnn::index batch = 64;
  double learning_rate = 0.05;
  double momentum = 0.9;
  std::string optimizer = "sgd";
  std::string data_format = "mnist";  // what --data holds unless --data-format says otherwise
};

struct Flags {
  pnn::index epochs;
  pnn::index steps = 0;
  pnn::index batch;
  double learning_rate;
  double momentum;
  double weight_decay = 0;
  std::string optimizer{};
  int threads = 1;
  int workers = 2;
  std::uint64_t seed = 1;
  std::string data{};
  std::string data_format{};
  std::string save{};
  std::string metrics{};
  std::string checkpoint{};
  pnn::index checkpoint_every = 0;
  std::string resume{};
  double timeout = std::chrono::duration<double>(pnn::CommunicatorOptions{}.timeout).count();  // seconds
  bool quiet = false;
  std::string lr_schedule = "constant";
  pnn::index lr_step = 0;  // step schedule: steps between decays (0: not given)
  double lr_gamma = 0.1;
  double lr_floor = 0;
  pnn::index warmup_steps = 0;
  double clip_norm = 0;
  pnn::index accumulate = 1;
  pnn::index eval_every = 0;
};

// Validators whose messages say what is wanted (CLI11's ranges print the type's whole range). Every
// number must be finite: "nan" and "inf" parse as doubles, and NaN passes any comparison-free check.
inline CLI::Validator number_check(const char* description, bool (*accept)(double), const char* wanted) {
  return CLI::Validator(
      [accept, wanted](std::string& value) {
        double number = 0;
        try {
          std::size_t used = 0;
          number = std::stod(value, &used);
          if (used != value.size()) throw std::invalid_argument(value);
        } catch (const std::exception&) {
          return std::string("must be a number, got ") + value;
        }
        if (!std::isfinite(number) || !accept(number)) return std::string(wanted) + ", got " + value;
        return std::string();
      },
      description);
}
inline const CLI::Validator positive = number_check(
    "> 0", [](double x) { return x > 0; }, "must be positive");
inline const CLI::Validator non_negative = number_check(
    ">= 0", [](double x) { return x >= 0; }, "must not be negative");
inline const CLI::Validator below_one = number_check(
    "in [0, 1)", [](double x) { return x >= 0 && x < 1; }, "must be in [0, 1)");

// A communicator's timeout: at least a millisecond (its unit), finite, and small enough for the clock's
// arithmetic (steady_clock counts nanoseconds in 64 bits).
inline const CLI::Validator timeout_seconds = number_check(
    "seconds", [](double x) { return x >= 0.001 && x <= 1e9; }, "must be between 0.001 and 1e9 seconds");

inline void add_flags(CLI::App& app, Flags& flags) {
  app.add_option("--epochs", flags.epochs, "Passes over the training set")->check(positive)->capture_default_str();
  app.add_option("--steps", flags.steps, "Stop after this many optimiser steps (0: no limit)")
      ->check(non_negative)
      ->capture_default_str();
  app.add_option("--batch", flags.batch, "Samples per optimiser step")->check(positive)->capture_default_str();
  app.add_option("--lr", flags.learning_rate, "Learning rate")->check(positive)->capture_default_str();
  app.add_option("--momentum", flags.momentum, "Momentum (sgd, nesterov, lars)")
      ->check(below_one)
      ->capture_default_str();
  app.add_option("--weight-decay", flags.weight_decay, "Weight decay")->check(non_negative)->capture_default_str();
  app.add_option("--optimizer", flags.optimizer, "sgd, nesterov, adam or lars")
      ->check(CLI::IsMember({"sgd", "nesterov", "adam", "lars"}))
      ->capture_default_str();
  app.add_option("--threads", flags.threads, "Threads for matrix products (per worker)")
      ->check(positive)
      ->capture_default_str();
  app.add_option("--workers", flags.workers,
                 "Ranks of a parallel strategy in this process (with MPI builds, mpirun -np sets them instead)")
      ->check(positive)
      ->capture_default_str();
  app.add_option("--seed", flags.seed, "Seed of every random choice (initialisation, shuffling, dropout)")
      ->check(non_negative)  // CLI11 would wrap "-1" around to 2^64 - 1
      ->capture_default_str();
  app.add_option("--data", flags.data,
                 "Folder with the data: the four MNIST-format IDX files (.gz or raw), or CIFAR-10's binary files "
                 "with --data-format cifar10; default: $PNN_DATA, else Debian's Fashion-MNIST");
  app.add_option("--data-format", flags.data_format,
                 "What --data holds: mnist (train-images-idx3-ubyte, ...) or cifar10 (data_batch_1.bin ... "
                 "data_batch_5.bin, test_batch.bin)")
      ->check(CLI::IsMember({"mnist", "cifar10"}))
      ->capture_default_str();
  app.add_option("--save", flags.save, "Write the trained weights to this safetensors file");
  app.add_option("--metrics", flags.metrics, "Write one JSON object per epoch to this file");
  auto* checkpoint = app.add_option("--checkpoint", flags.checkpoint,
                                    "Write a checkpoint (weights, optimiser state, position in the data) to this "
                                    "safetensors file when training ends");
  app.add_option("--checkpoint-every", flags.checkpoint_every,
                 "Also write the checkpoint every N optimiser steps (needs --checkpoint)")
      ->check(positive)
      ->needs(checkpoint);
  app.add_option("--resume", flags.resume,
                 "Continue the run that wrote this checkpoint exactly (--steps and --epochs count its steps; "
                 "give the same --seed and --batch)")
      ->check(CLI::ExistingFile);
  app.add_option("--timeout", flags.timeout,
                 "Seconds a rank of a parallel strategy waits for the others at a collective or message before "
                 "the run ends with an error naming the ranks that did not arrive")
      ->check(timeout_seconds)
      ->capture_default_str();
  app.add_flag("--quiet", flags.quiet, "Print only the final result");
  app.add_option("--lr-schedule", flags.lr_schedule,
                 "Learning rate over the steps: constant, step (x --lr-gamma every --lr-step steps) or cosine "
                 "(to --lr-floor at the run's last step)")
      ->check(CLI::IsMember({"constant", "step", "cosine"}))
      ->capture_default_str();
  app.add_option("--lr-step", flags.lr_step, "Steps between two decays of --lr-schedule step")->check(positive);
  app.add_option("--lr-gamma", flags.lr_gamma, "Factor of each decay of --lr-schedule step")
      ->check(number_check(
          "in (0, 1]", [](double x) { return x > 0 && x <= 1; }, "must be in (0, 1]"))
      ->capture_default_str();
  app.add_option("--lr-floor", flags.lr_floor, "Final learning rate of --lr-schedule cosine (at most --lr)")
      ->check(non_negative)
      ->capture_default_str();
  app.add_option("--warmup-steps", flags.warmup_steps,
                 "Raise the learning rate linearly over this many steps first, then follow --lr-schedule")
      ->check(non_negative)
      ->capture_default_str();
  app.add_option("--clip-norm", flags.clip_norm, "Clip the gradient to this global L2 norm (0: no clipping)")
      ->check(non_negative)
      ->capture_default_str();
  app.add_option("--accumulate", flags.accumulate,
                 "Batches per optimiser step: their gradients add up as one batch of --accumulate x --batch "
                 "samples would")
      ->check(positive)
      ->capture_default_str();
  app.add_option("--eval-every", flags.eval_every,
                 "Also evaluate on the test set every N optimiser steps (0: per epoch)")
      ->check(non_negative)
      ->capture_default_str();
}

// The checks between flags that CLI11 cannot express; the message names the flag, as a parse error does.
inline std::string schedule_flags_error(const CLI::App& app, const Flags& flags) {
  if (flags.lr_schedule != "step" && (app.count("--lr-step") > 0 || app.count("--lr-gamma") > 0))
    return "--lr-step and --lr-gamma need --lr-schedule step";
  if (flags.lr_schedule == "step" && flags.lr_step == 0) return "--lr-schedule step needs --lr-step N";
  if (flags.lr_schedule != "cosine" && app.count("--lr-floor") > 0) return "--lr-floor needs --lr-schedule cosine";
  if (flags.lr_floor > flags.learning_rate) return "--lr-floor: must not be above --lr";
  return "";
}

// --data's default is Fashion-MNIST's directory, which holds no CIFAR-10.
inline std::string data_flags_error(const Flags& flags) {
  const char* from_environment = std::getenv("PNN_DATA");
  if (flags.data_format == "cifar10" && flags.data.empty() && !(from_environment && *from_environment))
    return "--data-format cifar10 needs --data DIR (or PNN_DATA): the folder cifar-10-batches-bin that "
           "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz unpacks to";
  return "";
}

inline pnn::TrainTestData load_data(const std::string& format, const std::filesystem::path& directory) {
  if (format == "cifar10") return pnn::load_cifar10(directory);
  return pnn::load_mnist_format(directory);
}

// Why `data` cannot train `Network` (empty if it can): a three-dimensional input takes samples of exactly its
// shape; a flat one (the MLP's Input<784>) any samples with as many features.
template <class Network>
std::string data_shape_error(const pnn::Dataset& data, const std::filesystem::path& directory) {
  using In = typename Network::input_shape;
  bool fits = false;
  if constexpr (In::rank == 3) fits = data.sample_shape == In::dims;
  else fits = data.features() == In::size;
  if (fits) return "";
  return "the data in " + directory.string() + " has samples of shape " + pnn::format_extents<3>(data.sample_shape) +
         " but this program's model takes " + pnn::format_shape<In>() +
         ": train_resnet_cifar10 trains on CIFAR-10's (3, 32, 32) images, train_mlp, train_cnn and train_resnet "
         "on MNIST-format (1, 28, 28) ones";
}

// The schedule the flags ask for; a cosine ends at the run's last step (`total_steps`).
inline pnn::LearningRateSchedule schedule_from_flags(const Flags& flags, pnn::index total_steps) {
  pnn::LearningRateSchedule schedule{.warmup_steps = flags.warmup_steps};
  if (flags.lr_schedule == "step") schedule.decay = pnn::StepDecay{.every = flags.lr_step, .gamma = flags.lr_gamma};
  if (flags.lr_schedule == "cosine")
    schedule.decay =
        pnn::CosineDecay{.steps = std::max<pnn::index>(1, total_steps - flags.warmup_steps), .floor = flags.lr_floor};
  return schedule;
}

inline void use_threads(int threads) {
  Eigen::setNbThreads(threads);
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
}

// Calls train(optimizer) with the optimiser the flags choose, for parameters of type T on device D.
template <class T, class D, class Train>
void with_optimizer(const Flags& flags, Train&& train) {
  if (flags.optimizer == "adam") {
    pnn::Optimizer<pnn::Adam, T, D> optimizer(
        {.learning_rate = flags.learning_rate, .weight_decay = flags.weight_decay});
    train(optimizer);
  } else if (flags.optimizer == "lars") {
    pnn::Optimizer<pnn::LARS, T, D> optimizer(
        {.learning_rate = flags.learning_rate, .momentum = flags.momentum, .weight_decay = flags.weight_decay});
    train(optimizer);
  } else {
    pnn::Optimizer<pnn::SGD, T, D> optimizer({.learning_rate = flags.learning_rate,
                                              .momentum = flags.momentum,
                                              .weight_decay = flags.weight_decay,
                                              .nesterov = flags.optimizer == "nesterov"});
    train(optimizer);
  }
}

template <class Network, class Stages>
int run_training_program(int argc, char** argv, const std::string& description, const Defaults& defaults) {
  using Model = Trained<Network, Stages>;
  CLI::App app{description};
  Flags flags{.epochs = defaults.epochs,
              .batch = defaults.batch,
              .learning_rate = defaults.learning_rate,
              .momentum = defaults.momentum,
              .optimizer = defaults.optimizer,
              .data_format = defaults.data_format};
  add_flags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return app.exit(error);  // --help
    std::cerr << "error: " << error.what() << "\n";          // one line, and the usual usage-error code
    return 2;
  }
  for (const std::string& error : {schedule_flags_error(app, flags), data_flags_error(flags)}) {
    if (error.empty()) continue;
    std::cerr << "error: " << error << "\n";
    return 2;
  }

  try {
    use_threads(flags.threads);
#if defined(PNN_EXAMPLE_CUDA)
    std::string no_device;
    PNN_CHECK(pnn::cuda_available(&no_device), pnn::CudaError,
              "this program trains on the GPU, but there is no CUDA "
              "device: ",
              no_device);
#endif
    auto model = [&] {
      if constexpr (is_distributed<Model>) {
        const auto timeout =
            std::chrono::round<std::chrono::milliseconds>(std::chrono::duration<double>(flags.timeout));
        return Model(flags.seed, {.ranks = flags.workers, .communicator = {.timeout = timeout}});
      } else {
        return Model(flags.seed);
      }
    }();
    bool primary = true;
    std::string strategy = "serial";
    if constexpr (is_distributed<Model>) {
      primary = model.is_primary();
      strategy = std::string(Model::strategy_type::name) + ", " + std::to_string(model.ranks()) + " ranks (" +
                 Communicator::name() + ")";
    }
    const bool verbose = primary && !flags.quiet;
    const auto directory = flags.data.empty() ? pnn::default_data_directory() : std::filesystem::path(flags.data);
    if (verbose) std::cout << "loading " << directory.string() << "\n";
    const pnn::TrainTestData data = load_data(flags.data_format, directory);
    if (const std::string error = data_shape_error<Network>(data.train, directory); !error.empty())
      throw pnn::ArgumentError(error);
    if (verbose) {
#if defined(PNN_EXAMPLE_CUDA)
      std::cout << pnn::cuda_description() << "\n";  // the GPU the model (rank 0's, for a strategy) runs on
#endif
      std::cout << description << ": " << model.parameter_count() << " parameters, " << strategy << ", "
                << flags.threads << " thread(s) per rank, " << flags.optimizer << " lr " << flags.learning_rate
                << ", batch " << flags.batch << "\n"
                << Network::summary();
    }
    pnn::FitOptions options{.epochs = flags.epochs,
                            .max_steps = flags.steps,
                            .batch_size = flags.batch,
                            .seed = flags.seed,
                            .metrics_path = flags.metrics,
                            .progress = flags.quiet ? nullptr : &std::cout,
                            .checkpoint_path = flags.checkpoint,
                            .checkpoint_every = flags.checkpoint_every,
                            .resume_from = flags.resume,
                            .accumulate = flags.accumulate,
                            .eval_every = flags.eval_every};
    const pnn::index batches = (data.train.size() + flags.batch - 1) / flags.batch;
    const pnn::index total_steps =
        flags.steps > 0 ? flags.steps : flags.epochs * ((batches + flags.accumulate - 1) / flags.accumulate);
    options.schedule = schedule_from_flags(flags, total_steps);
    if (verbose && (!options.schedule.constant() || flags.clip_norm > 0 || flags.accumulate > 1))
      std::cout << "learning rate: " << options.schedule.describe() << "; clip norm " << flags.clip_norm << "; "
                << flags.accumulate << " batch(es) per step\n";
    std::vector<pnn::EpochMetrics> history;
    with_optimizer<typename Network::value_type, Device>(flags, [&](auto& optimizer) {
      optimizer.clip_norm = flags.clip_norm;
      history = pnn::fit(model, optimizer, data.train, &data.test, options);
    });
    if (primary && !history.empty())
      std::cout << "test accuracy " << 100 * history.back().test_accuracy << "% after " << history.back().steps
                << " steps\n";
    if (!flags.save.empty()) {
      save(model, flags.save);
      if (verbose) std::cout << "saved " << flags.save << "\n";
    }
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace examples
