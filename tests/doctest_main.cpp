// The one translation unit that holds doctest's runner, shared by every test program.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

int main(int argc, char** argv) {
  // Line-buffered even into a pipe: a program stopped by a timeout (scripts/gpu-check.sh) has still shown
  // the last test case it reached. (Test registration may have printed already: flushed first.)
  std::fflush(stdout);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return doctest::Context(argc, argv).run();
}
