// The finite-difference gradient checker every layer and loss passes (after dlib's test_layer).
//
// For a model (usually one layer) in double precision it checks, against central differences of
// f = sum(r * forward(x)) with a random r:
//   - the input gradient, which backward must ASSIGN: dx is pre-filled with garbage;
//   - every trainable parameter's gradient, which backward must ADD: the gradients are pre-filled with
//     random values that must still be there, plus the true gradient, afterwards;
//   - that asking for no input gradient (an empty dx) leaves the parameter gradients the same.
// Randomness inside the pass (dropout) is replayed identically for every evaluation of f.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <pnn/pnn.hpp>
#include <sstream>
#include <string>

namespace pnn::testing {

struct GradientCheckOptions {
  index batch = 3;
  std::uint64_t seed = 7;
  double epsilon = 1e-6;
  double relative_tolerance = 1e-5;
  double absolute_tolerance = 1e-7;
  bool training = true;
  double input_scale = 1.0;
};

struct Mismatches {
  index count = 0;
  std::string first;
  void compare(const std::string& what, index i, double analytic, double numeric, const GradientCheckOptions& o) {
    const double error = std::abs(analytic - numeric);
    if (error <= o.absolute_tolerance + o.relative_tolerance * std::abs(numeric)) return;
    if (count++ == 0) {
      std::ostringstream s;
      s << what << "[" << i << "]: backward gives " << analytic << ", finite differences give " << numeric;
      first = s.str();
    }
  }
};

template <class Model>
void check_gradients(const GradientCheckOptions& options = {}) {
  using T = typename Model::value_type;
  static_assert(std::is_same_v<T, double>, "check gradients in double precision");
  constexpr index in = Model::input_shape::size, out = Model::output_shape::size;
  Model model(options.seed);
  typename Model::Trace trace;
  Generator data(options.seed + 1);

  Tensor<T, 2> x(options.batch, in), r(options.batch, out);
  for (index i = 0; i < x.size(); ++i) x[i] = options.input_scale * data.uniform<T>(-1, 1);
  for (index i = 0; i < r.size(); ++i) r[i] = data.uniform<T>(-1, 1);
  const Generator pass_random = Generator(options.seed).split(streams::dropout);

  auto objective = [&] {
    Generator random = pass_random;
    model.layers().forward(x.view(), trace, Context{options.training, &random});
    return static_cast<double>(sum(trace.output() * r));
  };
  auto run_backward = [&](TensorView<T, 2> dx) {
    Generator random = pass_random;
    Context context{options.training, &random};
    model.layers().forward(x.view(), trace, context);
    model.layers().backward(r.view(), dx, trace, context);
  };

  // Analytic gradients on top of random prior contents.
  auto gradients = model.parameter_gradients();
  Tensor<T, 1> prior(gradients.shape());
  for (index i = 0; i < prior.size(); ++i) prior[i] = data.uniform<T>(-1, 1);
  gradients = prior;
  Tensor<T, 2> dx(options.batch, in);
  dx = dx * 0.0 + 1e30;  // garbage that an assigning backward overwrites
  run_backward(dx.view());
  Tensor<T, 1> analytic = gradients - prior;

  // Without an input gradient, the parameter gradients must be the same.
  gradients = prior;
  run_backward(TensorView<T, 2>{});
  Tensor<T, 1> without_dx = gradients - prior;
  for (index i = 0; i < analytic.size(); ++i)
    REQUIRE_MESSAGE(std::abs(analytic[i] - without_dx[i]) <= 1e-12 * (1 + std::abs(analytic[i])),
                    "parameter gradients change when no input gradient is requested, at flat index " << i);

  Mismatches mismatches;
  for (index i = 0; i < x.size(); ++i) {
    const T saved = x[i];
    x[i] = saved + options.epsilon;
    const double plus = objective();
    x[i] = saved - options.epsilon;
    const double minus = objective();
    x[i] = saved;
    mismatches.compare("input gradient", i, dx[i], (plus - minus) / (2 * options.epsilon), options);
  }
  for (const auto& p : model.parameters()) {
    if (!p.trainable()) continue;
    const index offset = p.gradient.data() - gradients.data();
    for (index i = 0; i < p.value.size(); ++i) {
      const T saved = p.value[i];
      p.value[i] = saved + options.epsilon;
      const double plus = objective();
      p.value[i] = saved - options.epsilon;
      const double minus = objective();
      p.value[i] = saved;
      mismatches.compare(p.name(), i, analytic[offset + i], (plus - minus) / (2 * options.epsilon), options);
    }
  }
  CHECK_MESSAGE(mismatches.count == 0, mismatches.count << " gradient mismatches; first: " << mismatches.first);
}

// Checks one layer spec on one input shape.
template <class Spec, class InputShape>
void check_layer(const GradientCheckOptions& options = {}) {
  check_gradients<BasicSequential<double, cpu, InputFor<InputShape>, Spec>>(options);
}

// Checks a loss's gradient against finite differences of its value.
template <class LossFunction, class Target>
void check_loss(const LossFunction& loss, Tensor<double, 2>& output, const Target& target) {
  Tensor<double, 2> gradient(output.shape());
  loss(TensorView<const double, 2>(output), target, gradient.view());
  Mismatches mismatches;
  GradientCheckOptions options;
  for (index i = 0; i < output.size(); ++i) {
    const double saved = output[i];
    output[i] = saved + options.epsilon;
    const double plus = loss(TensorView<const double, 2>(output), target, TensorView<double, 2>{});
    output[i] = saved - options.epsilon;
    const double minus = loss(TensorView<const double, 2>(output), target, TensorView<double, 2>{});
    output[i] = saved;
    mismatches.compare("loss gradient", i, gradient[i], (plus - minus) / (2 * options.epsilon), options);
  }
  CHECK_MESSAGE(mismatches.count == 0, mismatches.count << " loss gradient mismatches; first: " << mismatches.first);
}

}  // namespace pnn::testing
