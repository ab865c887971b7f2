// pnn/io/atomic_file.hpp: write_file_atomically(), the one way pnn writes files.
//
// The bytes go to a temporary file in the target's directory, are flushed to disk, and the temporary
// file is then renamed over the target. A reader (or a crash) sees the old file or the new one, never a
// half-written one; on any failure the temporary file is removed and an IoError names the path.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

#include "pnn/core/error.hpp"

namespace pnn {

inline void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
  const std::filesystem::path temporary =
      directory / (path.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  auto fail = [&](const std::string& what, int error) {
    ::unlink(temporary.c_str());
    throw IoError(detail::concat("cannot write ", path.string(), ": ", what, ": ", std::strerror(error)));
  };
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    throw IoError(detail::concat("cannot write ", path.string(), ": cannot create ", temporary.string(), ": ",
                                 std::strerror(error)));
  }
  const std::byte* data = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t written = ::write(fd, data, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      fail("write failed", error);
    }
    data += written;
    left -= static_cast<std::size_t>(written);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail("fsync failed", error);
  }
  if (::close(fd) != 0) fail("close failed", errno);
  if (::rename(temporary.c_str(), path.c_str()) != 0) fail("rename failed", errno);
}

inline void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
  write_file_atomically(path, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

}  // namespace pnn
