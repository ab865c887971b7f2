// tests/fuzz/fuzz_support.hpp: what the libFuzzer targets share.
//
// The readers under test take paths (they stream from the file: an IDX file of 47 MB is never held
// twice, a safetensors file is read with pread), so each input is handed to them as a file: an anonymous
// in-memory file (memfd) opened again through /proc/self/fd, which is a regular file to fopen, open and
// fstat, needs no disk and leaves nothing behind.
//
// The contract every target checks, for any input: the reader succeeds, or it throws pnn::IoError whose
// message names the file. Any other exception escapes LLVMFuzzerTestOneInput and aborts (libFuzzer reports
// it as a crash); a crash, leak, timeout or huge allocation is reported by libFuzzer and the sanitizers.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <pnn/core/error.hpp>

namespace fuzz {

// Prints what went wrong and aborts, which libFuzzer reports with the input that caused it.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz target: %s\n", what.c_str());
  std::abort();
}

inline void require(bool condition, const std::string& what) {
  if (!condition) fail(what);
}

class MemoryFile {
 public:
  MemoryFile(const std::uint8_t* data, std::size_t size) {
    descriptor_ = ::memfd_create("pnn-fuzz-input", MFD_CLOEXEC);
    if (descriptor_ < 0) fail("memfd_create failed");
    std::size_t done = 0;
    while (done < size) {
      const ssize_t wrote = ::write(descriptor_, data + done, size - done);
      if (wrote <= 0) fail("writing the memfd failed");
      done += static_cast<std::size_t>(wrote);
    }
    path_ = "/proc/self/fd/" + std::to_string(descriptor_);
  }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  ~MemoryFile() { ::close(descriptor_); }
  const std::string& path() const { return path_; }

 private:
  int descriptor_ = -1;
  std::string path_;
};

// A reader's refusal must name the file it refused.
inline void check_refusal(const pnn::IoError& error, const std::string& path) {
  const std::string_view message = error.what();
  require(message.find(path) != std::string_view::npos,
          "the error does not name the file " + path + ": " + std::string(message));
}

}  // namespace fuzz
