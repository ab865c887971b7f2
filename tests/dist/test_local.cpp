// The Local communicator: collectives, point to point, asynchronous reduction, and its failure modes.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <pnn/dist/local.hpp>
#include <thread>
#include <vector>

#include "local_ranks.hpp"

using namespace pnn;
using testing::run_ranks;
using namespace std::chrono_literals;

TEST_CASE("local.all_reduce_sums_in_rank_order") {
  for (int size : {1, 2, 3, 4}) {
    std::vector<std::vector<double>> results(static_cast<std::size_t>(size));
    run_ranks(size, [&](Local& comm) {
      Tensor<double, 1> data(Extents<1>{7});
      for (pnn::index i = 0; i < 7; ++i) data[i] = comm.rank() * 100 + i;
      comm.all_reduce(data.view());
      results[static_cast<std::size_t>(comm.rank())].assign(data.data(), data.data() + 7);
    });
    for (const auto& result : results)
      for (pnn::index i = 0; i < 7; ++i)
        CHECK(result[static_cast<std::size_t>(i)] == 100.0 * size * (size - 1) / 2 + static_cast<double>(i * size));
  }
}

TEST_CASE("local.all_reduce_mean_weights_by_count") {
  std::vector<float> results(3);
  run_ranks(3, [&](Local& comm) {
    Tensor<float, 1> data(Extents<1>{1});
    data[0] = static_cast<float>(comm.rank() + 1);  // 1, 2, 3 with weights 10, 0, 30
    const double weight = comm.rank() == 1 ? 0 : (comm.rank() + 1) * 10;
    all_reduce_mean(comm, data.view(), weight);
    results[static_cast<std::size_t>(comm.rank())] = data[0];
  });
  for (float r : results) CHECK(r == doctest::Approx((1 * 10 + 3 * 30) / 40.0));
}

TEST_CASE("local.broadcast_send_receive_and_async") {
  run_ranks(3, [&](Local& comm) {
    Tensor<float, 1> data(Extents<1>{4});
    if (comm.rank() == 2) data = data * 0.0f + 5.0f;
    comm.broadcast(data.view(), 2);
    CHECK(data[3] == 5.0f);
    // A ring of messages.
    Tensor<float, 1> out(Extents<1>{2}), in(Extents<1>{2});
    out[0] = static_cast<float>(comm.rank());
    comm.send(TensorView<const float, 1>(out), (comm.rank() + 1) % 3, 7);
    comm.receive(in.view(), (comm.rank() + 2) % 3, 7);
    CHECK(in[0] == static_cast<float>((comm.rank() + 2) % 3));
    // Two asynchronous reductions in flight, then a synchronous one.
    Tensor<float, 1> a(Extents<1>{1000}), b(Extents<1>{3});
    a = a * 0.0f + 1.0f;
    b = b * 0.0f + 2.0f;
    auto first = comm.all_reduce_async(a.view());
    auto second = comm.all_reduce_async(b.view());
    second.wait();
    first.wait();
    CHECK(a[999] == 3.0f);
    CHECK(b[0] == 6.0f);
    comm.barrier();
  });
}

TEST_CASE("local.timeout_names_the_missing_rank") {
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks(3,
                                [&](Local& comm) {
                                  Tensor<float, 1> data(Extents<1>{2});
                                  if (comm.rank() != 2) comm.all_reduce(data.view());  // rank 2 never arrives
                                },
                                {.timeout = 300ms});
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(errors[0].find("rank(s) 2 did not arrive") != std::string::npos);
  CHECK(errors[1].find("did not arrive") != std::string::npos);
  CHECK(errors[2].empty());
}

TEST_CASE("local.a_failing_rank_stops_the_others") {
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks(3, [&](Local& comm) {
    if (comm.rank() == 1) throw ArgumentError("bad batch on rank 1");
    Tensor<float, 1> data(Extents<1>{2});
    comm.all_reduce(data.view());  // would wait for rank 1 forever without the abort
  });                              // the default timeout is two minutes: the abort must end this much sooner
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(errors[0].find("rank 1 failed: bad batch on rank 1") != std::string::npos);
  CHECK(errors[2].find("rank 1 failed") != std::string::npos);
}

TEST_CASE("local.mismatched_collectives_are_reported") {
  const auto errors = run_ranks(2,
                                [&](Local& comm) {
                                  Tensor<float, 1> data(Extents<1>{4});
                                  if (comm.rank() == 0) comm.all_reduce(data.view());
                                  else comm.broadcast(data.view(), 0);
                                },
                                {.timeout = 5s});
  const std::string message = errors[0].empty() ? errors[1] : errors[0];
  CHECK(message.find("collective mismatch at collective #0") != std::string::npos);
  CHECK(message.find("broadcast(4 floats, root 0)") != std::string::npos);
  CHECK(message.find("all_reduce(4 floats)") != std::string::npos);
}

TEST_CASE("local.receive_checks_the_message_size") {
  const auto errors = run_ranks(2, [&](Local& comm) {
    Tensor<float, 1> data(Extents<1>{comm.rank() == 0 ? 3 : 4});
    if (comm.rank() == 0) comm.send(TensorView<const float, 1>(data), 1, 0);
    else comm.receive(data.view(), 0, 0);
  });
  CHECK(errors[1].find("expected 4 floats from rank 0 (tag 0) but received 12 bytes") != std::string::npos);
}
