// pnn/train/train_step.hpp: one optimiser step of a serial model on a batch.
//
//   const float loss = pnn::train_step(net, images, labels, optimizer, pnn::SoftmaxCrossEntropy{});
//
// Zeroes the gradients, runs forward through the model's own trace, evaluates the loss and its gradient,
// runs backward and updates every parameter; returns the batch's mean loss. Distributed models have
// their own overload (dist/distributed.hpp), so a training loop (train/fit.hpp) is written once for both.
#pragma once

#include <utility>

#include "pnn/core/tensor.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/loss/loss.hpp"
#include "pnn/optim/optimizer.hpp"

namespace pnn {

// What a serial training step needs of a model: a forward and a backward pass through a trace, the
// gradients to zero, and the parameters to update.
template <class M>
concept TrainableModel =
    requires(M& model, TensorView<const typename M::value_type, 2, typename M::device> x, typename M::Trace& trace) {
      { model.trace() } -> std::same_as<typename M::Trace&>;
      model.zero_grad();
      model.forward(x, trace, true, PassKey{});
      model.parameters();
    };

// The batch's views and the optimiser are named through M's types (not deduced), so a view of non-const
// elements converts as it would for a member function.
template <TrainableModel M, class LossFunction, class Rule>
typename M::value_type train_step(
    M& model, TensorView<const typename M::value_type, 2, typename M::device> inputs,
    typename LossFunction::template target_type<typename M::value_type, typename M::device> targets,
    Optimizer<Rule, typename M::value_type, typename M::device>& optimizer, const LossFunction& loss = {}) {
  using T = typename M::value_type;
  using D = typename M::device;
  static_assert(Loss<LossFunction, T, D>, "train_step: the loss must satisfy pnn::Loss (loss/loss.hpp)");
  auto& trace = model.trace();
  model.zero_grad();
  // The step's samples are the whole batch, from row 0: their random draws (dropout) are those any
  // parallel strategy makes for them (layers/layer.hpp, Context).
  const auto output = model.forward(inputs, trace, true, PassKey{static_cast<std::uint64_t>(optimizer.steps()), 0});
  trace.output_gradient.resize(output.shape());
  const T value = mean_loss(loss, output, targets, trace.output_gradient.view());
  model.backward(trace.output_gradient.view(), TensorView<T, 2, D>{}, trace);
  optimizer.step(model.parameters());
  return value;
}

}  // namespace pnn
