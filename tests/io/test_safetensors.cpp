// safetensors: round trips, the exact bytes on disk, atomic writes, every validation failure of the
// reader, and interchange with the Python safetensors package (the loader PyTorch uses).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <pnn/pnn.hpp>
#include <sstream>
#include <string>
#include <vector>

using namespace pnn;

namespace {

using Net = BasicSequential<float, cpu, Input<4>, Dense<3>, ReLU, Dense<2>>;

// A fresh directory under the system's temporary directory, removed with everything in it.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("pnn-test-safetensors-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

std::vector<unsigned char> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

std::string little_endian_u64(std::uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A file with the given header text and `data_bytes` bytes of data (the header length field is the
// header's size unless `declared_length` overrides it).
void write_handmade(const std::filesystem::path& path, const std::string& header, std::size_t data_bytes,
                    std::uint64_t declared_length = ~std::uint64_t{0}) {
  const std::uint64_t length = declared_length == ~std::uint64_t{0} ? header.size() : declared_length;
  write_bytes(path, little_endian_u64(length) + header + std::string(data_bytes, '\x5a'));
}

// The message of the IoError read_safetensors throws for the file, or "" if it throws none.
std::string read_error(const std::filesystem::path& path) {
  try {
    read_safetensors(path);
  } catch (const IoError& error) {
    return error.what();
  }
  return "";
}

std::vector<std::uint32_t> parameter_bits(const Net& net) {
  std::vector<std::uint32_t> bits;
  for (const auto& parameter : net.parameters())
    for (pnn::index i = 0; i < parameter.value.size(); ++i)
      bits.push_back(std::bit_cast<std::uint32_t>(parameter.value[i]));
  return bits;
}

std::vector<std::byte> as_byte_vector(std::initializer_list<int> values) {
  std::vector<std::byte> bytes;
  for (int value : values) bytes.push_back(static_cast<std::byte>(value));
  return bytes;
}

// pnn's Python environment, which scripts/install-deps.sh makes with the safetensors package; the python3
// on PATH may be another (pyenv's) without it.
std::string python() {
  const std::filesystem::path environment = PNN_SOURCE_DIR "/.venv/bin/python3";
  return std::filesystem::exists(environment) ? "'" + environment.string() + "'" : std::string("python3");
}

bool python_safetensors_available() {
  return std::system((python() + " -c 'import safetensors.numpy' >/dev/null 2>&1").c_str()) == 0;
}
const bool python_safetensors = python_safetensors_available();

// Runs a Python program (given as a file) and returns what it printed; the test fails if it fails.
std::string run_python(const TemporaryDirectory& directory, const std::string& program, const std::string& arguments) {
  const auto script = directory / "program.py";
  const auto output = directory / "output.txt";
  write_bytes(script, program);
  const std::string command =
      python() + " '" + script.string() + "' " + arguments + " > '" + output.string() + "' 2>&1";
  const int status = std::system(command.c_str());
  const auto printed = read_bytes(output);
  const std::string text(printed.begin(), printed.end());
  INFO("python printed: " << text);
  REQUIRE(status == 0);
  return text;
}

}  // namespace

TEST_CASE("safetensors.model_round_trip_is_bit_exact") {
  TemporaryDirectory directory;
  const auto path = directory / "model.safetensors";
  Net saved(1);
  Net loaded(2);
  REQUIRE(parameter_bits(saved) != parameter_bits(loaded));

  save_parameters<float>(path, saved.parameters());
  load_parameters<float>(path, loaded.parameters());
  CHECK(parameter_bits(loaded) == parameter_bits(saved));

  SUBCASE("through the model's save and load") {
    Net other(3);
    saved.initialize(4);
    save(saved, path);
    load(other, path);
    CHECK(parameter_bits(other) == parameter_bits(saved));
    CHECK(parameter_bits(other) != parameter_bits(loaded));
  }
}

TEST_CASE("safetensors.double_model_round_trip_and_dtype_mismatch") {
  TemporaryDirectory directory;
  using DoubleNet = Net::with_scalar<double>;
  DoubleNet saved(1), loaded(2);
  save(saved, directory / "double.safetensors");
  load(loaded, directory / "double.safetensors");
  for (std::size_t p = 0; p < saved.parameters().size(); ++p)
    for (pnn::index i = 0; i < saved.parameters()[p].value.size(); ++i)
      CHECK(std::bit_cast<std::uint64_t>(loaded.parameters()[p].value[i]) ==
            std::bit_cast<std::uint64_t>(saved.parameters()[p].value[i]));
  const auto file = read_safetensors(directory / "double.safetensors");
  REQUIRE(file.find("0.weight"));
  CHECK(file.find("0.weight")->dtype == "F64");

  Net single(1);
  const auto before = parameter_bits(single);
  CHECK_THROWS_WITH_AS(load(single, directory / "double.safetensors"),
                       doctest::Contains("tensor \"0.weight\" is F64 in the file but F32 in the model"), IoError);
  CHECK(parameter_bits(single) == before);
}

TEST_CASE("safetensors.file_bytes_follow_the_format") {
  TemporaryDirectory directory;
  const auto path = directory / "model.safetensors";
  Net net(5);
  save(net, path);
  const auto bytes = read_bytes(path);
  REQUIRE(bytes.size() >= 8);
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
  CHECK(header_length % 8 == 0);  // padded so the data starts 8-byte aligned
  REQUIRE(8 + header_length <= bytes.size());
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_length));
  CHECK(header.front() == '{');
  CHECK(header[header.find_last_not_of(' ')] == '}');  // then only the padding
  // Dense<3> on 4 inputs: weight [3, 4] (48 bytes), bias [3]; Dense<2> on 3: weight [2, 3], bias [2].
  CHECK(header.find("\"__metadata__\":{\"format\":\"pt\",\"framework\":\"pnn\"}") != std::string::npos);
  CHECK(header.find("\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}") != std::string::npos);
  CHECK(header.find("\"0.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]}") != std::string::npos);
  CHECK(header.find("\"2.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[60,84]}") != std::string::npos);
  CHECK(header.find("\"2.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[84,92]}") != std::string::npos);
  CHECK(bytes.size() == 8 + header_length + 92);

