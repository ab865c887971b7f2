// Data-parallel training over Mpi in which a rank fails, run under mpirun by the drivers in this folder:
//
//   mpi_failure label                first step: a label outside the classes on rank 1 (expect_failure.py, -np 2)
//   mpi_failure MODE SECONDS         -np 4, the communicator's timeout SECONDS; many small data-parallel steps
//                                    of an MLP (failure_matrix.py), where MODE is
//     train   no fault of its own: the driver kills or stops rank 2 (SIGKILL, SIGSTOP) from outside
//     pipeline  the same with a 4-stage pipeline (its ranks wait in messages and broadcasts)
//     sleep   rank 2 sleeps for an hour at step 100 before a collective of the program's own (stuck outside
//             pnn, while the others wait in MPI_Iallreduce, which MPI cannot cancel)
//     throw   at step 100 a label outside the classes lies in rank 2's rows: its loss throws
//     late    rank 2 sleeps for an hour before it makes its model (the others wait to set up theirs)
//
// Every rank prints "rank R pid P" first, and rank 0 "step S" before steps 100 and every 100 after,
// so the driver knows whom to signal and when.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <pnn/dist.hpp>
#include <pnn/dist/mpi.hpp>
#include <pnn/pnn.hpp>
#include <string>
#include <thread>
#include <unistd.h>

using namespace pnn;

namespace {

int first_step_fails() {
  using Net = Sequential<Input<4>, Dense<3>>;
  Distributed<Net, DataParallel<Mpi>> model(1);
  Optimizer<SGD> optimizer;
  Tensor<float, 2> inputs(4, 4);
  Tensor<std::int32_t, 1> labels(Extents<1>{4});
  labels[3] = 7;  // a label outside [0, 3): row 3 belongs to the last rank's share
  train_step(model, TensorView<const float, 2>(inputs), TensorView<const std::int32_t, 1>(labels), optimizer,
             SoftmaxCrossEntropy{});
  return 0;
}

using Net = Sequential<Input<16>, Dense<32>, Tanh, Dense<16>, Tanh, Dense<4>>;

template <class Strategy>
int train(const std::string& mode, double seconds) {
  constexpr pnn::index batch = 32, classes = 4, fault_step = 100, steps = 1'000'000;  // ends by the fault, long before
  constexpr int faulty_rank = 2;
  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
  if (mode == "late") {
    mpi_detail::Environment::ensure();
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    if (world_rank == faulty_rank) {
      std::printf("rank %d pid %d\nrank %d sleeps before joining\n", world_rank, static_cast<int>(getpid()),
                  world_rank);
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::hours(1));
    }
  }
  Distributed<Net, Strategy> model(1, {.communicator = {.timeout = timeout}});
  const int rank = model.rank();
  if (model.ranks() <= faulty_rank) {
    std::fprintf(stderr, "mpi_failure: run it with more than %d ranks\n", faulty_rank);
    return 2;
  }
  std::printf("rank %d pid %d\n", rank, static_cast<int>(getpid()));
  std::fflush(stdout);
  // The program's own communicator, as one that sums metrics would have: after each step it checks that
  // every rank is at the same step. Its failures end the job as Distributed's do.
  Mpi program_communicator({.timeout = timeout});
  Tensor<double, 1> steps_sum(Extents<1>{1});
  Optimizer<SGD> optimizer({.learning_rate = 0.01});
  Tensor<float, 2> inputs(batch, 16);
  Tensor<std::int32_t, 1> labels(Extents<1>{batch});
  Generator random(7);
  for (pnn::index step = 0; step < steps; ++step) {
    if (rank == 0 && step >= fault_step && step % 100 == 0) {
      std::printf("step %lld\n", static_cast<long long>(step));
      std::fflush(stdout);
    }
    for (pnn::index i = 0; i < inputs.size(); ++i)
      inputs.data()[i] = static_cast<float>(random.next() % 1000) / 500.0f - 1.0f;
    for (pnn::index i = 0; i < batch; ++i) labels[i] = static_cast<std::int32_t>(random.next() % classes);
    if (step == fault_step && mode == "throw") labels[batch_share(batch, faulty_rank, model.ranks()).begin] = 7;
    train_step(model, TensorView<const float, 2>(inputs), TensorView<const std::int32_t, 1>(labels), optimizer,
               SoftmaxCrossEntropy{});
    if (step == fault_step && mode == "sleep" && rank == faulty_rank) {
      std::printf("rank %d sleeps at step %lld\n", rank, static_cast<long long>(step));
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::hours(1));
    }
    steps_sum[0] = static_cast<double>(step);
    try {
      program_communicator.all_reduce(steps_sum.view());
      PNN_CHECK(steps_sum[0] == static_cast<double>(step * model.ranks()), CommunicationError,
                "the ranks are at different steps");
    } catch (const std::exception& error) {
      program_communicator.abort(detail::concat("rank ", rank, " failed in the step check: ", error.what()));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "label" && argc == 2) return first_step_fails();
  if ((mode == "train" || mode == "sleep" || mode == "throw" || mode == "late") && argc == 3)
    return train<DataParallel<Mpi>>(mode, std::atof(argv[2]));
  if (mode == "pipeline" && argc == 3)
    return train<Pipeline<Split<1, 3, 4>, Microbatches<4>, OneFOneB, Mpi>>(mode, std::atof(argv[2]));
  std::fprintf(stderr, "usage: mpi_failure label | mpi_failure train|pipeline|sleep|throw|late TIMEOUT_SECONDS\n");
  return 2;
}
