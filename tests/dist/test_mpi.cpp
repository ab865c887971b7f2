// The Mpi communicator and every strategy over it, run under `mpirun -np 2` and `mpirun -np 4`:
// each process is one rank and checks its own results against serial training done locally.
#include <pnn/dist/mpi.hpp>

#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "canonical_inputs.hpp"
#include "equivalence.hpp"
#include "support/random_dataset.hpp"

using namespace pnn;
using testing::check_equivalence;
using testing::Expect;

namespace {
using Mlp = Sequential<Input<12>, Dense<10>, Tanh, Dense<8>, ReLU, Dense<4>>;  // 5 layers
using DropoutMlp = Sequential<Input<12>, Dense<10>, Dropout<30>, Tanh, Dense<4>>;
using Cnn = Sequential<Input<1, 6, 2>, Conv2D<4, 3, Pad<1>>, ReLU, MaxPool2D<2>, Flatten, Dense<8>, ReLU, Dense<4>>;
using ResNet = Sequential<Input<1, 6, 2>, Conv2D<4, 3, Pad<1>>, BatchNorm<>, ReLU,
                          Residual<Conv2D<4, 3, Pad<1>>, BatchNorm<>, ReLU, Conv2D<4, 3, Pad<1>>, BatchNorm<>>, ReLU,
                          Flatten, Dense<4>>;

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

// Run at -np 2 and 4 (recursive halving) and -np 3 and 6 (gather, sum, send back): every rank's result is the
// binary-counter tree over all ranks' inputs, bit for bit; counts below, at and above the rank count,
// odd counts (halves of unequal size) and messages large enough for MPI's rendezvous protocol included.
TEST_CASE("mpi.all_reduce_canonical_equals_the_reference_tree_bit_for_bit") {
  Mpi comm({.check_collective_order = true});
  const int p = comm.size(), r = comm.rank();
  auto inputs = [&]<class T>(std::type_identity<T>, pnn::index count) {
    Tensor<T, 1> data(Extents<1>{count});
    const std::vector<T> values = testing::canonical_inputs<T>(r, count);
    for (pnn::index i = 0; i < count; ++i) data[i] = values[static_cast<std::size_t>(i)];
    return data;
  };
  for (pnn::index count : {1, 3, 37, 1000, 100001}) {
    CAPTURE(count);
    const auto reference_f = testing::canonical_reference<float>(p, count);
    const auto reference_d = testing::canonical_reference<double>(p, count);
    if (p >= 4)
      CHECK_FALSE(testing::same_bits(testing::canonical_reference<float>(p, count, true), reference_f.data()));
    auto sync_f = inputs(std::type_identity<float>{}, count);
    auto sync_d = inputs(std::type_identity<double>{}, count);
    comm.all_reduce_canonical(sync_f.view());
    comm.all_reduce_canonical(sync_d.view());
    CHECK(testing::same_bits(reference_f, sync_f.data()));
    CHECK(testing::same_bits(reference_d, sync_d.data()));
    // Three in flight, advanced by ready() as the data-parallel strategy does, waited for in reverse.
    auto async_f = inputs(std::type_identity<float>{}, count);
    auto async_d = inputs(std::type_identity<double>{}, count);
    auto again_f = inputs(std::type_identity<float>{}, count);
    std::vector<Mpi::Request> requests;
    requests.push_back(comm.all_reduce_canonical_async(async_f.view()));
    requests.push_back(comm.all_reduce_canonical_async(async_d.view()));
    requests.push_back(comm.all_reduce_canonical_async(again_f.view()));
    for (int poll = 0; poll < 100; ++poll)
      for (auto& request : requests) request.ready();
    for (auto request = requests.rbegin(); request != requests.rend(); ++request) request->wait();
    CHECK(testing::same_bits(reference_f, async_f.data()));
    CHECK(testing::same_bits(reference_d, async_d.data()));
    CHECK(testing::same_bits(reference_f, again_f.data()));
  }
}

// The last rank never calls all_reduce_canonical: the others' waits end at the timeout with an error
// (on a communicator of the test's own, so the unanswered messages stay there).
TEST_CASE("mpi.all_reduce_canonical_a_rank_that_never_arrives") {
  Mpi comm({.timeout = std::chrono::milliseconds(500)});
  Tensor<float, 1> data(Extents<1>{2});
  std::string message;
  const auto start = std::chrono::steady_clock::now();
  try {
    if (comm.rank() != comm.size() - 1) comm.all_reduce_canonical(data.view());
  } catch (const CommunicationError& e) {
    message = e.what();
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  if (comm.rank() == comm.size() - 1) CHECK(message.empty());
  else CHECK(message.find("all_reduce_canonical(2 floats) did not complete within 500 ms") != std::string::npos);
  Mpi().barrier();
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

// Bit for bit at -np 2 and 4 (both divide the batch's 8 chunks): weights, running statistics and losses.
TEST_CASE("mpi.data_parallel_equals_serial_training") {
  check_equivalence<Mlp, DataParallel<Mpi>>({});
  check_equivalence<Mlp, DataParallel<Mpi>>({.bucket_bytes = 1});
  check_equivalence<Mlp, DataParallel<Mpi>>({}, Expect::bitwise, /*batch=*/3, /*steps=*/3);  // ranks without samples
  // Each process drops, for its samples, the units serial training drops for them.
  check_equivalence<DropoutMlp, DataParallel<Mpi>>({});
  // Convolutions, max-pooling, BatchNorm synchronised over the processes, Adam.
  check_equivalence<Cnn, DataParallel<Mpi>>({}, Expect::bitwise, 12, 10, 36);
  check_equivalence<ResNet, DataParallel<Mpi>>({}, Expect::bitwise, 12, 10, 36);
  check_equivalence<ResNet, DataParallel<Mpi>, Adam>({});
}

TEST_CASE("mpi.model_parallel_and_pipeline_equal_serial_training") {
  if (world_size() == 2) {
    check_equivalence<Mlp, ModelParallel<Split<3>, Mpi>>({});
    for (auto check : {&check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<4>, GPipe, Mpi>>,
                       &check_equivalence<Mlp, Pipeline<Split<3>, Microbatches<8>, OneFOneB, Mpi>>})
      check({}, Expect::bitwise, 10, 4, 37);
  } else if (world_size() == 4) {
    check_equivalence<Mlp, ModelParallel<Split<1, 2, 4>, Mpi>>({});
    for (auto check : {&check_equivalence<Mlp, Pipeline<Split<1, 2, 4>, Microbatches<4>, GPipe, Mpi>>,
                       &check_equivalence<Mlp, Pipeline<Split<1, 2, 4>, Microbatches<8>, OneFOneB, Mpi>>})
      check({}, Expect::bitwise, 10, 4, 37);
  } else {
    MESSAGE("pipelines are checked at 2 and 4 ranks; this run has " << world_size());
  }
}

namespace {
std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A checkpoint written by Strategy over this world's processes is the serial model's: loaded into a
// serial model (on every process) and saved again it has the same bytes, and the same strategy resumed
// from it trains on exactly as if it had not stopped.
template <class Strategy>
void check_checkpoint(const std::string& name) {
  const auto data = testing::synthetic_data(40, 12, 4);
  Mpi comm;
  const auto path = std::filesystem::path(PNN_BUILD_DIR) /
                    ("mpi-checkpoint-" + name + "-np" + std::to_string(comm.size()) + ".safetensors");
  const Adam adam{.learning_rate = 0.01};
  Distributed<DropoutMlp, Strategy> straight(11);
  Optimizer<Adam> straight_optimizer(adam);
  testing::train(straight, straight_optimizer, data, 8, 10);  // batches 0..4, then 0..4 again
  {
    Distributed<DropoutMlp, Strategy> first(11);
    Optimizer<Adam> optimizer(adam);
    testing::train(first, optimizer, data, 8, 5);
    save_checkpoint(first, optimizer, {.step = 5}, path);
  }
  comm.barrier();  // rank 0 has written the file
  DropoutMlp serial(11);
  Optimizer<Adam> serial_optimizer(adam);
  CHECK(load_checkpoint(serial, serial_optimizer, path).step == 5);
  const auto again = std::filesystem::path(PNN_BUILD_DIR) /
                     ("mpi-checkpoint-" + name + "-again-rank" + std::to_string(comm.rank()) + ".safetensors");
  save_checkpoint(serial, serial_optimizer, {.step = 5}, again);
  CHECK(file_text(again) == file_text(path));

  Distributed<DropoutMlp, Strategy> resumed(11);
  Optimizer<Adam> optimizer(adam);
  load_checkpoint(resumed, optimizer, path);
  testing::train(resumed, optimizer, data, 8, 5);  // batches 0..4 again: steps 5..9 of the straight run
  const DropoutMlp resumed_whole = resumed.gathered(), straight_whole = straight.gathered();
  const auto a = resumed_whole.parameter_values(), b = straight_whole.parameter_values();
  CHECK(std::vector<float>(a.data(), a.data() + a.size()) == std::vector<float>(b.data(), b.data() + b.size()));
  comm.barrier();
  std::filesystem::remove(again);
}
}  // namespace

TEST_CASE("mpi.checkpoints_are_the_serial_models_and_resume_exactly") {
  check_checkpoint<DataParallel<Mpi>>("data-parallel");
  if (world_size() == 2) check_checkpoint<Pipeline<Split<2>, Microbatches<2>, GPipe, Mpi>>("pipeline");
  if (world_size() == 4) check_checkpoint<Pipeline<Split<1, 2, 3>, Microbatches<2>, GPipe, Mpi>>("pipeline");
}

namespace {
// A distributed model that records the rows fit() and evaluate() hand it: the rows this process made.
template <class Inner>
struct RowRecorder {
  using value_type = float;
  using device = cpu;
  using output_shape = typename Inner::output_shape;

  Inner& inner;
  std::vector<std::array<pnn::index, 3>> passes{};       // (rows of the batch, input rows, target rows)
  std::vector<std::array<pnn::index, 2>> predictions{};  // (rows of the batch, input rows)

  bool is_primary() const { return inner.is_primary(); }
  BatchRows rows_held(pnn::index batch) const { return inner.rows_held(batch); }
  TensorView<const float, 2> predict(TensorView<const float, 2> inputs) { return inner.predict(inputs); }
  TensorView<const float, 2> predict_held(TensorView<const float, 2> inputs, pnn::index batch) {
    predictions.push_back({batch, inputs.dim(0)});
    return inner.predict_held(inputs, batch);
  }
  void sum_over_processes(TensorView<double, 1> values) { inner.sum_over_processes(values); }

  template <class LossFunction, class Rule>
  friend float train_step(RowRecorder& model, TensorView<const float, 2> inputs,
                          typename LossFunction::template target_type<float, cpu> targets, Optimizer<Rule>& optimizer,
                          const LossFunction& loss, BatchPart part) {
    model.passes.push_back({part.count, inputs.dim(0), targets.dim(0)});
    return train_step(model.inner, inputs, targets, optimizer, loss, part);
  }
  template <class Rule>
  friend void save_checkpoint(RowRecorder& model, const Optimizer<Rule>& optimizer, const TrainingPosition& position,
                              const std::filesystem::path& path) {
    save_checkpoint(model.inner, optimizer, position, path);
  }
  template <class Rule>
  friend TrainingPosition load_checkpoint(RowRecorder& model, Optimizer<Rule>& optimizer,
                                          const std::filesystem::path& path) {
    return load_checkpoint(model.inner, optimizer, path);
  }
};

// The rows of a batch of `batch` rows that rank r of p makes, written out for each strategy here (not
// asked of the code under test): a data-parallel share, or a pipeline stage's inputs (the first) and
// targets (the last).
using RowsExpected = std::array<pnn::index, 2> (*)(pnn::index batch, int r, int p);
std::array<pnn::index, 2> data_parallel_rows(pnn::index batch, int r, int p) {
  const pnn::index share = batch * (r + 1) / p - batch * r / p;
  return {share, share};
}
std::array<pnn::index, 2> pipeline_rows(pnn::index batch, int r, int p) {
  return {r == 0 ? batch : 0, r == p - 1 ? batch : 0};
}

// fit() on a distributed model, each process making only its rows of every batch (and of the test set):
// the weights, every epoch's losses and accuracy, and a later evaluate() are serial training's, bit for bit.
template <class Strategy>
void check_rows_per_process(RowsExpected expected) {
  Mpi comm;
  const int p = comm.size(), r = comm.rank();
  // 35 training samples in batches of 8 (the last has 3; accumulating 2 per step), 21 test samples in
  // evaluation batches of 6 (the last has 3), then of 4 (the last has 1): at 4 ranks, shares of unequal
  // sizes and ranks without rows.
  const Dataset train = testing::random_dataset(35, {1, 1, 12}, 4, 5),
                test = testing::random_dataset(21, {1, 1, 12}, 4, 6);
  const FitOptions options{
      .epochs = 2, .batch_size = 8, .seed = 9, .evaluation_batch = 6, .progress = nullptr, .accumulate = 2};
  const SGD rule{.learning_rate = 0.1, .momentum = 0.9};
  Mlp serial(11);
  Optimizer<SGD> serial_optimizer(rule);
  const auto serial_history = fit(serial, serial_optimizer, train, &test, options);
  const Evaluation serial_evaluation = evaluate(serial, test, 4);

  Distributed<Mlp, Strategy> model(11);
  RowRecorder<Distributed<Mlp, Strategy>> recorder{model};
  Optimizer<SGD> optimizer(rule);
  const auto history = fit(recorder, optimizer, train, &test, options);
  const Evaluation evaluation = evaluate(recorder, test, 4);

  // (a) Each pass and each evaluation batch held this process's rows only, and the processes' rows add up
  // to the batches' (none made twice).
  Tensor<double, 1> rows_made(Extents<1>{2});
  REQUIRE(recorder.passes.size() == 10);  // 5 batches an epoch
  for (const auto& [batch, inputs, targets] : recorder.passes) {
    CHECK(inputs == expected(batch, r, p)[0]);
    CHECK(targets == expected(batch, r, p)[1]);
    rows_made[0] += static_cast<double>(inputs), rows_made[1] += static_cast<double>(targets);
  }
  REQUIRE(recorder.predictions.size() == 2 * 4 + 6);  // 4 evaluation batches an epoch, then evaluate()'s 6
  for (const auto& [batch, inputs] : recorder.predictions) CHECK(inputs == expected(batch, r, p)[0]);
  comm.all_reduce(rows_made.view());
  CHECK(rows_made[0] == 2 * 35);
  CHECK(rows_made[1] == 2 * 35);

  // (b) Serial training's bits: weights, losses, the evaluations after each epoch and the one after training.
  testing::check_same_values(serial, model.gathered());
  REQUIRE(history.size() == serial_history.size());
  for (std::size_t e = 0; e < history.size(); ++e) {
    CHECK(history[e].train_loss == serial_history[e].train_loss);
    CHECK(history[e].test_loss == serial_history[e].test_loss);
    CHECK(history[e].test_accuracy == serial_history[e].test_accuracy);
  }
  CHECK(evaluation.loss == serial_evaluation.loss);
  CHECK(evaluation.accuracy == serial_evaluation.accuracy);
  CHECK(evaluation.samples == serial_evaluation.samples);
}
}  // namespace

TEST_CASE("mpi.each_process_makes_only_its_rows_and_trains_and_evaluates_as_serial") {
  check_rows_per_process<DataParallel<Mpi>>(&data_parallel_rows);
  if (world_size() == 2) check_rows_per_process<Pipeline<Split<3>, Microbatches<4>, GPipe, Mpi>>(&pipeline_rows);
  if (world_size() == 4) check_rows_per_process<Pipeline<Split<1, 2, 4>, Microbatches<4>, GPipe, Mpi>>(&pipeline_rows);
}
