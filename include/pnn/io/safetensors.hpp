// pnn/io/safetensors.hpp: tensors in the safetensors format, and a model's parameters saved and loaded
// with it.
//
//   write_safetensors(path, records, metadata)   any tensors, as named byte blocks
//   read_safetensors(path)                       every tensor and the metadata, validated
//   save_parameters(path, net.parameters())      what pnn::save(net, path) does (io/weights.hpp)
//   load_parameters(path, net.parameters())      what pnn::load(net, path) does
//
// The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N; N
// bytes of UTF-8 JSON mapping each tensor's name to {"dtype", "shape", "data_offsets": [begin, end]},
// plus an optional "__metadata__" object of strings; then the tensors' bytes, little-endian, row-major,
// back to back. pnn writes the parameters and buffers of a model under PyTorch's names, shapes, layouts
// and dtypes ("0.weight" of a Conv2D is (F, C, K, K), a BatchNorm's "num_batches_tracked" an int64), so
// model.load_state_dict(safetensors.torch.load_file(path), strict=True) on the torch.nn module of the
// same layers loads it as it is, and a state dict saved from that module loads into pnn. Where memory
// holds a tensor otherwise (core/parameter.hpp, FileLayout), saving and loading convert.
//
// The header is parsed here rather than by a JSON library: its schema is fixed and small, and every
// translation unit that saves or loads a model includes this header, where a JSON library costs seconds
// of compile time each. Reading checks every length, offset and size against the file
// before using it, so a damaged or hostile file is an IoError naming the file, never a read past a buffer.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/io/atomic_file.hpp"
#include "pnn/core/parameter.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/cpu/cpu.hpp"

namespace pnn {

// One tensor of a safetensors file.
struct TensorRecord {
  std::string name;
  std::string dtype;            // safetensors' name for the element type: "F32", "F64", "I64", "BF16", ...
  std::vector<index> shape;     // [] for a scalar
  std::vector<std::byte> data;  // the elements, little-endian, row-major
};

// What read_safetensors() returns.
struct SafetensorsFile {
  std::vector<TensorRecord> tensors;            // in the order of their data in the file
  std::map<std::string, std::string> metadata;  // the "__metadata__" object; empty when the file has none

  // The tensor called `name`, or nullptr.
  const TensorRecord* find(std::string_view name) const {
    for (const auto& tensor : tensors)
      if (tensor.name == name) return &tensor;
    return nullptr;
  }
};

// The number of bytes of one element of a safetensors dtype, or 0 for a name that is none (the sub-byte
// types F4 and F6_* are not supported: pnn reads and writes whole bytes per element).
inline std::size_t safetensors_dtype_size(std::string_view dtype) {
  static constexpr std::pair<std::string_view, std::size_t> sizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"U16", 2},  {"I16", 2}, {"F16", 2}, {"BF16", 2},    {"U32", 4},     {"I32", 4},
      {"F32", 4},  {"U64", 8}, {"I64", 8}, {"F64", 8},     {"C64", 8}};
  for (const auto& [name, size] : sizes)
    if (name == dtype) return size;
  return 0;
}

// The safetensors dtype of a parameter scalar type.
template <class T>
constexpr std::string_view safetensors_dtype() {
  if constexpr (std::is_same_v<T, float>) {
    return "F32";
  } else if constexpr (std::is_same_v<T, double>) {
    return "F64";
  } else {
    static_assert(always_false<T>,
                  "pnn saves and loads float (F32) and double (F64) parameters: build the "
                  "model with one of them, or write other tensors with write_safetensors()");
    return "";
  }
}

