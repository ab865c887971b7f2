// The canonical order of sums over a batch (core/batch_sum.hpp): the pieces of a part of a batch, the
// tree, and the property every strategy builds on: a batch cut into 2, 4 or 8 aligned parts, each part's
// gradients and loss computed on their own and added up in the tree, gives the whole batch's bits.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "support/gradient_check.hpp"

using namespace pnn;

namespace {
std::vector<pnn::index> piece_ends(const BatchPieces& pieces) {
  std::vector<pnn::index> ends;
  for (int i = 0; i < pieces.count; ++i) ends.push_back(pieces.end(i));
  return ends;
}

// Floats whose sums depend on their order: magnitudes from 1e-4 to 1e4, both signs.
Tensor<float, 1> wide_floats(pnn::index n, std::uint64_t seed) {
  Tensor<float, 1> values(Extents<1>{n});
  Generator random(seed);
  for (pnn::index i = 0; i < n; ++i) {
    const float magnitude = std::pow(10.0f, random.uniform<float>(-4, 4));
    values[i] = random.uniform<float>(-1, 1) < 0 ? -magnitude : magnitude;
  }
  return values;
}

bool same_bits(TensorView<const float, 1> a, TensorView<const float, 1> b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}
}  // namespace

TEST_CASE("batch_sum.pieces_of_a_whole_an_aligned_and_a_cut_part") {
  CHECK(piece_ends(batch_pieces(BatchPart::whole(64))) == std::vector<pnn::index>{8, 16, 24, 32, 40, 48, 56, 64});
  // Chunks of 60 rows: [0, 7), [7, 15), [15, 22), [22, 30), [30, 37), ...
  CHECK(piece_ends(batch_pieces(BatchPart::whole(60))) == std::vector<pnn::index>{7, 15, 22, 30, 37, 45, 52, 60});
  // Rank 1 of 2 holds chunks 4 to 7, rank 3 of 4 chunks 6 and 7.
  CHECK(piece_ends(batch_pieces({60, 30, 30})) == std::vector<pnn::index>{7, 15, 22, 30});
  CHECK(piece_ends(batch_pieces({60, 45, 15})) == std::vector<pnn::index>{7, 15});
  // Rank 1 of 3 starts inside chunk 2 and ends inside chunk 5.
  CHECK(piece_ends(batch_pieces({60, 20, 20})) == std::vector<pnn::index>{2, 10, 17, 20});
  // Fewer rows than chunks: empty chunks stay leaves, so a part's tree keeps serial training's shape.
  CHECK(piece_ends(batch_pieces(BatchPart::whole(4))) == std::vector<pnn::index>{0, 1, 1, 2, 2, 3, 3, 4});
  CHECK(piece_ends(batch_pieces({4, 2, 2})) == std::vector<pnn::index>{0, 1, 1, 2});
  CHECK(batch_pieces({4, 2, 0}).count == 0);
  CHECK_THROWS_AS(batch_pieces({4, 3, 2}), ArgumentError);
}

TEST_CASE("batch_sum.subtrees_add_up_to_the_whole_tree") {
  constexpr pnn::index n = 4096;
  std::vector<Tensor<float, 1>> leaves;
  for (int i = 0; i < 8; ++i) leaves.push_back(wide_floats(n, 11 + static_cast<std::uint64_t>(i)));
  auto tree = [&](int first, int count) {
    BatchSum<float, cpu> sum;
    sum.start(n);
    for (int i = first; i < first + count; ++i) {
      copy(TensorView<const float, 1>(leaves[static_cast<std::size_t>(i)].view()), sum.leaf());
      sum.push();
    }
    return Tensor<float, 1>(sum.total());
  };
  const Tensor<float, 1> whole = tree(0, 8);
  // The balanced tree, written out.
  Tensor<float, 1> expected(Extents<1>{n}), left_to_right(Extents<1>{n});
  for (pnn::index k = 0; k < n; ++k) {
    auto v = [&](int i) { return leaves[static_cast<std::size_t>(i)][k]; };
    expected[k] = ((v(0) + v(1)) + (v(2) + v(3))) + ((v(4) + v(5)) + (v(6) + v(7)));
    float running = 0;
    for (int i = 0; i < 8; ++i) running += v(i);
    left_to_right[k] = running;
  }
  CHECK(same_bits(whole.view(), expected.view()));
  CHECK_FALSE(same_bits(whole.view(), left_to_right.view()));  // the order shows in these values
  // Two halves and four quarters, each summed on its own, added in the tree's upper levels.
  Tensor<float, 1> halves(tree(0, 4).view() + tree(4, 4).view());
  Tensor<float, 1> quarters((tree(0, 2).view() + tree(2, 2).view()) + (tree(4, 2).view() + tree(6, 2).view()));
  CHECK(same_bits(whole.view(), halves.view()));
  CHECK(same_bits(whole.view(), quarters.view()));
  // The scalar tree is the same tree.
  for (pnn::index k = 0; k < 16; ++k) {
    ScalarTreeSum<float> scalar;
    for (int i = 0; i < 8; ++i) scalar.push(leaves[static_cast<std::size_t>(i)][k]);
    CHECK(scalar.total() == whole[k]);
  }
}

