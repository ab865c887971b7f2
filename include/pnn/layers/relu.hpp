// pnn/layers/relu.hpp: ReLU, y = max(x, 0).
#pragma once

#include "pnn/layers/activation.hpp"

namespace pnn {

struct ReLU {
  static std::string name() { return "ReLU"; }
  template <class X>
  static auto function(const X& x) {
    return relu(x);
  }
  template <class Y, class DY>
  static auto derivative_times(const Y& y, const DY& dy) {
    return dy * step(y);
  }
  template <class T, class D, class In>
  using layer = ElementwiseActivation<ReLU, T, D, In>;
};

static_assert(Layer<ReLU::layer<float, cpu, Shape<10>>>);

}  // namespace pnn