namespace detail::safetensors {

// The largest header accepted, as in the reference implementation: a larger length means the file is
// not a safetensors file, and must not make the reader allocate it.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

// A tensor as the writer and the model loader see it: views of names, shapes and bytes owned elsewhere.
struct TensorBytes {
  std::string_view name;
  std::string_view dtype;
  std::span<const index> shape;
  std::span<const std::byte> data;
};

inline std::string format_shape(std::span<const index> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

// The number of bytes a tensor of this shape and element size holds; false when that overflows 64 bits.
inline bool byte_count(std::span<const index> shape, std::size_t element_size, std::uint64_t& bytes) {
  std::uint64_t count = element_size;
  for (index dimension : shape)
    if (dimension < 0 || __builtin_mul_overflow(count, static_cast<std::uint64_t>(dimension), &count)) return false;
  bytes = count;
  return true;
}

inline void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20) {
      out += "\\u00";
      out += hex[byte >> 4];
      out += hex[byte & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
}

// The whole file: length, header padded with spaces so the data starts 8-byte aligned, data.
inline std::vector<std::byte> encode(const std::filesystem::path& path, std::span<const TensorBytes> tensors,
                                     const std::map<std::string, std::string>& metadata) {
  std::set<std::string_view> names;
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!std::exchange(first, false)) header += ',';
      append_json_string(header, key);
      header += ':';
      append_json_string(header, value);
    }
    header += '}';
  }
  std::uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    auto problem = [&](auto... parts) {
      return ArgumentError(concat("cannot write ", path.string(), ": tensor \"", tensor.name, "\" ", parts...));
    };
    if (tensor.name == "__metadata__") throw problem("has the name reserved for the metadata");
    if (!names.insert(tensor.name).second) throw problem("appears twice");
    const std::size_t element_size = safetensors_dtype_size(tensor.dtype);
    if (element_size == 0) throw problem("has dtype \"", tensor.dtype, "\", which is not a safetensors dtype");
    std::uint64_t bytes = 0;
    if (!byte_count(tensor.shape, element_size, bytes) || bytes != tensor.data.size())
      throw problem("has ", tensor.data.size(), " bytes of data, but shape ", format_shape(tensor.shape), " of ",
                    tensor.dtype, " needs ", element_size, " bytes per element");
    if (header.size() > 1) header += ',';
    append_json_string(header, tensor.name);
    header += ":{\"dtype\":";
    append_json_string(header, tensor.dtype);
    header += ",\"shape\":[";
    for (std::size_t i = 0; i < tensor.shape.size(); ++i) {
      if (i) header += ',';
      header += std::to_string(tensor.shape[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');

  std::vector<std::byte> file(8 + header.size() + offset);
  for (int i = 0; i < 8; ++i) file[i] = static_cast<std::byte>((std::uint64_t{header.size()} >> (8 * i)) & 0xff);
  std::memcpy(file.data() + 8, header.data(), header.size());
  std::byte* data = file.data() + 8 + header.size();
  for (const auto& tensor : tensors) {
    if (!tensor.data.empty()) std::memcpy(data, tensor.data.data(), tensor.data.size());
    data += tensor.data.size();
  }
  return file;
}

// Well-formed UTF-8: no stray continuation bytes, overlong forms, surrogates or code points past U+10FFFF.
inline bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length;
    std::uint32_t code_point;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xe0) == 0xc0) {
      length = 2, code_point = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      length = 3, code_point = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      length = 4, code_point = lead & 0x07;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto continuation = static_cast<unsigned char>(text[i + k]);
      if ((continuation & 0xc0) != 0x80) return false;
      code_point = (code_point << 6) | (continuation & 0x3f);
    }
    static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code_point < smallest[length] || code_point > 0x10ffff || (code_point >= 0xd800 && code_point <= 0xdfff))
      return false;
    i += length;
  }
  return true;
}

// A recursive-descent reader of the JSON grammar (RFC 8259) over the header text. Syntax errors say
// "invalid JSON header at byte K"; the schema checks above it report what the value should have been.
class JsonReader {
 public:
  JsonReader(std::string_view text, const std::string& file) : text_(text), file_(file) {}

  template <class... Parts>
  [[noreturn]] void invalid_json(Parts&&... parts) const {
    throw IoError(concat("cannot read ", file_, ": invalid JSON header at byte ", position_, ": ",
                         std::forward<Parts>(parts)...));
  }
  template <class... Parts>
  [[noreturn]] void invalid(Parts&&... parts) const {
    throw IoError(concat("cannot read ", file_, ": ", std::forward<Parts>(parts)...));
  }

  bool at_end() {
    skip_whitespace();
    return position_ == text_.size();
  }
  char peek() {
    skip_whitespace();
    if (position_ == text_.size()) invalid_json("the header ends in the middle of a value");
    return text_[position_];
  }

