// ScratchDirectory: a fresh directory for a test's files, removed with everything in it at the end.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

#include <unistd.h>

namespace pnn::testing {

// A fresh directory under the system's temporary directory, named after the test and the process.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& name) {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("pnn-test-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace pnn::testing
