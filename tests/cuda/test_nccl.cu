// The Nccl communicator on the GPUs present: collectives (a group of one on a single GPU), point to
// point between two GPUs, and the strategies over NCCL against serial training on the GPU.
#include <pnn/cuda/nccl.cuh>
#include <string>
#include <thread>
#include <vector>

#include "cuda_equivalence.cuh"
#include "dist/statistics.hpp"

using namespace pnn;
using testing::check_cuda_equivalence;
using testing::needs_gpu;
using testing::needs_gpus;
using testing::to_device;
using testing::to_host;

namespace {

// Runs body(communicator) on one thread per rank, each with its GPU current; returns each rank's error
// message (empty when it succeeded). doctest's assertions are not thread-safe, so bodies report through
// their return value and the checks run afterwards on this thread. A rank that fails aborts the group:
// its peers, waiting for an operation it will never join, stop at once with its message instead of
// after the group's timeout (two minutes).
template <class Body>
std::vector<std::string> on_every_rank(std::vector<Nccl>& ranks, Body body) {
  std::vector<std::string> errors(ranks.size());
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < ranks.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        Nccl::enter_rank(static_cast<int>(r));
        errors[r] = body(ranks[r]);
      } catch (const std::exception& error) {
        errors[r] = error.what();
      }
      if (!errors[r].empty()) ranks[r].abort(detail::concat("rank ", r, " failed: ", errors[r]));
    });
  for (auto& thread : threads) thread.join();
  return errors;
}

// Rank r's vector: r + 1 + i / 1000 at element i.
Tensor<float, 1> rank_values(int rank, pnn::index n) {
  Tensor<float, 1> values(Extents<1>{n});
  for (pnn::index i = 0; i < n; ++i) values[i] = static_cast<float>(rank + 1) + static_cast<float>(i) / 1000;
  return values;
}

std::string mismatch(const char* what, pnn::index i, double expected, double actual) {
  return detail::concat(what, "[", i, "] is ", actual, ", expected ", expected);
}

int group_size() { return std::min(testing::gpu_count(), 8); }

}  // namespace

TEST_CASE("nccl.errors_name_the_failing_call") {
  // No GPU needed.
  CHECK_THROWS_WITH_AS(cuda_detail::check(ncclInvalidArgument, "ncclAllReduce(data, ...)", "f.cu", 3),
                       doctest::Contains("ncclAllReduce(data, ...) failed: "), CudaError);
  // A group needs one GPU per rank; the message says how many this process sees.
  const int too_many = testing::gpu_count() + 1;
  CHECK_THROWS_WITH_AS(Nccl::group(too_many), doctest::Contains("GPUs (NCCL runs one rank per GPU)"), ArgumentError);
}

