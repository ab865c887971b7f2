// pnn/loss/softmax_cross_entropy.hpp: softmax followed by cross-entropy, fused and numerically stable.
//
// For logits z and label c: loss = logsumexp(z) - z_c, computed with the row maximum subtracted so exp
// never overflows; the gradient is (softmax(z) - onehot(c)) / batch. Fusing the two avoids the log of a
// rounded-to-zero probability that a separate softmax layer would give.
#pragma once

#include <cmath>
#include <cstdint>

#include "pnn/core/config.hpp"
#include "pnn/core/error.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/loss/loss.hpp"

namespace pnn {

namespace detail {
// The argument checks of every device's softmax_cross_entropy (this one and include/pnn/cuda/loss.cuh).
template <class Logits, class Labels, class Gradient>
void check_softmax_cross_entropy(const Logits& logits, const Labels& labels, const Gradient& gradient) {
  const index batch = logits.dim(0);
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

// Mean softmax cross-entropy of a batch; writes its gradient into `gradient` unless that view is empty.
// The row losses are summed in double, in row order.
template <class T>
T softmax_cross_entropy(TensorView<const T, 2, cpu> logits, TensorView<const std::int32_t, 1, cpu> labels,
                        TensorView<T, 2, cpu> gradient) {
  const index batch = logits.dim(0), classes = logits.dim(1);
  detail::check_softmax_cross_entropy(logits, labels, gradient);
  if (batch == 0) return T(0);
  double total = 0;
  const T scale = T(1) / static_cast<T>(batch);
  for (index i = 0; i < batch; ++i) {
    double row_loss = 0;
    if (!detail::softmax_cross_entropy_row(logits.data(), labels.data(), i, classes, scale,
                                           gradient ? gradient.data() : nullptr, row_loss))
      throw ArgumentError(detail::concat("softmax cross-entropy: label ", labels[i], " of sample ", i,
                                         " is outside [0, ", classes, ")"));
    total += row_loss;
  }
  return static_cast<T>(total / static_cast<double>(batch));
}

struct SoftmaxCrossEntropy {
  template <class T, class D>
  using target_type = TensorView<const std::int32_t, 1, D>;

  template <class T, class D>
  T operator()(TensorView<const T, 2, D> logits, TensorView<const std::int32_t, 1, D> labels,
               TensorView<T, 2, D> gradient) const {
    return softmax_cross_entropy<T>(logits, labels, gradient);
  }
};

static_assert(Loss<SoftmaxCrossEntropy, float, cpu>);

}  // namespace pnn
