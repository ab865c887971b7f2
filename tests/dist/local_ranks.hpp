// Runs a body on one thread per rank of a Local group, for the tests of the in-process communicator.
#pragma once

#include <exception>
#include <pnn/dist/local.hpp>
#include <string>
#include <thread>
#include <vector>

namespace pnn::testing {

// Runs body(communicator) on one thread per rank; returns each rank's error message ("" if none). A rank
// that throws aborts the group, as Distributed's runner does, so the others' waits end too.
template <class Body>
std::vector<std::string> run_ranks(int size, Body body, CommunicatorOptions options = {}) {
  auto ranks = Local::group(size, options);
  std::vector<std::string> errors(static_cast<std::size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        body(ranks[static_cast<std::size_t>(r)]);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
        ranks[static_cast<std::size_t>(r)].abort(detail::concat("rank ", r, " failed: ", e.what()));
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace pnn::testing