  // Calls member(key) at each member's value, which member must consume; duplicate keys are an error
  // (the reference implementation would silently keep one of two tensors of the same name).
  template <class Member>
  void object(Member&& member) {
    expect('{');
    if (peek() == '}') {
      ++position_;
      return;
    }
    std::set<std::string> keys;
    do {
      if (peek() != '"') invalid_json("expected a string key");
      std::string key = string();
      expect(':');
      if (keys.count(key)) invalid("the key \"", key, "\" appears twice in one object of the header");
      member(key);
      keys.insert(std::move(key));
    } while (next_or_close('}'));
  }
  // Calls element(i) at each element, which element must consume.
  template <class Element>
  void array(Element&& element) {
    expect('[');
    if (peek() == ']') {
      ++position_;
      return;
    }
    std::size_t i = 0;
    do element(i++);
    while (next_or_close(']'));
  }

  std::string string() {
    expect('"');
    std::string result;
    while (true) {
      if (position_ == text_.size()) invalid_json("unterminated string");
      const char c = text_[position_++];
      if (c == '"') return result;
      if (static_cast<unsigned char>(c) < 0x20) invalid_json("control character in a string");
      if (c != '\\') {
        result += c;
        continue;
      }
      if (position_ == text_.size()) invalid_json("unterminated string");
      switch (const char escaped = text_[position_++]) {
        case '"':
        case '\\':
        case '/':
          result += escaped;
          break;
        case 'b':
          result += '\b';
          break;
        case 'f':
          result += '\f';
          break;
        case 'n':
          result += '\n';
          break;
        case 'r':
          result += '\r';
          break;
        case 't':
          result += '\t';
          break;
        case 'u':
          append_utf8(result, code_point_escape());
          break;
        default:
          invalid_json("invalid escape '\\", escaped, "' in a string");
      }
    }
  }

  // A non-negative integer written without fraction or exponent; `what` names it in the error.
  std::uint64_t unsigned_integer(const std::string& what) {
    const char first = peek();
    if (first < '0' || first > '9') invalid(what, " must be a non-negative integer");
    std::uint64_t value = 0;
    const std::size_t start = position_;
    while (position_ < text_.size() && text_[position_] >= '0' && text_[position_] <= '9') {
      const auto digit = static_cast<std::uint64_t>(text_[position_] - '0');
      if (__builtin_mul_overflow(value, 10u, &value) || __builtin_add_overflow(value, digit, &value))
        invalid(what, " does not fit in 64 bits");
      ++position_;
    }
    if (text_[start] == '0' && position_ - start > 1) invalid_json("a number with a leading zero");
    if (position_ < text_.size() && (text_[position_] == '.' || text_[position_] == 'e' || text_[position_] == 'E'))
      invalid(what, " must be a non-negative integer");
    return value;
  }

  // Reads past any value, checking its syntax: for members this reader does not use.
  void skip_value(int depth = 0) {
    if (depth > max_depth) invalid_json("values nested more than ", max_depth, " deep");
    const char c = peek();
    if (c == '{') {
      object([&](const std::string&) { skip_value(depth + 1); });
    } else if (c == '[') {
      array([&](std::size_t) { skip_value(depth + 1); });
    } else if (c == '"') {
      string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      number();
    } else if (!literal("true") && !literal("false") && !literal("null")) {
      invalid_json("expected a value");
    }
  }

  bool literal(std::string_view word) {
    skip_whitespace();
    if (text_.substr(position_, word.size()) != word) return false;
    position_ += word.size();
    return true;
  }

 private:
  static constexpr int max_depth = 64;