  // The data: each parameter's floats, little-endian, in the order of the offsets.
  std::size_t at = 8 + header_length;
  for (const auto& parameter : net.parameters()) {
    for (pnn::index i = 0; i < parameter.value.size(); ++i, at += 4) {
      const std::uint32_t stored = std::uint32_t{bytes[at]} | std::uint32_t{bytes[at + 1]} << 8 |
                                   std::uint32_t{bytes[at + 2]} << 16 | std::uint32_t{bytes[at + 3]} << 24;
      CHECK(stored == std::bit_cast<std::uint32_t>(parameter.value[i]));
    }
  }
  CHECK(at == bytes.size());
}

TEST_CASE("safetensors.records_round_trip") {
  TemporaryDirectory directory;
  const auto path = directory / "records.safetensors";
  const std::vector<TensorRecord> records = {
      {"counts", "I64", {2}, as_byte_vector({1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})},
      {"mask", "U8", {1, 3}, as_byte_vector({1, 0, 1})},
      {"scalar", "BF16", {}, as_byte_vector({0x80, 0x3f})},
      {"empty", "F32", {0, 5}, {}},
      {"odd \"name\"\n", "F16", {2}, as_byte_vector({0, 0x3c, 0, 0xc0})},
  };
  const std::map<std::string, std::string> metadata = {{"note", "quotes \" and \\ and \t"}, {"unicode", "h\xc3\xa9"}};
  write_safetensors(path, records, metadata);
  CHECK((std::filesystem::file_size(path) - 25) % 8 == 0);  // 8 + padded header, then 16 + 3 + 2 + 0 + 4 data bytes
  const SafetensorsFile file = read_safetensors(path);
  CHECK(file.metadata == metadata);
  REQUIRE(file.tensors.size() == records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    CAPTURE(records[i].name);
    CHECK(file.tensors[i].name == records[i].name);  // in offset order, which is the order written
    CHECK(file.tensors[i].dtype == records[i].dtype);
    CHECK(file.tensors[i].shape == records[i].shape);
    CHECK(file.tensors[i].data == records[i].data);
  }
  CHECK(file.find("scalar") == &file.tensors[2]);
  CHECK(file.find("absent") == nullptr);
}

