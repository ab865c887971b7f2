// pnn/data/idx.hpp: read_idx(), which reads an IDX file (the format of MNIST and its relatives), raw or
// gzip-compressed.
//
// An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
// big-endian 32-bit size per dimension, then the values in row-major order. pnn reads the unsigned-byte
// type (0x08), which is what MNIST, Fashion-MNIST, KMNIST and EMNIST use.
//
// A file is untrusted input: the header is read first, the size of the values it announces is computed
// with overflow checks, exactly that many bytes are read, and then the file must end. A raw file whose
// header claims more values than the file holds is refused before anything is allocated for them; memory
// grows with the bytes actually read, never with what the header claims, and at most one byte more than
// the header announces is ever decompressed, so neither a lying header nor a gzip bomb can exhaust memory.
#pragma once

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <zlib.h>

#include "pnn/core/config.hpp"
#include "pnn/core/error.hpp"

namespace pnn {

// The contents of an unsigned-byte IDX file.
struct IdxArray {
  std::vector<index> dims;           // outermost first, e.g. (60000, 28, 28)
  std::vector<std::uint8_t> values;  // row-major, the product of dims in length
};

// More values than this is taken as a corrupt header (the largest MNIST-format data sets hold a few GB).
inline constexpr index max_idx_values = index{1} << 36;

namespace detail {

inline constexpr std::uint8_t idx_unsigned_byte = 0x08;

inline const char* idx_type_name(unsigned code) {
  switch (code) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "16-bit integer";
    case 0x0C:
      return "32-bit integer";
    case 0x0D:
      return "32-bit float";
    case 0x0E:
      return "64-bit float";
    default:
      return "not an IDX type";
  }
}

inline std::string hex_byte(unsigned byte) {
  static constexpr char digits[] = "0123456789abcdef";
  return {'0', 'x', digits[(byte >> 4) & 0xF], digits[byte & 0xF]};
}

template <class... Parts>
[[noreturn]] void idx_error(const std::filesystem::path& path, const Parts&... parts) {
  throw IoError(concat("cannot read IDX file ", path.string(), ": ", parts...));
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using FileHandle = std::unique_ptr<std::FILE, FileCloser>;

// The bytes of a file as they are. read() returns fewer bytes than asked for only at the end of the file.
class RawByteSource {
 public:
  static constexpr const char* where = "in the file";

  RawByteSource(std::FILE* file, const std::filesystem::path& path) : file_(file), path_(path) {}

  // The bytes left after what was read, for a regular file (a pipe has no size): a raw file cannot hold
  // more values than that, so a header that claims more is refused before anything is allocated for them.
  std::optional<std::uint64_t> remaining() const {
    struct stat status {};
    const long position = std::ftell(file_);
    if (::fstat(::fileno(file_), &status) != 0 || !S_ISREG(status.st_mode) || position < 0) return std::nullopt;
    const auto size = static_cast<std::uint64_t>(status.st_size), done = static_cast<std::uint64_t>(position);
    return size > done ? size - done : 0;
  }

  std::size_t read(std::uint8_t* destination, std::size_t count) {
    const std::size_t got = std::fread(destination, 1, count, file_);
    if (got < count && std::ferror(file_)) idx_error(path_, "read error: ", std::strerror(errno));
    return got;
  }

 private:
  std::FILE* file_;
  const std::filesystem::path& path_;
};

// The decompressed bytes of a gzip file (one or more gzip members, as gzip itself allows). read() returns
// fewer bytes than asked for only at the end of the last member, and never decompresses more than asked.
class GzipByteSource {
 public:
  static constexpr const char* where = "after decompression";

  GzipByteSource(std::FILE* file, const std::filesystem::path& path) : file_(file), path_(path) {
    // 16 + MAX_WBITS: a gzip wrapper (header, CRC-32 and length trailer, both checked by zlib).
    const int status = inflateInit2(&stream_, 16 + MAX_WBITS);
    if (status != Z_OK) idx_error(path_, "cannot start zlib: ", zError(status));
  }
  ~GzipByteSource() { inflateEnd(&stream_); }
  GzipByteSource(const GzipByteSource&) = delete;
  GzipByteSource& operator=(const GzipByteSource&) = delete;

  std::size_t read(std::uint8_t* destination, std::size_t count) {
    std::size_t produced = 0;
    while (produced < count && !finished_) {
      if (stream_.avail_in == 0) refill();
      const auto space = static_cast<uInt>(std::min<std::size_t>(count - produced, UINT_MAX));
      stream_.next_out = destination + produced;
      stream_.avail_out = space;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      produced += space - stream_.avail_out;
      if (status == Z_STREAM_END) {
        if (stream_.avail_in == 0) refill();
        if (stream_.avail_in == 0) {
          finished_ = true;
        } else {
          inflateReset(&stream_);  // another member follows; if it is not gzip, inflate says so next round
        }
      } else if (status == Z_BUF_ERROR && stream_.avail_in == 0 && input_ended_) {
        corrupt("the compressed data ends before the gzip stream does (the .gz file is truncated)");
      } else if (status != Z_OK && status != Z_BUF_ERROR) {
        corrupt(stream_.msg ? stream_.msg : zError(status));
      }
    }
    return produced;
  }

 private:
  void refill() {
    if (input_ended_) return;
    const std::size_t got = std::fread(input_.data(), 1, input_.size(), file_);
    if (got < input_.size()) {
      if (std::ferror(file_)) idx_error(path_, "read error: ", std::strerror(errno));
      input_ended_ = true;
    }
    stream_.next_in = input_.data();
    stream_.avail_in = static_cast<uInt>(got);
  }
  [[noreturn]] void corrupt(const char* zlib_message) const {
    idx_error(path_, "corrupt gzip data (zlib: ", zlib_message, ")");
  }

  std::FILE* file_;
  const std::filesystem::path& path_;
  z_stream stream_{};
  std::vector<Bytef> input_ = std::vector<Bytef>(std::size_t{1} << 16);
  bool input_ended_ = false;
  bool finished_ = false;
};

inline std::string format_idx_dims(const std::vector<index>& dims) {
  std::string text;
  for (std::size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

template <class Source>
IdxArray parse_idx(Source& source, const std::filesystem::path& path) {
  std::uint8_t magic[4];
  const std::size_t magic_bytes = source.read(magic, 4);
  if (magic_bytes < 4)
    idx_error(path, "too short to hold an IDX header: the magic number needs 4 bytes, found ", magic_bytes, " ",
              Source::where);
  const unsigned type_code = magic[2];
  const unsigned rank = magic[3];
  if (magic[0] != 0 || magic[1] != 0)
    idx_error(path, "bad magic number ", hex_byte(magic[0]), " ", hex_byte(magic[1]), " ", hex_byte(magic[2]), " ",
              hex_byte(magic[3]),
              ": an IDX file starts with two zero bytes, then the type code and the number of "
              "dimensions (1 to 4); this is not an IDX file");
  if (rank < 1 || rank > 4)
    idx_error(path, "bad magic number: it says ", rank, " dimensions, an IDX file has 1 to 4 (the fourth byte)");
  if (type_code != idx_unsigned_byte)
    idx_error(path, "unsupported element type code ", hex_byte(type_code), " (", idx_type_name(type_code),
              "): pnn reads only unsigned-byte IDX files (type code 0x08)");

  std::uint8_t size_bytes[16];
  const std::size_t header_rest = 4 * std::size_t{rank};
  const std::size_t got = source.read(size_bytes, header_rest);
  if (got < header_rest)
    idx_error(path, "too short to hold its header: ", rank, " dimensions need a header of ", 4 + header_rest,
              " bytes, found ", 4 + got, " ", Source::where);

  IdxArray result;
  bool has_zero = false;
  for (unsigned d = 0; d < rank; ++d) {
    const std::uint8_t* b = size_bytes + 4 * d;
    const std::uint32_t size =
        (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
    result.dims.push_back(static_cast<index>(size));
    has_zero |= size == 0;
  }
  // Checked one factor at a time, so the product can neither overflow nor pass the limit unnoticed.
  index expected = 1;
  if (has_zero) {
    expected = 0;
  } else {
    for (index dim : result.dims) {
      if (expected > max_idx_values / dim)
        idx_error(path, "the header's dimensions ", format_idx_dims(result.dims),
                  " describe more than 2^36 values, "
                  "too large for pnn: the header is corrupt");
      expected *= dim;
    }
  }

  const auto wanted = static_cast<std::size_t>(expected);
  const auto truncated = [&](auto... found) {
    idx_error(path, "truncated: the header (dimensions ", format_idx_dims(result.dims), ") announces ", wanted,
              " bytes of values after its ", 4 + header_rest, " header bytes, ", found...);
  };
  if constexpr (requires { source.remaining(); }) {
    const std::optional<std::uint64_t> remaining = source.remaining();
    if (remaining && *remaining < wanted) truncated("but the file holds only ", *remaining, " more");
  }
  // Grow with what arrives rather than allocating what the header claims.
  std::size_t filled = 0;
  while (filled < wanted) {
    if (filled == result.values.size())
      result.values.resize(std::min(wanted, std::max(2 * filled, std::size_t{1} << 20)));
    const std::size_t asked = result.values.size() - filled;
    const std::size_t arrived = source.read(result.values.data() + filled, asked);
    filled += arrived;
    if (arrived < asked) break;
  }
  if (filled < wanted) truncated("found ", filled, " ", Source::where);
  std::uint8_t extra = 0;
  if (source.read(&extra, 1) != 0)
    idx_error(path, "trailing data: the header (dimensions ", format_idx_dims(result.dims), ") announces ", wanted,
              " bytes of values after its ", 4 + header_rest, " header bytes, but there are more ", Source::where);
  return result;
}

}  // namespace detail

// Reads an unsigned-byte IDX file, gzip-compressed or not (told apart by the gzip magic bytes 1f 8b, not
// by the file name). Throws IoError naming the file and the problem.
inline IdxArray read_idx(const std::filesystem::path& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) detail::idx_error(path, "it is a directory, not a file");
  detail::FileHandle file(std::fopen(path.c_str(), "rb"));
  if (!file) detail::idx_error(path, "cannot open it: ", std::strerror(errno));

  detail::RawByteSource raw(file.get(), path);
  std::uint8_t signature[2] = {0, 0};
  const bool gzip = raw.read(signature, 2) == 2 && signature[0] == 0x1f && signature[1] == 0x8b;
  if (std::fseek(file.get(), 0, SEEK_SET) != 0) detail::idx_error(path, "cannot seek: ", std::strerror(errno));
  if (gzip) {
    detail::GzipByteSource decompressed(file.get(), path);
    return detail::parse_idx(decompressed, path);
  }
  return detail::parse_idx(raw, path);
}

}  // namespace pnn
