// pnn/layers/tanh.hpp: Tanh, y = tanh(x), with dy/dx = 1 - y^2.
#pragma once

#include "pnn/layers/activation.hpp"

namespace pnn {

struct Tanh {
  static std::string name() { return "Tanh"; }
  template <class X>
  static auto function(const X& x) {
    return tanh(x);
  }
  template <class Y, class DY>
  static auto derivative_times(const Y& y, const DY& dy) {
    return dy * (1 - square(y));
  }
  template <class T, class D, class In>
  using layer = ElementwiseActivation<Tanh, T, D, In>;
};

static_assert(Layer<Tanh::layer<float, cpu, Shape<10>>>);

}  // namespace pnn
