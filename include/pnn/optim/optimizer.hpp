// pnn/optim/optimizer.hpp: Optimizer<Rule>, which applies an update rule to every trainable parameter.
//
// A rule (SGD, Adam, LARS) is a small struct of hyper-parameters with a nested State, one per parameter
// tensor (velocity, moments), and an update() that is one fused pass over the tensor. The Optimizer owns
// the states, creates them on the first step, and counts steps (Adam's bias correction needs the count).
//
//   pnn::Optimizer<pnn::SGD> optimizer({.learning_rate = 0.05, .momentum = 0.9});
//   optimizer.step(model.parameters());
#pragma once

#include <concepts>
#include <span>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/parameter.hpp"
#include "pnn/cpu/cpu.hpp"  // optimisers update host tensors as well as device ones

namespace pnn {

template <class R, class T = float, class D = cpu>
concept UpdateRule =
    requires(const R& rule, const Parameter<T, D>& parameter, typename R::template State<T, D>& state, index step) {
      { R::name() } -> std::convertible_to<std::string>;
      rule.validate();
      typename R::template State<T, D>;
      rule.update(parameter, state, step);
    };

template <class Rule, class T = float, class D = cpu>
class Optimizer {
  static_assert(UpdateRule<Rule, T, D>,
                "Optimizer<Rule>: Rule must provide name(), validate(), State<T, D> and update(parameter, state, "
                "step); see optim/sgd.hpp for an example");

 public:
  using rule_type = Rule;
  using value_type = T;
  using device = D;

  Optimizer() { rule.validate(); }
  explicit Optimizer(const Rule& hyper_parameters) : rule(hyper_parameters) { rule.validate(); }

  // One update of every trainable parameter from its gradient.
  void step(std::span<const Parameter<T, D>> parameters) {
    rule.validate();  // the hyper-parameters may have been changed since the last step
    if (!started_) {
      for (const auto& p : parameters) states_.emplace_back(p.trainable() ? p.value.size() : 0);
      started_ = true;
    }
    PNN_CHECK(states_.size() == parameters.size(), ArgumentError, "Optimizer::step: called with ", parameters.size(),
              " parameters after ", states_.size(), " on earlier steps; use one optimizer per model");
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      const auto& p = parameters[i];
      if (!p.trainable()) continue;
      PNN_CHECK(states_[i].size == p.value.size(), ArgumentError, "Optimizer::step: parameter ", p.name(),
                " changed size since the first step");
      rule.update(p, states_[i].state, steps_);
    }
    ++steps_;
  }

  index steps() const { return steps_; }
  // Counts a step taken on this optimiser's behalf by copies of it that hold the state (a Distributed
  // model's ranks, dist/distributed.hpp), so that steps() reads as for a serial model.
  void count_step() { ++steps_; }
  // How often reset() was called: whoever holds the state's addresses (a captured CUDA graph) can tell
  // that they are gone, even after new steps have been taken.
  index resets() const { return resets_; }
  // Forgets momentum and moments, as if no step had been taken.
  void reset() {
    states_.clear();
    started_ = false;
    steps_ = 0;
    ++resets_;
  }

  Rule rule;  // hyper-parameters; may be changed between steps (a learning-rate schedule)

 private:
  struct Slot {
    explicit Slot(index n) : size(n), state(n) {}
    index size;
    typename Rule::template State<T, D> state;
  };
  std::vector<Slot> states_;
  bool started_ = false;
  index steps_ = 0;
  index resets_ = 0;
};

namespace detail {
inline void check_hyper_parameter(bool ok, const char* optimizer, const char* name, double value, const char* rule) {
  PNN_CHECK(ok, ArgumentError, optimizer, ": ", name, " = ", value, " is invalid; it must be ", rule);
}
}  // namespace detail

}  // namespace pnn
