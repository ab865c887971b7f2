// pnn/loss/softmax_cross_entropy.hpp: softmax followed by cross-entropy, fused and numerically stable.
//
// For logits z and label c: loss = logsumexp(z) - z_c, computed with the row maximum subtracted so exp
// never overflows; the gradient is (softmax(z) - onehot(c)) / batch, batch being the global batch's rows. Fusing the
// two avoids the log of a rounded-to-zero probability that a separate softmax layer would give.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "pnn/core/config.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/loss/loss.hpp"

namespace pnn {

namespace detail {
// The argument checks of every device's softmax_cross_entropy (this one and include/pnn/cuda/loss.cuh).
template <class Logits, class Labels, class Gradient>
void check_softmax_cross_entropy(const Logits& logits, const Labels& labels, const Gradient& gradient,
                                 const BatchPart& part) {
  const index batch = logits.dim(0);
  PNN_CHECK(part.count == batch && part.begin >= 0 && part.begin + part.count <= part.batch, ShapeError,
            "softmax cross-entropy: ", batch, " rows of logits as rows [", part.begin, ", ", part.begin + part.count,
            ") of a batch of ", part.batch);
  PNN_CHECK(labels.size() == batch, ShapeError, "softmax cross-entropy: ", batch, " rows of logits but ", labels.size(),
            " labels");
  PNN_CHECK(!gradient || gradient.shape() == logits.shape(), ShapeError,
            "softmax cross-entropy: the gradient's shape differs from the logits'");
}

// Row i of a batch: its loss into `row_loss` and, unless `gradient` is null, its gradient row (scaled by
// `scale`, 1 / batch). The arithmetic of every device: the CPU loss below loops over the rows calling it,
// and include/pnn/cuda/loss.cuh's kernel is a grid-stride loop around it, so both give the same bits
// wherever the device's exp and log do. Returns false, writing nothing, when the label is outside
// [0, classes): the caller reports it (a device cannot throw).
template <class T>
PNN_HOST_DEVICE inline bool softmax_cross_entropy_row(const T* logits, const std::int32_t* labels, index i,
                                                      index classes, T scale, T* gradient, double& row_loss) {
  using std::exp;
  using std::log;
  const std::int32_t label = labels[i];
  if (label < 0 || label >= classes) return false;
  const T* z = logits + i * classes;
  T peak = z[0];
  for (index j = 1; j < classes; ++j) peak = z[j] > peak ? z[j] : peak;
  T denominator = 0;
  for (index j = 0; j < classes; ++j) denominator += exp(z[j] - peak);
  const T log_denominator = log(denominator);
  row_loss = static_cast<double>(log_denominator + peak - z[label]);
  if (gradient) {
    T* g = gradient + i * classes;
    for (index j = 0; j < classes; ++j) g[j] = exp(z[j] - peak - log_denominator) * scale;
    g[label] -= scale;
  }
  return true;
}
}  // namespace detail

// Softmax cross-entropy of rows [part.begin, part.begin + part.count) of a global batch of part.batch rows:
// returns the canonical sum of their losses (loss/loss.hpp) and writes their gradient, scaled by
// 1 / part.batch, into `gradient` unless that view is empty. Each row's loss is a double.
template <class T>
double softmax_cross_entropy_sum(TensorView<const T, 2, cpu> logits, TensorView<const std::int32_t, 1, cpu> labels,
                                 TensorView<T, 2, cpu> gradient, const BatchPart& part) {
  const index batch = logits.dim(0), classes = logits.dim(1);
  detail::check_softmax_cross_entropy(logits, labels, gradient, part);
  if (batch == 0) return 0;
  const T scale = T(1) / static_cast<T>(part.batch);
  std::vector<double> row_losses(static_cast<std::size_t>(batch));
  for (index i = 0; i < batch; ++i) {
    if (!detail::softmax_cross_entropy_row(logits.data(), labels.data(), i, classes, scale,
                                           gradient ? gradient.data() : nullptr,
                                           row_losses[static_cast<std::size_t>(i)]))
      throw ArgumentError(detail::concat("softmax cross-entropy: label ", labels[i], " of sample ", part.begin + i,
                                         " is outside [0, ", classes, ")"));
  }
  return detail::canonical_row_sum(row_losses.data(), part);
}

// The mean softmax cross-entropy of a batch held whole, and the gradient of that mean.
template <class T>
T softmax_cross_entropy(TensorView<const T, 2, cpu> logits, TensorView<const std::int32_t, 1, cpu> labels,
                        TensorView<T, 2, cpu> gradient) {
  const index batch = logits.dim(0);
  if (batch == 0) return T(0);
  return static_cast<T>(softmax_cross_entropy_sum<T>(logits, labels, gradient, BatchPart::whole(batch)) /
                        static_cast<double>(batch));
}

struct SoftmaxCrossEntropy {
  template <class T, class D>
  using target_type = TensorView<const std::int32_t, 1, D>;

  template <class T, class D>
  double sum(TensorView<const T, 2, D> logits, TensorView<const std::int32_t, 1, D> labels,
             TensorView<T, 2, D> gradient, const BatchPart& part) const {
    return softmax_cross_entropy_sum<T>(logits, labels, gradient, part);
  }
  template <class T, class D>
  T operator()(TensorView<const T, 2, D> logits, TensorView<const std::int32_t, 1, D> labels,
               TensorView<T, 2, D> gradient) const {
    return mean_loss(*this, logits, labels, gradient);
  }
};

static_assert(Loss<SoftmaxCrossEntropy, float, cpu>);

}  // namespace pnn
