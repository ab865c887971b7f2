// The binary-counter tree of core/canonical_sum.hpp: its shape for small counts, and its bits on values
// whose sum depends on the order.
#include <doctest/doctest.h>

#include <bit>
#include <cstdint>
#include <pnn/core/canonical_sum.hpp>
#include <string>
#include <vector>

using namespace pnn;

namespace {
// The tree over leaves named a, b, c, ... written out with parentheses.
std::string tree_shape(std::size_t leaves) {
  return binary_counter_tree(
      leaves, [](std::size_t i) { return std::string(1, static_cast<char>('a' + i)); },
      [](const std::string& left, const std::string& right) { return "(" + left + "+" + right + ")"; });
}
}  // namespace

TEST_CASE("canonical_sum.tree_shapes") {
  CHECK(tree_shape(1) == "a");
  CHECK(tree_shape(2) == "(a+b)");
  CHECK(tree_shape(3) == "((a+b)+c)");
  CHECK(tree_shape(4) == "((a+b)+(c+d))");
  CHECK(tree_shape(5) == "(((a+b)+(c+d))+e)");
  CHECK(tree_shape(6) == "(((a+b)+(c+d))+(e+f))");
  CHECK(tree_shape(7) == "(((a+b)+(c+d))+((e+f)+g))");
  CHECK(tree_shape(8) == "(((a+b)+(c+d))+((e+f)+(g+h)))");
  CHECK_THROWS_AS(tree_shape(0), ArgumentError);
}

TEST_CASE("canonical_sum.tree_sum_bits") {
  const std::vector<float> values{1e8f, 1.0f, -1e8f, 3.3f, 0.7f, -2.5e-3f};
  const float tree = (((values[0] + values[1]) + (values[2] + values[3])) + (values[4] + values[5]));
  float left_to_right = 0;
  for (float v : values) left_to_right += v;
  CHECK(std::bit_cast<std::uint32_t>(tree_sum(std::span<const float>(values))) == std::bit_cast<std::uint32_t>(tree));
  CHECK(std::bit_cast<std::uint32_t>(tree) != std::bit_cast<std::uint32_t>(left_to_right));  // the order shows
  CHECK(tree_sum(std::span<const double>()) == 0.0);
  static_assert(tree_sum(std::span<const int>(std::array{1, 2, 3})) == 6);
}

TEST_CASE("canonical_sum.elementwise_in_place") {
  // Three parts of two elements; the result overwrites the first part.
  std::vector<double> a{1e17, 1.0}, b{1.0, 1e17}, c{-1e17, -1e17};
  const double* parts[] = {a.data(), b.data(), c.data()};
  tree_sum_elementwise(std::span<const double* const>(parts), 2, a.data());
  CHECK(a[0] == (1e17 + 1.0) + -1e17);
  CHECK(a[1] == (1.0 + 1e17) + -1e17);
  // Slots as values: vectors summed in place along the same tree, the total in slot 0.
  std::vector<std::vector<double>> slots{{1, 2}, {3, 4}, {5, 6}};
  const std::size_t total = binary_counter_tree(
      slots.size(), [](std::size_t i) { return i; },
      [&](std::size_t left, std::size_t right) {
        for (std::size_t i = 0; i < 2; ++i) slots[left][i] += slots[right][i];
        return left;
      });
  CHECK(total == 0);
  CHECK(slots[0] == std::vector<double>{9, 12});
}
