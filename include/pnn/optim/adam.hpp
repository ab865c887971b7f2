// pnn/optim/adam.hpp: Adam, and AdamW with decoupled weight decay.
//
// Follows torch.optim.Adam / AdamW: with t the step number starting at 1,
//   g' = g + weight_decay * w                  (Adam; AdamW instead scales w by 1 - lr * weight_decay)
//   m  = beta1 m + (1 - beta1) g'
//   v  = beta2 v + (1 - beta2) g'^2
//   w -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + epsilon)
// as one fused pass over w, g, m and v.
#pragma once

#include <cmath>
#include <string>

#include "pnn/core/tensor.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

struct Adam {
  double learning_rate = 0.001;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // true: AdamW

  static std::string name() { return "Adam"; }
  std::string hyper_parameters() const {
    return detail::describe_hyper_parameters({{"learning_rate", learning_rate},
                                              {"beta1", beta1},
                                              {"beta2", beta2},
                                              {"epsilon", epsilon},
                                              {"weight_decay", weight_decay},
                                              {"decoupled_weight_decay", decoupled_weight_decay ? 1.0 : 0.0}});
  }

  void validate() const {
    detail::check_hyper_parameter(learning_rate > 0, "Adam", "learning_rate", learning_rate, "> 0");
    detail::check_hyper_parameter(beta1 >= 0 && beta1 < 1, "Adam", "beta1", beta1, "in [0, 1)");
    detail::check_hyper_parameter(beta2 >= 0 && beta2 < 1, "Adam", "beta2", beta2, "in [0, 1)");
    detail::check_hyper_parameter(epsilon > 0, "Adam", "epsilon", epsilon, "> 0");
    detail::check_hyper_parameter(weight_decay >= 0, "Adam", "weight_decay", weight_decay, ">= 0");
  }

  template <class T, class D>
  struct State {
    explicit State(index n) : first_moment(Extents<1>{n}), second_moment(Extents<1>{n}) {}
    Tensor<T, 1, D> first_moment, second_moment;
    // The tensors a checkpoint keeps, by name (S: State or const State).
    template <class S, class Visit>
    static void fields(S& state, Visit&& visit) {
      visit("first_moment", state.first_moment);
      visit("second_moment", state.second_moment);
    }
  };

  template <class T, class D>
  void update(const Parameter<T, D>& parameter, State<T, D>& state, index step) const {
    const TensorView<T, 1, D> w = parameter.value;
    const TensorView<const T, 1, D> g = parameter.gradient;
    const double t = static_cast<double>(step + 1);
    const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2), eps = static_cast<T>(epsilon);
    const T step_size = static_cast<T>(learning_rate / (1 - std::pow(beta1, t)));
    const T second_correction = static_cast<T>(1 / (1 - std::pow(beta2, t)));
    const T coupled = decoupled_weight_decay ? T(0) : static_cast<T>(weight_decay);
    const T shrink = decoupled_weight_decay ? static_cast<T>(1 - learning_rate * weight_decay) : T(1);
    auto m = state.first_moment.view();
    auto v = state.second_moment.view();
    auto decayed = g + coupled * w;
    evaluate(into(m, b1 * m + (1 - b1) * decayed), into(v, b2 * v + (1 - b2) * square(decayed)),
             into(w, shrink * w - step_size * m / (sqrt(v * second_correction) + eps)));
  }
};

static_assert(UpdateRule<Adam>);

}  // namespace pnn