  void skip_whitespace() {
    while (position_ < text_.size() && (text_[position_] == ' ' || text_[position_] == '\t' ||
                                        text_[position_] == '\n' || text_[position_] == '\r'))
      ++position_;
  }
  void expect(char c) {
    if (peek() != c) invalid_json("expected '", c, "'");
    ++position_;
  }
  // After an element: true at ',' (another follows), false at the closing bracket.
  bool next_or_close(char close) {
    const char c = peek();
    ++position_;
    if (c == ',') return true;
    if (c == close) return false;
    --position_;
    invalid_json("expected ',' or '", close, "'");
  }
  std::size_t digits() {
    const std::size_t start = position_;
    while (position_ < text_.size() && text_[position_] >= '0' && text_[position_] <= '9') ++position_;
    return position_ - start;
  }
  void number() {
    if (text_[position_] == '-') ++position_;
    const std::size_t start = position_;
    const std::size_t integer_digits = digits();
    if (integer_digits == 0) invalid_json("expected digits");
    if (integer_digits > 1 && text_[start] == '0') invalid_json("a number with a leading zero");
    if (position_ < text_.size() && text_[position_] == '.') {
      ++position_;
      if (digits() == 0) invalid_json("expected digits after '.'");
    }
    if (position_ < text_.size() && (text_[position_] == 'e' || text_[position_] == 'E')) {
      ++position_;
      if (position_ < text_.size() && (text_[position_] == '+' || text_[position_] == '-')) ++position_;
      if (digits() == 0) invalid_json("expected digits in an exponent");
    }
  }
  std::uint32_t hex_quad() {
    if (text_.size() - position_ < 4) invalid_json("a \\u escape needs four hex digits");
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[position_++];
      const int digit = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
      if (digit < 0) invalid_json("a \\u escape needs four hex digits");
      value = value * 16 + static_cast<std::uint32_t>(digit);
    }
    return value;
  }
  // The code point of a \u escape (after the "\u"), joining a UTF-16 surrogate pair.
  std::uint32_t code_point_escape() {
    const std::uint32_t high = hex_quad();
    if (high >= 0xdc00 && high <= 0xdfff) invalid_json("a \\u escape with a lone low surrogate");
    if (high < 0xd800 || high > 0xdbff) return high;
    if (text_.substr(position_, 2) != "\\u") invalid_json("a \\u escape with a lone high surrogate");
    position_ += 2;
    const std::uint32_t low = hex_quad();
    if (low < 0xdc00 || low > 0xdfff) invalid_json("a \\u escape with a lone high surrogate");
    return 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
  }
  static void append_utf8(std::string& out, std::uint32_t code_point) {
    auto put = [&](std::uint32_t byte) { out += static_cast<char>(byte); };
    if (code_point < 0x80) {
      put(code_point);
    } else if (code_point < 0x800) {
      put(0xc0 | (code_point >> 6)), put(0x80 | (code_point & 0x3f));
    } else if (code_point < 0x10000) {
      put(0xe0 | (code_point >> 12)), put(0x80 | ((code_point >> 6) & 0x3f)), put(0x80 | (code_point & 0x3f));
    } else {
      put(0xf0 | (code_point >> 18)), put(0x80 | ((code_point >> 12) & 0x3f)), put(0x80 | ((code_point >> 6) & 0x3f)),
          put(0x80 | (code_point & 0x3f));
    }
  }

  std::string_view text_;
  const std::string& file_;
  std::size_t position_ = 0;
};

// A header entry before its data is read.
struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<index> shape;
  std::uint64_t begin = 0, end = 0;
};

struct Header {
  std::vector<HeaderEntry> entries;  // sorted by data offset, checked to tile the data buffer exactly
  std::map<std::string, std::string> metadata;
};

inline HeaderEntry parse_entry(JsonReader& reader, std::string name) {
  HeaderEntry entry{std::move(name), {}, {}, 0, 0};
  const std::string tensor = "tensor \"" + entry.name + "\"";
  if (reader.peek() != '{') reader.invalid(tensor, ": its entry must be an object with dtype, shape and data_offsets");
  bool has_dtype = false, has_shape = false, has_offsets = false;
  reader.object([&](const std::string& key) {
    if (key == "dtype") {
      if (reader.peek() != '"') reader.invalid(tensor, ": \"dtype\" must be a string");
      entry.dtype = reader.string();
      has_dtype = true;
    } else if (key == "shape") {
      if (reader.peek() != '[') reader.invalid(tensor, ": \"shape\" must be an array of non-negative integers");
      reader.array([&](std::size_t) {
        const std::uint64_t dimension = reader.unsigned_integer(tensor + ": each dimension of \"shape\"");
        if (dimension > static_cast<std::uint64_t>(std::numeric_limits<index>::max()))
          reader.invalid(tensor, ": the dimension ", dimension, " is too large");
        entry.shape.push_back(static_cast<index>(dimension));
      });
      has_shape = true;
    } else if (key == "data_offsets") {
      if (reader.peek() != '[') reader.invalid(tensor, ": \"data_offsets\" must be an array [begin, end]");
      std::uint64_t offsets[2];
      std::size_t count = 0;
      reader.array([&](std::size_t i) {
        const std::uint64_t offset = reader.unsigned_integer(tensor + ": each of \"data_offsets\"");
        if (i < 2) offsets[i] = offset;
        count = i + 1;
      });
      if (count != 2) reader.invalid(tensor, ": \"data_offsets\" must hold two numbers [begin, end], not ", count);
      entry.begin = offsets[0];
      entry.end = offsets[1];
      has_offsets = true;
    } else {
      reader.skip_value();  // the format may grow fields; the reference implementation ignores unknown ones
    }
  });
  if (!has_dtype) reader.invalid(tensor, " has no \"dtype\"");
  if (!has_shape) reader.invalid(tensor, " has no \"shape\"");
  if (!has_offsets) reader.invalid(tensor, " has no \"data_offsets\"");
  return entry;
}