TEST_CASE("safetensors.writer_rejects_invalid_records") {
  TemporaryDirectory directory;
  const auto path = directory / "bad.safetensors";
  auto write = [&](std::vector<TensorRecord> records) { write_safetensors(path, records); };
  CHECK_THROWS_WITH_AS(write({{"x", "F32", {3}, as_byte_vector({0, 0, 0, 0})}}),
                       doctest::Contains("tensor \"x\" has 4 bytes of data, but shape [3] of F32"), ArgumentError);
  CHECK_THROWS_WITH_AS(write({{"x", "F17", {1}, as_byte_vector({0})}}),
                       doctest::Contains("\"F17\", which is not a safetensors dtype"), ArgumentError);
  CHECK_THROWS_WITH_AS(write({{"x", "U8", {1}, as_byte_vector({0})}, {"x", "U8", {1}, as_byte_vector({0})}}),
                       doctest::Contains("tensor \"x\" appears twice"), ArgumentError);
  CHECK_THROWS_WITH_AS(write({{"__metadata__", "U8", {1}, as_byte_vector({0})}}),
                       doctest::Contains("reserved for the metadata"), ArgumentError);
  CHECK(directory.entries().empty());
}

TEST_CASE("safetensors.writes_are_atomic") {
  TemporaryDirectory directory;
  Net net(1);

  SUBCASE("no temporary file remains after a save") {
    save(net, directory / "model.safetensors");
    save(net, directory / "model.safetensors");
    CHECK(directory.entries() == std::vector<std::string>{"model.safetensors"});
  }
  SUBCASE("a missing directory is an error naming the path, and leaves nothing behind") {
    const auto path = directory / "missing" / "model.safetensors";
    CHECK_THROWS_WITH_AS(save(net, path), doctest::Contains(path.string().c_str()), IoError);
    CHECK_THROWS_WITH_AS(save(net, path), doctest::Contains("No such file or directory"), IoError);
    CHECK(directory.entries().empty());
  }
  SUBCASE("an existing file is replaced wholesale") {
    const auto path = directory / "model.safetensors";
    write_bytes(path, std::string(100000, 'x'));  // longer than the model's file: no stale tail may survive
    save(net, path);
    Net loaded(2);
    load(loaded, path);
    CHECK(parameter_bits(loaded) == parameter_bits(net));
    CHECK(std::filesystem::file_size(path) < 1000);
    CHECK(directory.entries() == std::vector<std::string>{"model.safetensors"});
  }
  SUBCASE("a failed rename removes the temporary file and leaves the target alone") {
    const auto path = directory / "model.safetensors";
    std::filesystem::create_directory(path);  // a directory cannot be renamed over
    write_bytes(path / "inside", "kept");
    CHECK_THROWS_WITH_AS(save(net, path), doctest::Contains(path.string().c_str()), IoError);
    CHECK(directory.entries() == std::vector<std::string>{"model.safetensors"});
    CHECK(std::filesystem::file_size(path / "inside") == 4);
  }
}

TEST_CASE("safetensors.failed_load_leaves_the_model_unchanged") {
  TemporaryDirectory directory;
  const auto path = directory / "model.safetensors";
  Net source(1), target(2);
  const auto before = parameter_bits(target);

  SUBCASE("a shape mismatch after tensors that match") {
    // Every tensor but the last is right, so a loader that copied as it checked would have changed them.
    std::vector<TensorRecord> records;
    for (const auto& parameter : source.parameters()) {
      const auto* bytes = reinterpret_cast<const std::byte*>(parameter.value.data());
      records.push_back({parameter.name(), "F32", parameter.declaration.shape,
                         std::vector<std::byte>(bytes, bytes + parameter.value.size() * 4)});
    }
    records.back().shape = {1, 2};
    write_safetensors(path, records);
    CHECK_THROWS_WITH_AS(load(target, path),
                         doctest::Contains("tensor \"2.bias\" has shape [1, 2] in the file but [2] in the model"),
                         IoError);
    CHECK_THROWS_WITH_AS(load(target, path), doctest::Contains(path.string().c_str()), IoError);
  }
  SUBCASE("a missing and an unexpected tensor, both reported") {
    std::vector<TensorRecord> records;
    for (const auto& parameter : source.parameters()) {
      const auto* bytes = reinterpret_cast<const std::byte*>(parameter.value.data());
      records.push_back({parameter.name(), "F32", parameter.declaration.shape,
                         std::vector<std::byte>(bytes, bytes + parameter.value.size() * 4)});
    }
    records[1].name = "0.offset";
    write_safetensors(path, records);
    CHECK_THROWS_WITH_AS(load(target, path), doctest::Contains("tensor \"0.bias\" (shape [3], F32) is missing"),
                         IoError);
    CHECK_THROWS_WITH_AS(
        load(target, path),
        doctest::Contains("the file holds tensor \"0.offset\" (shape [3], F32), which the model does not have"),
        IoError);
  }
  SUBCASE("a truncated file") {
    save(source, path);
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
    CHECK_THROWS_AS(load(target, path), IoError);
  }
  SUBCASE("a file that does not exist") {
    CHECK_THROWS_WITH_AS(load(target, directory / "absent.safetensors"),
                         doctest::Contains("absent.safetensors: No such file or directory"), IoError);
  }
  CHECK(parameter_bits(target) == before);
}