TEST_CASE("nccl.collectives" * needs_gpu()) {
  const int size = group_size();
  CAPTURE(size);
  auto ranks = Nccl::group(size);
  constexpr pnn::index n = 100003;  // not a multiple of anything NCCL chunks by
  const auto errors = on_every_rank(ranks, [&](Nccl& nccl) -> std::string {
    const int r = nccl.rank();
    if (r != static_cast<int>(&nccl - ranks.data())) return "rank numbers do not follow the group's order";
    if (nccl.cuda_device() != r)
      return "rank " + std::to_string(r) + " is on GPU " + std::to_string(nccl.cuda_device());
    double sum_of_ranks = 0, weighted = 0, weights = 0;
    for (int k = 0; k < size; ++k) {
      sum_of_ranks += k + 1;
      weighted += (k + 1.0) * (k + 1.0);
      weights += k + 1.0;
    }
    // Sum.
    auto data = to_device(rank_values(r, n));
    nccl.all_reduce(data.view());
    auto host = to_host(data);
    for (pnn::index i = 0; i < n; i += 997) {
      const double expected = sum_of_ranks + static_cast<double>(size) * static_cast<double>(i) / 1000;
      if (std::abs(host[i] - expected) > 1e-4 * expected) return mismatch("all_reduce", i, expected, host[i]);
    }
    // Weighted mean, weight r + 1: sum((r + 1) x_r) / sum(r + 1).
    data = to_device(rank_values(r, n));
    all_reduce_mean(nccl, data.view(), r + 1.0);
    host = to_host(data);
    for (pnn::index i = 0; i < n; i += 997) {
      const double expected = weighted / weights + static_cast<double>(i) / 1000;
      if (std::abs(host[i] - expected) > 1e-4 * expected) return mismatch("all_reduce_mean", i, expected, host[i]);
    }
    // Asynchronous sum, waited for on the compute stream.
    data = to_device(rank_values(r, n));
    auto request = nccl.all_reduce_async(data.view());
    request.wait();
    data.view() = data * 2.0f;  // ordered after the reduction
    host = to_host(data);
    if (std::abs(host[0] - 2 * sum_of_ranks) > 1e-4 * sum_of_ranks)
      return mismatch("all_reduce_async", 0, 2 * sum_of_ranks, host[0]);
    // The canonical sum: on GPUs NCCL chooses the order, so it is checked as a sum, synchronous, asynchronous
    // and of host data.
    data = to_device(rank_values(r, n));
    nccl.all_reduce_canonical(data.view());
    request = nccl.all_reduce_canonical_async(data.view());
    request.wait();
    host = to_host(data);
    if (std::abs(host[0] - size * sum_of_ranks) > 1e-4 * size * sum_of_ranks)
      return mismatch("all_reduce_canonical", 0, size * sum_of_ranks, host[0]);
    // Broadcast from the last rank, of device and of host data.
    data = to_device(rank_values(r, n));
    nccl.broadcast(data.view(), size - 1);
    host = to_host(data);
    if (host[n - 1] != rank_values(size - 1, n)[n - 1])
      return mismatch("broadcast", n - 1, rank_values(size - 1, n)[n - 1], host[n - 1]);
    Tensor<double, 1> small(Extents<1>{3});
    small[0] = r;
    small[1] = 1;
    small[2] = -r;
    nccl.all_reduce(small.view());
    if (small[1] != size) return mismatch("all_reduce of host data", 1, size, small[1]);
    nccl.all_reduce_canonical(small.view());
    if (small[1] != size * size) return mismatch("all_reduce_canonical of host data", 1, size * size, small[1]);
    small[0] = 10.0 * r;
    nccl.broadcast(small.view(), 0);
    if (small[0] != 0) return mismatch("broadcast of host data", 0, 0, small[0]);
    nccl.barrier();
    return {};
  });
  for (int r = 0; r < size; ++r)
    CHECK_MESSAGE(errors[static_cast<std::size_t>(r)].empty(),
                  "rank " << r << ": " << errors[static_cast<std::size_t>(r)]);
}

TEST_CASE("nccl.send_and_receive" * needs_gpus(2)) {
  auto ranks = Nccl::group(2);
  const auto errors = on_every_rank(ranks, [&](Nccl& nccl) -> std::string {
    constexpr pnn::index n = 4099;
    if (nccl.rank() == 0) {
      // Two messages up, then one comes back down: a pipeline's activations and gradients.
      const auto first = to_device(rank_values(0, n)), second = to_device(rank_values(5, 7));
      nccl.send(first.view(), 1, 10);
      nccl.send(second.view(), 1, 11);
      Tensor<float, 1, cuda> back(Extents<1>{n});
      nccl.receive(back.view(), 1, 12);
      const auto host = to_host(back);
      if (host[n - 1] != 2 * rank_values(0, n)[n - 1])
        return mismatch("message back", n - 1, 2 * rank_values(0, n)[n - 1], host[n - 1]);
    } else {
      Tensor<float, 1, cuda> first(Extents<1>{n}), second(Extents<1>{7});
      nccl.receive(first.view(), 0, 10);
      nccl.receive(second.view(), 0, 11);
      if (to_host(second)[6] != rank_values(5, 7)[6])
        return mismatch("second message", 6, rank_values(5, 7)[6], to_host(second)[6]);
      first.view() = first * 2.0f;
      nccl.send(testing::const_view(first), 0, 12);
    }
    return {};
  });
  CHECK_MESSAGE(errors[0].empty(), errors[0]);
  CHECK_MESSAGE(errors[1].empty(), errors[1]);
}

