// Local's all_reduce_canonical: every rank gets, bit for bit, the binary-counter tree over the ranks'
// values (core/canonical_sum.hpp), synchronous and asynchronous, float and double; and a rank that never
// arrives ends the others' wait with an error.
#include <doctest/doctest.h>

#include <chrono>
#include <pnn/dist/local.hpp>
#include <string>
#include <thread>
#include <vector>

#include "canonical_inputs.hpp"
#include "local_ranks.hpp"

using namespace pnn;
using namespace pnn::testing;
using namespace std::chrono_literals;

namespace {

template <class T>
Tensor<T, 1> inputs_of(int rank, pnn::index count) {
  Tensor<T, 1> data(Extents<1>{count});
  const std::vector<T> values = canonical_inputs<T>(rank, count);
  for (pnn::index i = 0; i < count; ++i) data[i] = values[static_cast<std::size_t>(i)];
  return data;
}
}  // namespace

TEST_CASE("canonical.local_equals_the_reference_tree_bit_for_bit") {
  for (int ranks : {1, 2, 3, 4, 6, 8})
    for (pnn::index count : {1, 37, 1000}) {
      CAPTURE(ranks);
      CAPTURE(count);
      const auto reference_f = canonical_reference<float>(ranks, count);
      const auto reference_d = canonical_reference<double>(ranks, count);
      // From 4 ranks on (3 is (v0 + v1) + v2 either way) the order shows: a sum in rank order has other bits.
      if (ranks >= 4) {
        CHECK_FALSE(same_bits(canonical_reference<float>(ranks, count, true), reference_f.data()));
        CHECK_FALSE(same_bits(canonical_reference<double>(ranks, count, true), reference_d.data()));
      }
      std::vector<int> matches(static_cast<std::size_t>(ranks), 0);
      const auto errors = run_ranks(ranks, [&](Local& comm) {
        int& match = matches[static_cast<std::size_t>(comm.rank())];
        // Synchronous, float and double (the host double views every communicator reduces).
        auto sync_f = inputs_of<float>(comm.rank(), count);
        auto sync_d = inputs_of<double>(comm.rank(), count);
        comm.all_reduce_canonical(sync_f.view());
        comm.all_reduce_canonical(sync_d.view());
        match += same_bits(reference_f, sync_f.data()) + same_bits(reference_d, sync_d.data());
        // Asynchronous, both in flight together with an ordinary reduction between them.
        auto async_f = inputs_of<float>(comm.rank(), count);
        auto async_d = inputs_of<double>(comm.rank(), count);
        Tensor<double, 1> other(Extents<1>{3});
        auto first = comm.all_reduce_canonical_async(async_f.view());
        auto second = comm.all_reduce_async(other.view());
        auto third = comm.all_reduce_canonical_async(async_d.view());
        third.wait();
        second.wait();
        first.wait();
        match += same_bits(reference_f, async_f.data()) + same_bits(reference_d, async_d.data());
      });
      for (int r = 0; r < ranks; ++r) {
        CAPTURE(r);
        CHECK(errors[static_cast<std::size_t>(r)].empty());
        CHECK(matches[static_cast<std::size_t>(r)] == 4);
      }
    }
}

TEST_CASE("canonical.local_a_rank_that_never_arrives_is_named") {
  for (bool asynchronous : {false, true}) {
    CAPTURE(asynchronous);
    const auto start = std::chrono::steady_clock::now();
    const auto errors = run_ranks(3,
                                  [&](Local& comm) {
                                    Tensor<float, 1> data(Extents<1>{2});
                                    if (comm.rank() == 2) return;  // rank 2 never arrives
                                    if (asynchronous) comm.all_reduce_canonical_async(data.view()).wait();
                                    else comm.all_reduce_canonical(data.view());
                                  },
                                  {.timeout = 300ms});
    CHECK(std::chrono::steady_clock::now() - start < 10s);
    INFO(errors[0]);
    CHECK(errors[0].find("(all_reduce_canonical(2 floats)): rank(s) 2 did not arrive") != std::string::npos);
    CHECK(errors[1].find("did not arrive") != std::string::npos);
    CHECK(errors[2].empty());
  }
}
