// pnn/train/train_step.hpp: one optimiser step of a serial model on a batch.
//
//   const float loss = pnn::train_step(net, images, labels, optimizer, pnn::SoftmaxCrossEntropy{});
//
// Zeroes the gradients, runs forward through the model's own trace, evaluates the loss and its gradient,
// runs backward and updates every parameter; returns the batch's mean loss. Distributed models have
// their own overload (dist/distributed.hpp), so a training loop (train/fit.hpp) is written once for both.
//
// Gradient accumulation: with `part`, the inputs are rows [part.begin, part.begin + part.count) of a step's
// batch of part.batch rows, one of the passes that cover it in order (optim/gradient_accumulation.hpp).
// Only the pass that ends the batch updates the parameters (with the sum of every pass's gradients, as
// one pass over the whole batch would have them); each returns the mean loss of its own rows.
//   for (index begin = 0; begin < 4 * B; begin += B)
//     train_step(net, x.rows(begin, B), y.rows(begin, B), optimizer, loss, {4 * B, begin, B});
#pragma once

#include <utility>

#include "pnn/core/batch_sum.hpp"
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
      model.parameter_gradients();
    };

// The batch's views and the optimiser are named through M's types (not deduced), so a view of non-const
// elements converts as it would for a member function.
template <TrainableModel M, class LossFunction, class Rule>
typename M::value_type train_step(
    M& model, TensorView<const typename M::value_type, 2, typename M::device> inputs,
    typename LossFunction::template target_type<typename M::value_type, typename M::device> targets,
    Optimizer<Rule, typename M::value_type, typename M::device>& optimizer, const LossFunction& loss = {},
    BatchPart part = {}) {
  using T = typename M::value_type;
  using D = typename M::device;
  static_assert(Loss<LossFunction, T, D>, "train_step: the loss must satisfy pnn::Loss (loss/loss.hpp)");
  const index rows = inputs.dim(0);
  if (part.batch == 0) part = BatchPart::whole(rows);
  PNN_CHECK(part.count == rows, ArgumentError, "train_step: the pass is over ", part.count, " rows of the batch but ",
            rows, " rows of inputs were given");
  auto& trace = model.trace();
  model.zero_grad();
  // The pass's samples are rows [part.begin, ...) of the step's batch: their random draws (dropout) are
  // those any parallel strategy makes for them (layers/layer.hpp, Context).
  const auto output = model.forward(inputs, trace, true,
                                    PassKey{static_cast<std::uint64_t>(optimizer.steps()), part.begin, part.batch});
  trace.output_gradient.resize(output.shape());
  const double loss_sum = loss.sum(output, targets, trace.output_gradient.view(), part);
  model.backward(trace.output_gradient.view(), TensorView<T, 2, D>{}, trace);
  if (optimizer.accumulate(part, model.parameter_gradients())) optimizer.step(model.parameters());
  return rows > 0 ? static_cast<T>(loss_sum / static_cast<double>(rows)) : T(0);
}

}  // namespace pnn
