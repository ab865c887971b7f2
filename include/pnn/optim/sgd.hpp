// pnn/optim/sgd.hpp: stochastic gradient descent with momentum, Nesterov momentum and weight decay.
//
// The update follows PyTorch's torch.optim.SGD (dampening 0):
//   g' = g + weight_decay * w
//   v  = momentum * v + g'
//   w -= learning_rate * (nesterov ? g' + momentum * v : v)
// and is one fused pass over w, g and v.
#pragma once

#include <string>

#include "pnn/core/tensor.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

struct SGD {
  double learning_rate = 0.01;
  double momentum = 0;
  double weight_decay = 0;
  bool nesterov = false;

  static std::string name() { return "SGD"; }
  std::string hyper_parameters() const {
    return detail::describe_hyper_parameters({{"learning_rate", learning_rate},
                                              {"momentum", momentum},
                                              {"weight_decay", weight_decay},
                                              {"nesterov", nesterov ? 1.0 : 0.0}});
  }
  // Equal hyper-parameters: a captured training step (pnn/cuda/graph.cuh) re-captures when they change.
  bool operator==(const SGD&) const = default;

  void validate() const {
    detail::check_hyper_parameter(learning_rate > 0, "SGD", "learning_rate", learning_rate, "> 0");
    detail::check_hyper_parameter(momentum >= 0 && momentum < 1, "SGD", "momentum", momentum, "in [0, 1)");
    detail::check_hyper_parameter(weight_decay >= 0, "SGD", "weight_decay", weight_decay, ">= 0");
    detail::check_hyper_parameter(!nesterov || momentum > 0, "SGD", "momentum", momentum, "> 0 when nesterov is set");
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

  template <class T, class D>
  void update(const Parameter<T, D>& parameter, State<T, D>& state, index) const {
    const TensorView<T, 1, D> w = parameter.value;
    const TensorView<const T, 1, D> g = parameter.gradient;
    const T lr = static_cast<T>(learning_rate), mu = static_cast<T>(momentum), wd = static_cast<T>(weight_decay);
    auto decayed = g + wd * w;
    if (momentum == 0) {
      w = w - lr * decayed;
    } else if (nesterov) {
      auto v = state.velocity.view();
      evaluate(into(v, mu * v + decayed), into(w, w - lr * (decayed + mu * v)));
    } else {
      auto v = state.velocity.view();
      evaluate(into(v, mu * v + decayed), into(w, w - lr * v));
    }
  }
};

static_assert(UpdateRule<SGD>);

}  // namespace pnn