// Parses the header and checks it against a data buffer of data_bytes bytes.
inline Header parse_header(std::string_view text, std::uint64_t data_bytes, const std::string& file) {
  JsonReader reader(text, file);
  if (!is_valid_utf8(text)) reader.invalid("the header is not valid UTF-8");
  if (reader.at_end() || reader.peek() != '{') reader.invalid("the header is not a JSON object");
  Header header;
  reader.object([&](const std::string& key) {
    if (key == "__metadata__") {
      if (reader.literal("null")) return;
      if (reader.peek() != '{') reader.invalid("\"__metadata__\" must be an object of strings");
      reader.object([&](const std::string& metadata_key) {
        if (reader.peek() != '"') reader.invalid("\"__metadata__\" must hold strings; \"", metadata_key, "\" does not");
        header.metadata[metadata_key] = reader.string();
      });
    } else {
      header.entries.push_back(parse_entry(reader, key));
    }
  });
  if (!reader.at_end()) reader.invalid_json("unexpected characters after the header object");

  for (const auto& entry : header.entries) {
    const std::string tensor = "tensor \"" + entry.name + "\"";
    // (concat, not "[" + std::to_string(...): GCC 12 warns a false -Wrestrict on that, GCC bug 105329)
    const std::string offsets = detail::concat("[", entry.begin, ", ", entry.end, "]");
    const std::size_t element_size = safetensors_dtype_size(entry.dtype);
    if (element_size == 0) reader.invalid(tensor, " has unknown dtype \"", entry.dtype, "\"");
    if (entry.end < entry.begin) reader.invalid(tensor, ": data_offsets ", offsets, " are reversed");
    if (entry.end > data_bytes)
      reader.invalid(tensor, ": data_offsets ", offsets, " reach past the end of the data buffer (", data_bytes,
                     " bytes)");
    std::uint64_t bytes = 0;
    if (!byte_count(entry.shape, element_size, bytes))
      reader.invalid(tensor, ": shape ", format_shape(entry.shape), " has too many elements");
    if (entry.end - entry.begin != bytes)
      reader.invalid(tensor, ": data_offsets ", offsets, " hold ", entry.end - entry.begin, " bytes, but shape ",
                     format_shape(entry.shape), " of ", entry.dtype, " needs ", bytes);
  }
  std::sort(header.entries.begin(), header.entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  std::uint64_t covered = 0;
  const HeaderEntry* previous = nullptr;
  for (const auto& entry : header.entries) {
    if (entry.begin < covered)
      reader.invalid("tensors \"", previous->name, "\" and \"", entry.name, "\" overlap in the data buffer");
    if (entry.begin > covered)
      reader.invalid("bytes [", covered, ", ", entry.begin, ") of the data buffer belong to no tensor (a gap before \"",
                     entry.name, "\")");
    covered = entry.end;
    previous = &entry;
  }
  if (covered != data_bytes)
    reader.invalid(data_bytes - covered, " trailing bytes after the last tensor's data (the data buffer holds ",
                   covered, " bytes of tensors, the file ", data_bytes, ")");
  return header;
}

// A file opened for reading, closed on every path out.
class InputFile {
 public:
  explicit InputFile(const std::filesystem::path& path) : name_(path.string()) {
    descriptor_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (descriptor_ < 0) fail(std::strerror(errno));
    struct stat status {};
    const bool stated = ::fstat(descriptor_, &status) == 0;
    const int error = errno;
    if (!stated || !S_ISREG(status.st_mode)) {
      ::close(descriptor_);  // the destructor does not run for a constructor that throws
      fail(stated ? "not a regular file" : std::strerror(error));
    }
    size_ = static_cast<std::uint64_t>(status.st_size);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    if (descriptor_ >= 0) ::close(descriptor_);
  }

  std::uint64_t size() const { return size_; }
  const std::string& name() const { return name_; }

  // Fills `into` from `offset`; the file shrinking underneath is an error, not a short read.
  void read(std::uint64_t offset, std::span<std::byte> into) const {
    std::size_t done = 0;
    while (done < into.size()) {
      const ssize_t got =
          ::pread(descriptor_, into.data() + done, into.size() - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail(std::strerror(errno));
      if (got == 0) fail(concat("the file ended at byte ", offset + done, " (it changed while being read)"));
      done += static_cast<std::size_t>(got);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw IoError(concat("cannot read ", name_, ": ", problem));
  }

  std::string name_;
  int descriptor_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace detail::safetensors

// Writes `tensors` (each record's data must hold product(shape) elements of its dtype) and `metadata` to
// `path`, atomically: a reader sees the old file or the new one. Throws ArgumentError for an invalid record
// and IoError when the file cannot be written.
inline void write_safetensors(const std::filesystem::path& path, std::span<const TensorRecord> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<detail::safetensors::TensorBytes> views;
  views.reserve(tensors.size());
  for (const auto& tensor : tensors) views.push_back({tensor.name, tensor.dtype, tensor.shape, tensor.data});
  write_file_atomically(path, detail::safetensors::encode(path, views, metadata));
}

// Reads and validates a whole safetensors file. Throws IoError naming the file and the problem.
inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  using namespace detail::safetensors;
  const InputFile file(path);
  auto invalid = [&](auto... parts) { return IoError(detail::concat("cannot read ", file.name(), ": ", parts...)); };
  if (file.size() < 8)
    throw invalid("the file is ", file.size(),
                  " bytes long, shorter than the 8-byte header length of a safetensors file");
  std::byte length_bytes[8];
  file.read(0, length_bytes);
  std::uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | std::to_integer<std::uint64_t>(length_bytes[i]);
  if (header_bytes > max_header_bytes)
    throw invalid("the header length ", header_bytes, " is larger than the limit of ", max_header_bytes,
                  " bytes (is this a safetensors file?)");
  if (header_bytes > file.size() - 8)
    throw invalid("the header length ", header_bytes, " is larger than the rest of the file (", file.size() - 8,
                  " bytes)");
  std::string text(header_bytes, '\0');
  file.read(8, std::as_writable_bytes(std::span(text)));
  const std::uint64_t data_start = 8 + header_bytes;
  Header header = parse_header(text, file.size() - data_start, file.name());

  SafetensorsFile result;
  result.metadata = std::move(header.metadata);
  result.tensors.reserve(header.entries.size());
  for (auto& entry : header.entries) {
    TensorRecord record{std::move(entry.name), std::move(entry.dtype), std::move(entry.shape),
                        std::vector<std::byte>(entry.end - entry.begin)};
    file.read(data_start + entry.begin, record.data);
    result.tensors.push_back(std::move(record));
  }
  return result;
}

// A model's tensor as files hold it: PyTorch's name, shape and layout, the element type T, or int64 for
// a count (core/parameter.hpp, FileLayout); and the memory that holds it (T is const when saving).
template <class T>
struct ModelTensor {
  std::string_view name;
  std::span<const index> shape;
  const FileLayout* layout;
  std::span<T> memory;
};

namespace detail::safetensors {

inline std::string_view file_dtype(const FileLayout& layout, std::string_view element_dtype) {
  return layout.count ? std::string_view("I64") : element_dtype;
}

// Calls visit(file offset, memory offset) for every element of a tensor of `shape` (row-major in files)
// that memory holds with its axes in the order `memory_axes`. A layout that is not a permutation of the
// shape's axes is a bug in the layer that declared it.
template <class Visit>
void for_each_element(std::string_view name, std::span<const index> shape, std::span<const int> memory_axes,
                      Visit&& visit) {
  const std::size_t rank = shape.size();
  std::vector<int> seen(rank, 0);
  bool permutation = memory_axes.size() == rank;
  for (const int axis : memory_axes)
    permutation = permutation && axis >= 0 && static_cast<std::size_t>(axis) < rank && !seen[axis]++;
  PNN_CHECK(permutation, Error, "parameter \"", name, "\" declares memory axes that are not a permutation of its ",
            rank, " axes");
  std::vector<index> stride(rank);  // memory's step along each axis of the file's shape
  index total = 1;
  for (std::size_t i = rank; i-- > 0;) {
    stride[static_cast<std::size_t>(memory_axes[i])] = total;
    total *= shape[static_cast<std::size_t>(memory_axes[i])];
  }
  std::vector<index> position(rank, 0);
  index memory = 0;
  for (index file = 0; file < total; ++file) {
    visit(file, memory);
    for (std::size_t axis = rank; axis-- > 0;) {  // the next file position, last axis fastest
      memory += stride[axis];
      if (++position[axis] < shape[axis]) break;
      memory -= stride[axis] * shape[axis];
      position[axis] = 0;
    }
  }
}

// The bytes files hold for a model tensor: its memory as it is when the layouts agree, else converted
// into `storage`.
template <class T>
std::span<const std::byte> to_file(const ModelTensor<const T>& tensor, std::vector<std::byte>& storage) {
  const FileLayout& layout = *tensor.layout;
  if (layout.count) {
    storage.resize(tensor.memory.size() * sizeof(std::int64_t));
    for (std::size_t i = 0; i < tensor.memory.size(); ++i) {
      const auto value = static_cast<std::int64_t>(tensor.memory[i]);
      std::memcpy(storage.data() + i * sizeof value, &value, sizeof value);
    }
    return storage;
  }
  if (layout.memory_axes.empty()) return std::as_bytes(tensor.memory);
  storage.resize(tensor.memory.size_bytes());
  const auto file = std::span(reinterpret_cast<T*>(storage.data()), tensor.memory.size());
  for_each_element(tensor.name, tensor.shape, layout.memory_axes,
                   [&](index at, index from) { file[static_cast<std::size_t>(at)] = tensor.memory[from]; });
  return storage;
}

// A file of `tensors`, with `metadata`, ready to be written.
template <class T>
std::vector<std::byte> encode_model(const std::filesystem::path& path, std::span<const ModelTensor<const T>> tensors,
                                    const std::map<std::string, std::string>& metadata) {
  std::vector<std::vector<std::byte>> storage(tensors.size());
  std::vector<TensorBytes> views;
  views.reserve(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i)
    views.push_back({tensors[i].name, file_dtype(*tensors[i].layout, safetensors_dtype<T>()), tensors[i].shape,
                     to_file(tensors[i], storage[i])});
  return encode(path, views, metadata);
}

// Reads `tensors` from `file` (read from `path`) into their memory, converting from the files' layouts.
// Everything is checked first (names, dtypes, shapes, counts that are not negative): every mismatch is
// reported at once, as loading into the wrong architecture usually has several, and nothing is written
// unless everything matches, so a failed load leaves the memory as it was.
template <class T>
void decode_model(const std::filesystem::path& path, const SafetensorsFile& file,
                  std::span<const ModelTensor<T>> tensors) {
  std::map<std::string_view, const TensorRecord*> in_file;
  for (const auto& record : file.tensors) in_file[record.name] = &record;

  std::vector<std::string> problems;
  std::set<std::string_view> expected;
  std::vector<const TensorRecord*> records;
  for (const auto& tensor : tensors) {
    expected.insert(tensor.name);
    const std::string_view dtype = file_dtype(*tensor.layout, safetensors_dtype<T>());
    const auto found = in_file.find(tensor.name);
    if (found == in_file.end()) {
      problems.push_back(concat("tensor \"", tensor.name, "\" (shape ", format_shape(tensor.shape), ", ", dtype,
                                ") is missing from the file"));
      continue;
    }
    const TensorRecord& record = *found->second;
    records.push_back(&record);
    if (record.dtype != dtype)
      problems.push_back(
          concat("tensor \"", tensor.name, "\" is ", record.dtype, " in the file but ", dtype, " in the model"));
    if (!std::ranges::equal(record.shape, tensor.shape))
      problems.push_back(concat("tensor \"", tensor.name, "\" has shape ", format_shape(record.shape),
                                " in the file but ", format_shape(tensor.shape), " in the model"));
    else if (tensor.layout->count && record.dtype == dtype)
      for (std::size_t i = 0; i < record.data.size(); i += sizeof(std::int64_t)) {
        std::int64_t value;
        std::memcpy(&value, record.data.data() + i, sizeof value);
        if (value < 0) {
          problems.push_back(concat("tensor \"", tensor.name, "\" is a count but holds ", value));
          break;
        }
      }
  }
  for (const auto& record : file.tensors)
    if (!expected.count(record.name))
      problems.push_back(concat("the file holds tensor \"", record.name, "\" (shape ", format_shape(record.shape), ", ",
                                record.dtype, "), which the model does not have"));
  if (!problems.empty()) {
    std::string message = concat("cannot load ", path.string(), " into the model (nothing was changed): ");
    constexpr std::size_t shown = 10;
    for (std::size_t i = 0; i < std::min(problems.size(), shown); ++i) {
      if (i) message += "; ";
      message += problems[i];
    }
    if (problems.size() > shown) message += concat("; and ", problems.size() - shown, " more");
    throw IoError(message);
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const ModelTensor<T>& tensor = tensors[i];
    const std::vector<std::byte>& data = records[i]->data;
    const std::size_t element_size = tensor.layout->count ? sizeof(std::int64_t) : sizeof(T);
    PNN_CHECK(data.size() == tensor.memory.size() * element_size, Error, "load: tensor \"", tensor.name, "\" has ",
              tensor.memory.size(), " elements of storage but its declared shape needs ", data.size() / element_size);
    if (tensor.layout->count) {
      for (std::size_t k = 0; k < tensor.memory.size(); ++k) {
        std::int64_t value;
        std::memcpy(&value, data.data() + k * sizeof value, sizeof value);
        tensor.memory[k] = static_cast<T>(value);
      }
    } else if (tensor.layout->memory_axes.empty()) {
      if (!data.empty()) std::memcpy(tensor.memory.data(), data.data(), data.size());
    } else {
      for_each_element(tensor.name, tensor.shape, tensor.layout->memory_axes, [&](index at, index to) {
        std::memcpy(&tensor.memory[static_cast<std::size_t>(to)], data.data() + at * sizeof(T), sizeof(T));
      });
    }
  }
}

// The model tensors of parameters' values: what save and load move.
template <class T, class Element>
std::vector<ModelTensor<Element>> value_tensors(std::span<const Parameter<T, cpu>> parameters) {
  std::vector<ModelTensor<Element>> tensors;
  tensors.reserve(parameters.size());
  for (const auto& p : parameters)
    tensors.push_back({p.name(), p.declaration.shape, &p.declaration.file,
                       std::span<Element>(p.value.data(), static_cast<std::size_t>(p.value.size()))});
  return tensors;
}

}  // namespace detail::safetensors

// Writes every parameter and buffer of a model (net.parameters()) under its name, in PyTorch's layouts
// (FileLayout), with the metadata {"format": "pt", "framework": "pnn"} that PyTorch's loaders look for.
template <class T>
void save_parameters(const std::filesystem::path& path, std::span<const Parameter<T, cpu>> parameters) {
  static_assert(std::endian::native == std::endian::little,
                "save_parameters writes the parameters' memory as it is: a big-endian host needs a byte swap here");
  const auto tensors = detail::safetensors::value_tensors<T, const T>(parameters);
  write_file_atomically(path,
                        detail::safetensors::encode_model<T>(path, tensors, {{"format", "pt"}, {"framework", "pnn"}}));
}

// Loads a file written by save_parameters, or a PyTorch state dict of the same layers, into a model's
// parameters. The file must hold exactly the model's tensors with the same shapes and dtype; otherwise
// IoError lists every missing, unexpected or mismatched tensor, and the parameters are left unchanged.
template <class T>
void load_parameters(const std::filesystem::path& path, std::span<const Parameter<T, cpu>> parameters) {
  static_assert(std::endian::native == std::endian::little,
                "load_parameters copies little-endian file data as it is: a big-endian host needs a byte swap here");
  const auto tensors = detail::safetensors::value_tensors<T, T>(parameters);
  detail::safetensors::decode_model<T>(path, read_safetensors(path), tensors);
}

}  // namespace pnn
