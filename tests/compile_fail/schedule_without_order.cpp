// A pipeline schedule is a policy that produces its own order: a type without one is refused with a
// sentence that says what to provide.
// expect-error: Schedule must satisfy pnn::PipelineSchedule
// expect-max-errors: 2
#include <pnn/dist.hpp>
#include <pnn/pnn.hpp>

using Mlp = pnn::Sequential<pnn::Input<12>, pnn::Dense<10>, pnn::Tanh, pnn::Dense<8>, pnn::ReLU, pnn::Dense<4>>;

struct Interleaved {  // names itself, but says nothing of the order of its passes
  static constexpr const char* name = "interleaved";
};

int main() {
  pnn::Distributed<Mlp, pnn::Pipeline<pnn::Split<3>, pnn::Microbatches<4>, Interleaved>> model(1, {.ranks = 2});
  return 0;
}
