// CHECK_IO_ERROR: a reader's refusal names the file and the problem. Two checks, since doctest matches
// one substring at a time.
#pragma once

#include <doctest/doctest.h>

#include <pnn/core/error.hpp>

#define CHECK_IO_ERROR(expression, path, problem)                                               \
  do {                                                                                          \
    CHECK_THROWS_WITH_AS(expression, doctest::Contains((path).string().c_str()), pnn::IoError); \
    CHECK_THROWS_WITH_AS(expression, doctest::Contains(problem), pnn::IoError);                 \
  } while (false)
