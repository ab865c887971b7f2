// pnn/optim/optimizer.hpp: Optimizer<Rule>, which applies an update rule to every trainable parameter.
//
// A rule (SGD, Adam, LARS) is a small struct of hyper-parameters with a nested State, one per parameter
// tensor (velocity, moments), and an update() that is one fused pass over the tensor. The Optimizer owns
// the states, creates them on the first step, and counts steps (Adam's bias correction needs the count).
//
//   pnn::Optimizer<pnn::SGD> optimizer({.learning_rate = 0.05, .momentum = 0.9});
//   optimizer.step(model.parameters());
//
// A checkpoint (io/checkpoint.hpp) keeps what an optimiser carries between steps as OptimizerState: the
// step count and each State's tensors, which the State names with fields(state, visit).
//
// Two things happen to the gradient before the rule sees it, here so that every strategy does them at the
// same point (after its reduction over ranks) in the same way:
//   optimizer.clip_norm = 1.0;              clipping by global norm (optim/gradient_clipping.hpp)
//   optimizer.accumulate(part, gradients)   a step's batch in several passes (optim/gradient_accumulation.hpp)
// A learning-rate schedule changes rule.learning_rate between steps (optim/schedule.hpp, FitOptions::schedule).
#pragma once

#include <charconv>
#include <cmath>
#include <concepts>
#include <initializer_list>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pnn/core/error.hpp"
#include "pnn/core/batch_sum.hpp"
#include "pnn/core/parameter.hpp"
#include "pnn/cpu/cpu.hpp"  // optimisers update host tensors as well as device ones
#include "pnn/optim/gradient_accumulation.hpp"
#include "pnn/optim/gradient_clipping.hpp"

namespace pnn {

// What an optimiser carries from one step to the next, as a checkpoint keeps it: the step count, and a
// host copy of each field of each trainable parameter's State, named "<parameter>.<field>"
// ("0.weight.velocity"). Before the first step the fields are zeros, which is where a first step starts.
template <class T>
struct OptimizerState {
  index steps = 0;
  std::map<std::string, Tensor<T, 1>> tensors;
};

namespace detail {
// Stands for the visitor a State's fields(state, visit) is called with (in the concept below).
struct StateFieldVisitor {
  template <class Tensor>
  void operator()(const char* field, Tensor& tensor) const;
};
}  // namespace detail

template <class R, class T = float, class D = cpu>
concept UpdateRule =
    requires(const R& rule, const Parameter<T, D>& parameter, typename R::template State<T, D>& state, index step) {
      { R::name() } -> std::convertible_to<std::string>;
      { rule.hyper_parameters() } -> std::convertible_to<std::string>;
      rule.validate();
      typename R::template State<T, D>;
      R::template State<T, D>::fields(state, detail::StateFieldVisitor{});
      rule.update(parameter, state, step);
    };

template <class Rule, class T = float, class D = cpu>
class Optimizer {
  static_assert(UpdateRule<Rule, T, D>,
                "Optimizer<Rule>: Rule must provide name(), hyper_parameters(), validate(), State<T, D> with a "
                "static fields(state, visit), and update(parameter, state, step); see optim/sgd.hpp for an example");

 public:
  using rule_type = Rule;
  using value_type = T;
  using device = D;

  Optimizer() { rule.validate(); }
  explicit Optimizer(const Rule& hyper_parameters) : rule(hyper_parameters) { rule.validate(); }

  // One update of every trainable parameter from its gradient (clipped first, with clip_norm > 0).
  void step(std::span<const Parameter<T, D>> parameters) {
    step(parameters, clip_norm > 0 ? global_norm(gradient_squares(parameters)) : 0.0);
  }
  // The same for `parameters` that are part of a model (a pipeline stage's): `gradient_norm` is the whole
  // model's gradient norm, which clipping uses (ignored with clip_norm = 0).
  void step(std::span<const Parameter<T, D>> parameters, double gradient_norm) {
    rule.validate();  // the hyper-parameters may have been changed since the last step
    PNN_CHECK(clip_norm >= 0 && std::isfinite(clip_norm), ArgumentError, "Optimizer: clip_norm = ", clip_norm,
              " is invalid; it must be >= 0 (0: no clipping)");
    if (clip_norm > 0) clip_gradients(parameters, gradient_norm, clip_norm);
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

  // Gradient accumulation: takes the gradients (a model's flat gradient buffer) of the pass over rows
  // `part` of a step's batch; returns true when that pass ends the batch, `gradients` then holding the sum
  // over the step's passes, ready for step(). A pass over the whole batch returns true at once.
  bool accumulate(const BatchPart& part, TensorView<T, 1, D> gradients) { return accumulator_.add(part, gradients); }

  index steps() const { return steps_; }
  // Counts a step taken on this optimiser's behalf by copies of it that hold the state (a Distributed
  // model's ranks, dist/distributed.hpp), so that steps() reads as for a serial model.
  void count_step() { ++steps_; }
  // How often reset() was called: whoever holds the state's addresses (a captured CUDA graph) can tell
  // that they are gone, even after new steps have been taken.
  index resets() const { return resets_; }
  // Forgets momentum and moments, as if no step had been taken.
  void reset() {
    accumulator_.clear();
    states_.clear();
    started_ = false;
    steps_ = 0;
    ++resets_;
  }

  // The state for `parameters` (those step() is given), copied to the host: what a checkpoint keeps.
  OptimizerState<T> state(std::span<const Parameter<T, D>> parameters) const {
    PNN_CHECK(!started_ || states_.size() == parameters.size(), ArgumentError, "Optimizer::state: called with ",
              parameters.size(), " parameters, but the optimiser has stepped ", states_.size(),
              "; use one optimizer per model");
    OptimizerState<T> result{.steps = steps_, .tensors = {}};
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      const auto& p = parameters[i];
      if (!p.trainable()) continue;
      auto keep = [&](const char* field, const Tensor<T, 1, D>& tensor) {
        Tensor<T, 1> host(tensor.shape());
        copy(tensor.view(), host.view());  // from the device: defined by the device's headers
        result.tensors.insert_or_assign(p.name() + "." + field, std::move(host));
      };
      if (started_) {
        State::fields(states_[i].state, keep);
      } else {
        const State zeros(p.value.size());
        State::fields(zeros, keep);
      }
    }
    return result;
  }

