// pnn/layers/sigmoid.hpp: Sigmoid, y = 1 / (1 + exp(-x)), with dy/dx = y (1 - y).
#pragma once

#include "pnn/layers/activation.hpp"

namespace pnn {

struct Sigmoid {
  static std::string name() { return "Sigmoid"; }
  template <class X>
  static auto function(const X& x) {
    return sigmoid(x);
  }
  template <class Y, class DY>
  static auto derivative_times(const Y& y, const DY& dy) {
    return dy * y * (1 - y);
  }
  template <class T, class D, class In>
  using layer = ElementwiseActivation<Sigmoid, T, D, In>;
};

static_assert(Layer<Sigmoid::layer<float, cpu, Shape<10>>>);

}  // namespace pnn
