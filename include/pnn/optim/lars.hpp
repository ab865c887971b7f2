// pnn/optim/lars.hpp: LARS, layer-wise adaptive rate scaling for large-batch training (You et al., 2017).
//
// Each parameter tensor gets its own learning rate from the ratio of its weight norm to its gradient norm,
// so layers whose gradients are large relative to their weights do not diverge at large batch sizes:
//   trust = eta * ||w|| / (||g|| + weight_decay * ||w||)      (1 when either norm is 0)
//   v     = momentum * v + learning_rate * trust * (g + weight_decay * w)
//   w    -= v
// Biases and other one-dimensional parameters are commonly left out of the adaptation and the decay
// (skip_vectors, on by default): they then take plain momentum SGD steps.
#pragma once

#include <cmath>
#include <string>

#include "pnn/core/tensor.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

struct LARS {
  double learning_rate = 0.1;
  double momentum = 0.9;
  double weight_decay = 0;
  double eta = 0.001;        // the trust coefficient
  bool skip_vectors = true;  // no adaptation or decay for parameters with one dimension (biases)

  static std::string name() { return "LARS"; }
  std::string hyper_parameters() const {
    return detail::describe_hyper_parameters({{"learning_rate", learning_rate},
                                              {"momentum", momentum},
                                              {"weight_decay", weight_decay},
                                              {"eta", eta},
                                              {"skip_vectors", skip_vectors ? 1.0 : 0.0}});
  }

  void validate() const {
    detail::check_hyper_parameter(learning_rate > 0, "LARS", "learning_rate", learning_rate, "> 0");
    detail::check_hyper_parameter(momentum >= 0 && momentum < 1, "LARS", "momentum", momentum, "in [0, 1)");
    detail::check_hyper_parameter(weight_decay >= 0, "LARS", "weight_decay", weight_decay, ">= 0");
    detail::check_hyper_parameter(eta > 0, "LARS", "eta", eta, "> 0");
  }

  template <class T, class D>
  struct State {
    explicit State(index n) : velocity(Extents<1>{n}) {}
    Tensor<T, 1, D> velocity;
    // The tensors a checkpoint keeps, by name (S: State or const State).
    template <class S, class Visit>
    static void fields(S& state, Visit&& visit) {
      visit("velocity", state.velocity);
    }
  };

  // The layer-wise factor applied to the learning rate.
  template <class T, class D>
  double trust_ratio(TensorView<const T, 1, D> w, TensorView<const T, 1, D> g) const {
    const double weight_norm = std::sqrt(static_cast<double>(squared_norm(w)));
    const double gradient_norm = std::sqrt(static_cast<double>(squared_norm(g)));
    if (weight_norm == 0 || gradient_norm == 0) return 1;
    return eta * weight_norm / (gradient_norm + weight_decay * weight_norm);
  }

  template <class T, class D>
  void update(const Parameter<T, D>& parameter, State<T, D>& state, index) const {
    const TensorView<T, 1, D> w = parameter.value;
    const TensorView<const T, 1, D> g = parameter.gradient;
    const bool adapt = !(skip_vectors && parameter.declaration.shape.size() == 1);
    const double trust = adapt ? trust_ratio<T, D>(w, g) : 1.0;
    const T rate = static_cast<T>(learning_rate * trust);
    const T wd = adapt ? static_cast<T>(weight_decay) : T(0);
    const T mu = static_cast<T>(momentum);
    auto v = state.velocity.view();
    evaluate(into(v, mu * v + rate * (g + wd * w)), into(w, w - v));
  }
};

static_assert(UpdateRule<LARS>);

}  // namespace pnn