namespace {
using Mlp = Sequential<Input<20>, Dense<24>, ReLU, Dropout<25>, Dense<16>, Tanh, Dense<5>>;
using Cnn = Sequential<Input<2, 8, 8>, Conv2D<4, 3, Pad<1>>, ReLU, MaxPool2D<2>, Conv2D<6, 3>, ReLU, Flatten, Dense<5>>;

struct Data {
  Tensor<float, 2> inputs;
  Tensor<std::int32_t, 1> labels;
};
Data random_data(pnn::index rows, pnn::index features, std::uint64_t seed) {
  Data data{Tensor<float, 2>(rows, features), Tensor<std::int32_t, 1>(Extents<1>{rows})};
  Generator random(seed);
  for (pnn::index i = 0; i < data.inputs.size(); ++i) data.inputs[i] = random.uniform<float>(-1, 1);
  for (pnn::index i = 0; i < rows; ++i) data.labels[i] = static_cast<std::int32_t>(random.below(5));
  return data;
}

double relative_difference(TensorView<const float, 1> a, TensorView<const float, 1> b) {
  double scale = 0, difference = 0;
  for (pnn::index i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    difference = std::max(difference, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return difference / scale;
}

struct PartResult {
  Tensor<float, 1> gradients;
  double loss_sum;
};

// Gradients and loss sum of rows [begin, begin + count) of a batch, computed on their own.
template <class Net>
PartResult part_gradients(Net& net, const Data& data, pnn::index batch, pnn::index begin, pnn::index count) {
  typename Net::Trace trace;
  net.zero_grad();
  const auto output = net.forward(data.inputs.view().rows(begin, count), trace, true, PassKey{3, begin, batch});
  trace.output_gradient.resize(output.shape());
  const double loss = SoftmaxCrossEntropy{}.sum(output, data.labels.view().rows(begin, count),
                                                trace.output_gradient.view(), BatchPart{batch, begin, count});
  net.backward(trace.output_gradient.view(), TensorView<float, 2>{}, trace);
  return {Tensor<float, 1>(net.parameter_gradients()), loss};
}

// A batch cut into `parts` parts, each part's gradients and loss added up in the tree,
// against the whole batch's.
template <class Net>
void check_parts(pnn::index batch, int parts, bool exact) {
  CAPTURE(batch);
  CAPTURE(parts);
  const auto data = random_data(batch, Net::input_shape::size, 17);
  Net net(5);
  const PartResult whole = part_gradients(net, data, batch, 0, batch);
  BatchSum<float, cpu> gradients;
  gradients.start(whole.gradients.size());
  ScalarTreeSum<double> loss;
  for (int r = 0; r < parts; ++r) {
    const pnn::index begin = batch * r / parts, end = batch * (r + 1) / parts;  // as data parallelism cuts
    const PartResult part = part_gradients(net, data, batch, begin, end - begin);
    copy(TensorView<const float, 1>(part.gradients.view()), gradients.leaf());
    gradients.push();
    loss.push(part.loss_sum);
  }
  const Tensor<float, 1> total(gradients.total());
  if (exact) {
    CHECK(same_bits(total.view(), whole.gradients.view()));
    CHECK(loss.total() == whole.loss_sum);
  } else {
    CHECK(relative_difference(total.view(), whole.gradients.view()) < 1e-5);
  }
}
}  // namespace

TEST_CASE("canonical_sums.aligned_parts_of_a_batch_add_up_to_its_bits") {
  for (const pnn::index batch : {pnn::index{64}, pnn::index{60}, pnn::index{13}, pnn::index{5}}) {
    for (const int parts : {2, 4, 8}) {
      check_parts<Mlp>(batch, parts, true);
      check_parts<Cnn>(batch, parts, true);
    }
    check_parts<Mlp>(batch, 3, false);  // 3 does not divide the 8 chunks: the same to rounding only
  }
}

TEST_CASE("canonical_sums.column_sums_in_one_pass_add_up_leaves_in_the_tree") {
  // The CPU's one-pass column sums against leaves summed by add_column_sums and added up by BatchSum.
  for (const BatchPart part : {BatchPart::whole(64), BatchPart::whole(5), BatchPart{60, 20, 20}, BatchPart{60, 30, 30}})
    for (const pnn::index rows_per_sample : {pnn::index{1}, pnn::index{3}}) {
      CAPTURE(part.count);
      CAPTURE(rows_per_sample);
      const pnn::index rows = part.count * rows_per_sample, columns = 37;
      Tensor<float, 2> m(rows, columns);
      const auto values = wide_floats(rows * columns, 3);
      for (pnn::index i = 0; i < m.size(); ++i) m[i] = values[i];
      Tensor<float, 1> actual(wide_floats(columns, 4)), expected(actual);
      const BatchPieces pieces = batch_pieces(part);
      BatchSum<float, cpu> sum;
      add_batch_column_sums<float>(TensorView<const float, 2>(m.view()), actual.view(), pieces, rows_per_sample, sum);
      sum.start(columns);
      for (int piece = 0; piece < pieces.count; ++piece) {
        const pnn::index begin = pieces.begin(piece) * rows_per_sample;
        add_column_sums<float>(
            TensorView<const float, 2>(m.view()).rows(begin, pieces.end(piece) * rows_per_sample - begin),
            sum.zeroed_leaf());
        sum.push();
      }
      sum.add_to(expected.view());
      CHECK(same_bits(actual.view(), expected.view()));
    }
}