TEST_CASE("nccl.a_mismatched_message_is_an_error" * needs_gpus(2)) {
  // Empty messages: only their headers travel, so nothing is left waiting on a GPU once the receiver has
  // rejected the header (a data part would wait for its receive until the communicators are aborted, and
  // so would pnn's stream of that GPU, which every later test case uses).
  auto ranks = Nccl::group(2, {.timeout = std::chrono::milliseconds(20'000)});
  const auto errors = on_every_rank(ranks, [&](Nccl& nccl) -> std::string {
    if (nccl.rank() == 0) {
      const Tensor<float, 1, cuda> nothing(Extents<1>{0});
      nccl.send(nothing.view(), 1, 5);
    } else {
      Tensor<float, 1, cuda> nothing(Extents<1>{0});
      nccl.receive(nothing.view(), 0, 6);
    }
    return {};
  });
  CHECK_MESSAGE(errors[1].find("expected 0 floats with tag 6 from rank 0 but the next message holds 0 with tag 5") !=
                    std::string::npos,
                errors[1]);
}

TEST_CASE("nccl.data_parallel_equals_serial_training" * needs_gpu()) {
  const int rank_count = std::min(group_size(), 4);
  CAPTURE(rank_count);
  check_cuda_equivalence<DataParallel<Nccl>>({.ranks = rank_count});
  check_cuda_equivalence<DataParallel<Nccl>>({.ranks = rank_count, .bucket_bytes = 1});
}

TEST_CASE("nccl.model_parallel_and_pipelines_equal_serial_training" * needs_gpus(2)) {
  check_cuda_equivalence<ModelParallel<Split<2>, Nccl>>({.ranks = 2});
  check_cuda_equivalence<Pipeline<Split<3>, Microbatches<4>, GPipe, Nccl>>({.ranks = 2});
  check_cuda_equivalence<Pipeline<Split<3>, Microbatches<4>, OneFOneB, Nccl>>({.ranks = 2});
}

TEST_CASE("nccl.three_stage_pipeline_equals_serial_training" * needs_gpus(3)) {
  check_cuda_equivalence<Pipeline<Split<2, 4>, Microbatches<4>, OneFOneB, Nccl>>({.ranks = 3});
}

// Over NCCL the reductions run on their own stream: the statistics' events on the compute stream time
// how long it waited for them (exposed) and since the first bucket was handed over (communication), so
// the relations hold for the device's times too.
TEST_CASE("nccl.data_parallel_statistics_time_the_device" * needs_gpu()) {
  const auto data = testing::device_data(40, 12, 4);
  Optimizer<SGD, float, cuda> optimizer({.learning_rate = 0.1});
  const int rank_count = std::min(group_size(), 4);
  Distributed<testing::CudaMlp, DataParallel<Nccl>> model(1, {.ranks = rank_count, .bucket_bytes = 1});
  testing::train(model, optimizer, data, 10, 5);
  const auto statistics = model.statistics();
  REQUIRE(statistics.size() == static_cast<std::size_t>(rank_count));
  for (const StrategyStatistics& s : statistics) testing::check_data_parallel_statistics(s, 5, 1e-5);
}

TEST_CASE("nccl.pipeline_statistics_time_the_device" * needs_gpus(2)) {
  const auto data = testing::device_data(40, 12, 4);
  Optimizer<SGD, float, cuda> optimizer({.learning_rate = 0.1});
  Distributed<testing::CudaMlp, Pipeline<Split<3>, Microbatches<4>, OneFOneB, Nccl>> model(1, {.ranks = 2});
  testing::train(model, optimizer, data, 10, 5);
  for (const StrategyStatistics& s : model.statistics()) testing::check_pipeline_statistics(s, 5, 1e-5);
}