  // Continues from `state` (another optimiser's state() for parameters of the same names and sizes, or a
  // larger model's: tensors of other parameters are ignored, so a pipeline stage takes its part of the
  // whole model's state). Every tensor is checked before anything changes: on error the optimiser is as
  // it was. A started optimiser keeps its tensors (their addresses, which a captured CUDA graph holds) and
  // takes the values.
  void set_state(std::span<const Parameter<T, D>> parameters, const OptimizerState<T>& state) {
    PNN_CHECK(!started_ || states_.size() == parameters.size(), ArgumentError, "Optimizer::set_state: called with ",
              parameters.size(), " parameters, but the optimiser has stepped ", states_.size(),
              "; use one optimizer per model");
    auto source = [&](const Parameter<T, D>& p, const char* field, index size) -> const Tensor<T, 1>& {
      const std::string name = p.name() + "." + field;
      const auto found = state.tensors.find(name);
      PNN_CHECK(found != state.tensors.end(), ArgumentError, "Optimizer<", Rule::name(),
                ">::set_state: the state has no tensor \"", name, "\"");
      PNN_CHECK(found->second.size() == size, ArgumentError, "Optimizer<", Rule::name(), ">::set_state: tensor \"",
                name, "\" has ", found->second.size(), " elements, the parameter ", size);
      return found->second;
    };
    std::vector<Slot> slots;  // the new state, when there is none to take the values
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      const auto& p = parameters[i];
      if (!started_) slots.emplace_back(p.trainable() ? p.value.size() : 0);
      if (!p.trainable()) continue;
      PNN_CHECK(!started_ || states_[i].size == p.value.size(), ArgumentError, "Optimizer::set_state: parameter ",
                p.name(), " changed size since the first step");
      State::fields(started_ ? states_[i].state : slots.back().state,
                    [&](const char* field, Tensor<T, 1, D>& tensor) { source(p, field, tensor.size()); });
    }
    // Checked: now nothing can fail.
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      if (!parameters[i].trainable()) continue;
      State::fields(started_ ? states_[i].state : slots[i].state, [&](const char* field, Tensor<T, 1, D>& tensor) {
        copy(source(parameters[i], field, tensor.size()).view(), tensor.view());  // to the device: its headers'
      });
    }
    if (!started_) states_ = std::move(slots);
    started_ = !parameters.empty();
    steps_ = state.steps;
  }

  Rule rule;  // hyper-parameters; may be changed between steps (a learning-rate schedule)
  // > 0: each update first scales the gradients so that their global L2 norm is at most this.
  double clip_norm = 0;

 private:
  using State = typename Rule::template State<T, D>;

  struct Slot {
    explicit Slot(index n) : size(n), state(n) {}
    index size;
    State state;
  };
  std::vector<Slot> states_;
  GradientAccumulator<T, D> accumulator_;
  bool started_ = false;
  index steps_ = 0;
  index resets_ = 0;
};

namespace detail {
inline void check_hyper_parameter(bool ok, const char* optimizer, const char* name, double value, const char* rule) {
  PNN_CHECK(ok, ArgumentError, optimizer, ": ", name, " = ", value, " is invalid; it must be ", rule);
}
// "learning_rate=0.05 momentum=0.9": a rule's hyper_parameters(), each value written so it reads back exactly.
inline std::string describe_hyper_parameters(std::initializer_list<std::pair<const char*, double>> values) {
  std::string text;
  for (const auto& [name, value] : values) {
    char digits[32];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    if (!text.empty()) text += ' ';
    text += std::string(name) + "=" + std::string(digits, end);
  }
  return text;
}
}  // namespace detail

}  // namespace pnn