TEST_CASE("safetensors.reader_rejects_invalid_files") {
  TemporaryDirectory directory;
  const auto path = directory / "bad.safetensors";
  auto error_for = [&](const std::string& header, std::size_t data_bytes) {
    write_handmade(path, header, data_bytes);
    return read_error(path);
  };
  const std::string f32_x = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

  // A well-formed file of the same construction reads, so each error below is the one change it makes.
  write_handmade(path, f32_x + "}", 8);
  REQUIRE(read_error(path) == "");
  CHECK(read_safetensors(path).tensors.at(0).data.size() == 8);

  SUBCASE("too short for the header length") {
    write_bytes(path, std::string("\x08\0\0\0\0", 5));
    CHECK(read_error(path) ==
          "cannot read " + path.string() +
              ": the file is 5 bytes long, shorter than the 8-byte header length of a safetensors file");
  }
  SUBCASE("header length past the end of the file") {
    write_handmade(path, "{}", 0, 1000);
    CHECK(read_error(path) ==
          "cannot read " + path.string() + ": the header length 1000 is larger than the rest of the file (2 bytes)");
  }
  SUBCASE("absurd header length") {
    write_handmade(path, "{}", 0, 1ULL << 40);
    CHECK(read_error(path) == "cannot read " + path.string() +
                                  ": the header length 1099511627776 is larger than the "
                                  "limit of 100000000 bytes (is this a safetensors file?)");
  }
  SUBCASE("invalid JSON") {
    CHECK(error_for("{\"x\": {", 0) ==
          "cannot read " + path.string() + ": invalid JSON header at byte 7: the header ends in the middle of a value");
    CHECK_MESSAGE(error_for("{\"x\" {}}", 0).find("invalid JSON header at byte 5: expected ':'") != std::string::npos,
                  error_for("{\"x\" {}}", 0));
    CHECK(error_for(f32_x + ",}", 8).find("invalid JSON header at byte 54: expected a string key") !=
          std::string::npos);
    CHECK(error_for(f32_x + "} x", 8).find("unexpected characters after the header object") != std::string::npos);
    CHECK(error_for("{\"a\\q\": 1}", 0).find("invalid escape '\\q'") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"extra\":01}}", 1)
              .find("a number with a leading zero") != std::string::npos);
    CHECK(error_for("{\"__metadata__\": {\"a\": \"\x01\"}}", 0).find("control character") != std::string::npos);
    CHECK(error_for("{\"\\ud800\": 1}", 0).find("lone high surrogate") != std::string::npos);
    CHECK(error_for("{\"a\xff\": 1}", 0).find("not valid UTF-8") != std::string::npos);
    CHECK(error_for("", 0).find("not a JSON object") != std::string::npos);
    const std::string deep =
        "{\"x\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"extra\":" + std::string(100, '[') +
        std::string(100, ']') + "}}";
    CHECK(error_for(deep, 1).find("nested more than 64 deep") != std::string::npos);
  }
  SUBCASE("the header is not an object") {
    CHECK(error_for("[1, 2]", 0) == "cannot read " + path.string() + ": the header is not a JSON object");
  }
  SUBCASE("entries missing a field") {
    CHECK(error_for("{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8).find("tensor \"x\" has no \"dtype\"") !=
          std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8).find("tensor \"x\" has no \"shape\"") !=
          std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8).find("tensor \"x\" has no \"data_offsets\"") !=
          std::string::npos);
    CHECK(error_for("{\"x\": 3}", 0).find("tensor \"x\": its entry must be an object") != std::string::npos);
  }
  SUBCASE("fields of the wrong type") {
    CHECK(error_for("{\"x\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8)
              .find("tensor \"x\": \"dtype\" must be a string") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8)
              .find("tensor \"x\": \"shape\" must be an array of non-negative integers") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8)
              .find("tensor \"x\": each dimension of \"shape\" must be a non-negative integer") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8)
              .find("each dimension of \"shape\" must be a non-negative integer") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8)
              .find("tensor \"x\": \"data_offsets\" must hold two numbers [begin, end], not 1") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}", 8)
              .find("\"data_offsets\" must be an array [begin, end]") != std::string::npos);
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999999999999999999]}}", 8)
              .find("each of \"data_offsets\" does not fit in 64 bits") != std::string::npos);
    CHECK(error_for("{\"__metadata__\":{\"a\":1}}", 0).find("\"__metadata__\" must hold strings; \"a\" does not") !=
          std::string::npos);
    CHECK(error_for("{\"__metadata__\":[]}", 0).find("\"__metadata__\" must be an object of strings") !=
          std::string::npos);
  }
  SUBCASE("duplicate tensor names") {
    CHECK(error_for("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                    "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                    2)
              .find("the key \"x\" appears twice") != std::string::npos);
  }
  SUBCASE("unknown dtype") {
    CHECK(error_for("{\"x\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8) ==
          "cannot read " + path.string() + ": tensor \"x\" has unknown dtype \"F17\"");
  }
  SUBCASE("offsets out of range") {
    CHECK(error_for(f32_x + "}", 4) == "cannot read " + path.string() +
                                           ": tensor \"x\": data_offsets [0, 8] reach past the end of the data "
                                           "buffer (4 bytes)");
  }
  SUBCASE("reversed offsets") {
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8) ==
          "cannot read " + path.string() + ": tensor \"x\": data_offsets [8, 0] are reversed");
  }
  SUBCASE("data size differs from the shape") {
    CHECK(error_for("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8) ==
          "cannot read " + path.string() +
              ": tensor \"x\": data_offsets [0, 8] hold 8 bytes, but shape [3] of F32 needs 12");
    CHECK(error_for("{\"x\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8)
              .find("shape [4294967296, 4294967296] has too many elements") != std::string::npos);
  }
  SUBCASE("overlapping tensors") {
    CHECK(error_for("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                    12) == "cannot read " + path.string() + ": tensors \"a\" and \"b\" overlap in the data buffer");
  }
  SUBCASE("a gap between tensors") {
    CHECK(error_for("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                    20) == "cannot read " + path.string() +
                               ": bytes [8, 12) of the data buffer belong to no tensor (a gap before \"b\")");
    CHECK(error_for("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12)
              .find("bytes [0, 4) of the data buffer belong to no tensor") != std::string::npos);
  }
  SUBCASE("trailing bytes after the data") {
    CHECK(error_for(f32_x + "}", 12) == "cannot read " + path.string() +
                                            ": 4 trailing bytes after the last tensor's data (the data buffer "
                                            "holds 8 bytes of tensors, the file 12)");
  }
  SUBCASE("not a regular file") {
    CHECK(read_error(directory.path()) == "cannot read " + directory.path().string() + ": not a regular file");
  }
}

TEST_CASE("safetensors.reader_accepts_what_the_format_allows") {
  TemporaryDirectory directory;
  const auto path = directory / "lenient.safetensors";
  // Whitespace, escapes, unknown fields, null metadata, tensors listed out of offset order.
  write_handmade(
      path,
      " {\"__metadata__\": null, \"b\\u00e9\" : {\"data_offsets\": [1, 3], \"shape\": [1], \"dtype\": \"I16\","
      " \"future\": {\"x\": [true, false, null, -1.5e3]}},\n \"a\": {\"dtype\": \"U8\", \"shape\": [],"
      " \"data_offsets\": [0, 1]}}   ",
      3);
  const auto file = read_safetensors(path);
  CHECK(file.metadata.empty());
  REQUIRE(file.tensors.size() == 2);
  CHECK(file.tensors[0].name == "a");
  CHECK(file.tensors[0].shape.empty());
  CHECK(file.tensors[1].name == "b\xc3\xa9");
  CHECK(file.tensors[1].data.size() == 2);
}

namespace {
// Three input channels, so that a convolution's memory and file layouts differ; BatchNorm for its count.
using ConvNet = BasicSequential<float, cpu, Input<3, 4, 5>, Conv2D<2, 3, Pad<1>>, BatchNorm<>, Flatten, Dense<4>>;

float float_at(const TensorRecord& record, pnn::index i) {
  float value;
  std::memcpy(&value, record.data.data() + 4 * i, 4);
  return value;
}
}  // namespace

TEST_CASE("safetensors.files_hold_pytorchs_layouts") {
  TemporaryDirectory directory;
  const auto path = directory / "conv.safetensors";
  ConvNet net(4);
  Tensor<float, 2> x(Extents<2>{2, ConvNet::input_shape::size});
  for (pnn::index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(i % 7) - 3;
  for (int pass = 0; pass < 3; ++pass) net.forward(x.view(), /*training=*/true);  // three batches tracked
  save(net, path);
  const SafetensorsFile file = read_safetensors(path);

  // The convolution's weight: (F, C, K, K) in the file, as torch.nn.Conv2d's; (F, K, K, C) in memory.
  const TensorRecord* weight = file.find("0.weight");
  REQUIRE(weight);
  REQUIRE(weight->shape == std::vector<pnn::index>{2, 3, 3, 3});
  const auto& memory = net.parameters()[0].value;
  for (pnn::index f = 0; f < 2; ++f)
    for (pnn::index c = 0; c < 3; ++c)
      for (pnn::index kh = 0; kh < 3; ++kh)
        for (pnn::index kw = 0; kw < 3; ++kw) {
          CAPTURE(f);
          CAPTURE(c);
          CAPTURE(kh);
          CAPTURE(kw);
          CHECK(float_at(*weight, ((f * 3 + c) * 3 + kh) * 3 + kw) == memory[((f * 3 + kh) * 3 + kw) * 3 + c]);
        }

  // BatchNorm's num_batches_tracked: an int64 scalar counting the training passes, as PyTorch's.
  const TensorRecord* tracked = file.find("1.num_batches_tracked");
  REQUIRE(tracked);
  CHECK(tracked->dtype == "I64");
  CHECK(tracked->shape.empty());
  CHECK(tracked->data == as_byte_vector({3, 0, 0, 0, 0, 0, 0, 0}));
  CHECK(file.tensors.size() == 2 + 5 + 2);

  // Loading converts back: every value, count included, returns to memory bit for bit.
  ConvNet loaded(5);
  load(loaded, path);
  for (std::size_t p = 0; p < net.parameters().size(); ++p)
    for (pnn::index i = 0; i < net.parameters()[p].value.size(); ++i) {
      CAPTURE(net.parameters()[p].name());
      CHECK(std::bit_cast<std::uint32_t>(loaded.parameters()[p].value[i]) ==
            std::bit_cast<std::uint32_t>(net.parameters()[p].value[i]));
    }

  // A negative count is refused, naming the tensor, and nothing changes.
  std::vector<TensorRecord> records = file.tensors;
  for (auto& record : records)
    if (record.name == "1.num_batches_tracked")
      record.data = as_byte_vector({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  write_safetensors(directory / "negative.safetensors", records);
  ConvNet untouched(6);
  const ConvNet before(6);
  CHECK_THROWS_WITH_AS(load(untouched, directory / "negative.safetensors"),
                       doctest::Contains("tensor \"1.num_batches_tracked\" is a count but holds -1"), IoError);
  for (std::size_t p = 0; p < before.parameters().size(); ++p)
    for (pnn::index i = 0; i < before.parameters()[p].value.size(); ++i)
      CHECK(untouched.parameters()[p].value[i] == before.parameters()[p].value[i]);
}

TEST_CASE("safetensors.readable_by_python_safetensors" * doctest::skip(!python_safetensors)) {
  TemporaryDirectory directory;
  const auto path = directory / "model.safetensors";
  Net net(7);
  save(net, path);
  const std::string printed =
      run_python(directory,
                 "import sys\n"
                 "import safetensors, safetensors.numpy\n"
                 "tensors = safetensors.numpy.load_file(sys.argv[1])\n"
                 "for name in sorted(tensors):\n"
                 "    t = tensors[name]\n"
                 "    print(name, t.dtype, list(t.shape), *[repr(float(v)) for v in t.ravel()])\n"
                 "with safetensors.safe_open(sys.argv[1], 'np') as f:\n"
                 "    print('metadata', sorted(f.metadata().items()))\n",
                 "'" + path.string() + "'");
  std::istringstream lines(printed);
  std::map<std::string, std::string> by_name;
  for (std::string line; std::getline(lines, line);) by_name[line.substr(0, line.find(' '))] = line;
  CHECK(by_name["metadata"] == "metadata [('format', 'pt'), ('framework', 'pnn')]");
  for (const auto& parameter : net.parameters()) {
    CAPTURE(parameter.name());
    REQUIRE(by_name.count(parameter.name()));
    std::istringstream fields(by_name[parameter.name()]);
    std::string name, dtype, shape;
    fields >> name >> dtype;
    std::getline(fields, shape, ']');
    CHECK(dtype == "float32");
    std::string expected_shape = " [";
    for (std::size_t d = 0; d < parameter.declaration.shape.size(); ++d)
      expected_shape += std::string(d ? ", " : "") + std::to_string(parameter.declaration.shape[d]);
    CHECK(shape == expected_shape);
    for (pnn::index i = 0; i < parameter.value.size(); ++i) {
      std::string value;
      REQUIRE(static_cast<bool>(fields >> value));
      CHECK(std::strtod(value.c_str(), nullptr) == static_cast<double>(parameter.value[i]));  // repr is exact
    }
    std::string extra;
    CHECK_FALSE(static_cast<bool>(fields >> extra));
  }
}

TEST_CASE("safetensors.reads_files_written_by_python_safetensors" * doctest::skip(!python_safetensors)) {
  TemporaryDirectory directory;
  const auto path = directory / "from_python.safetensors";
  run_python(directory,
             "import sys\n"
             "import numpy as np, safetensors.numpy\n"
             "safetensors.numpy.save_file({'0.weight': np.arange(12, dtype=np.float32).reshape(3, 4) / 8,\n"
             "                             '0.bias': np.array([-1, 0.5, 2], dtype=np.float32),\n"
             "                             'step': np.array(7, dtype=np.int64),\n"
             "                             'half': np.array([1, -2], dtype=np.float16)},\n"
             "                            sys.argv[1], metadata={'format': 'pt'})\n",
             "'" + path.string() + "'");
  const auto file = read_safetensors(path);
  CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  REQUIRE(file.tensors.size() == 4);
  const TensorRecord* weight = file.find("0.weight");
  REQUIRE(weight);
  CHECK(weight->dtype == "F32");
  CHECK(weight->shape == std::vector<pnn::index>{3, 4});
  REQUIRE(weight->data.size() == 48);
  for (int i = 0; i < 12; ++i) {
    float value;
    std::memcpy(&value, weight->data.data() + 4 * i, 4);
    CHECK(value == static_cast<float>(i) / 8);
  }
  REQUIRE(file.find("step"));
  CHECK(file.find("step")->shape.empty());
  CHECK(file.find("step")->data == as_byte_vector({7, 0, 0, 0, 0, 0, 0, 0}));
  REQUIRE(file.find("half"));
  CHECK(file.find("half")->data == as_byte_vector({0x00, 0x3c, 0x00, 0xc0}));

  // A model with exactly these names and shapes loads from the file once the extra tensors are gone.
  std::vector<TensorRecord> model_tensors = {*file.find("0.weight"), *file.find("0.bias")};
  write_safetensors(directory / "layer.safetensors", model_tensors);
  BasicSequential<float, cpu, Input<4>, Dense<3>> layer(1);
  load(layer, directory / "layer.safetensors");
  CHECK(layer.parameters()[0].value[5] == 5.0f / 8);
  CHECK(layer.parameters()[1].value[0] == -1.0f);
  CHECK_THROWS_WITH_AS(load(layer, path), doctest::Contains("the file holds tensor \"step\""), IoError);
}
