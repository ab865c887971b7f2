// The Mpi communicator and every strategy over it, run under `mpirun -np 2` and `mpirun -np 4`:
// each process is one rank and checks its own results against serial training done locally.
#include <pnn/dist/mpi.hpp>

#include "equivalence.hpp"

using namespace pnn;
using testing::check_equivalence;

namespace {
using Mlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 5 layers
using DropoutMlp = Sequential<Input<12>, Dense<10>, Dropout<30>, Tanh, Dense<4>>;

int world_size() {
  static const int size = [] {
    Mpi probe;
    return probe.size();
  }();
  return size;
}
}  // namespace

TEST_CASE("mpi.collectives_and_messages") {
  Mpi comm({.check_collective_order = true});
  const int p = comm.size(), r = comm.rank();
  Tensor<double, 1> data(Extents<1>{5});
  for (pnn::index i = 0; i < 5; ++i) data[i] = r * 10.0 + static_cast<double>(i);
  comm.all_reduce(data.view());
  CHECK(data[4] == doctest::Approx(10.0 * p * (p - 1) / 2 + 4.0 * p));
  Tensor<float, 1> mean(Extents<1>{1});
  mean[0] = static_cast<float>(r);
  all_reduce_mean(comm, mean.view(), r + 1.0);  // sum r (r + 1) / sum (r + 1)
  double numerator = 0, denominator = 0;
  for (int k = 0; k < p; ++k) numerator += k * (k + 1.0), denominator += k + 1.0;
  CHECK(mean[0] == doctest::Approx(numerator / denominator));
  Tensor<float, 1> value(Extents<1>{3});
  if (r == p - 1) value = value * 0.0f + 7.0f;
  comm.broadcast(value.view(), p - 1);
  CHECK(value[2] == 7.0f);
  Tensor<float, 1> out(Extents<1>{2}), in(Extents<1>{2});
  out[0] = static_cast<float>(r);
  comm.send(TensorView<const float, 1>(out), (r + 1) % p, 5);
  comm.receive(in.view(), (r + p - 1) % p, 5);
  CHECK(in[0] == static_cast<float>((r + p - 1) % p));
  auto pending = comm.all_reduce_async(out.view());
  pending.wait();
  CHECK(out[0] == doctest::Approx(p * (p - 1) / 2.0));
  comm.barrier();
}

TEST_CASE("mpi.collective_order_check_reports_the_first_mismatch") {
  Mpi comm({.check_collective_order = true});
  Tensor<float, 1> data(Extents<1>{4});
  std::string message;
  try {
    if (comm.rank() == 1) comm.broadcast(data.view(), 0);
    else comm.all_reduce(data.view());
  } catch (const CommunicationError& e) {
    message = e.what();
  }
  CHECK(message.find("collective mismatch at collective #") != std::string::npos);
  CHECK(message.find("rank 1 called broadcast(4 floats, root 0) but rank 0 called all_reduce(4 floats)") !=
        std::string::npos);
}

TEST_CASE("mpi.data_parallel_equals_serial_training") {
  check_equivalence<Mlp, DataParallel<Mpi>>({});
  check_equivalence<Mlp, DataParallel<Mpi>>({.bucket_bytes = 1});
  check_equivalence<Mlp, DataParallel<Mpi>>({}, /*batch=*/3, /*steps=*/3);  // ranks without samples at -np 4
  // Each process drops, for its samples, the units serial training drops for them.
  check_equivalence<DropoutMlp, DataParallel<Mpi>>({});
}

TEST_CASE("mpi.model_parallel_and_pipeline_equal_serial_training") {
  if (world_size() == 2) {
    check_equivalence<Mlp, ModelParallel<Split<3>, Mpi>>({});
    for (auto check : {&check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, GPipe, Mpi>>,
                       &check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<8>, OneFOneB, Mpi>>})
      check({}, 10, 4, 37);
  } else if (world_size() == 4) {
    check_equivalence<Mlp, ModelParallel<Split<1, 2, 4>, Mpi>>({});
    for (auto check : {&check_equivalence<Mlp, Pipeline<Split<1, 2, 4>, Microbatches<4>, GPipe, Mpi>>,
                       &check_equivalence<Mlp, Pipeline<Split<1, 2, 4>, Microbatches<8>, OneFOneB, Mpi>>})
      check({}, 10, 4, 37);
  } else {
    MESSAGE("pipelines are checked at 2 and 4 ranks; this run has " << world_size());
  }
}
