// pnn/cpu/cpu.hpp: the CPU backend, pnn::cpu's side of every device seam (core/backend.hpp): host memory,
// the Eigen executor, the host clock, pnn's packed SGEMM, and the window kernels. Headers above core/
// that compute on the host include it; nothing in it knows about layers, models or strategies.
#pragma once

#include "pnn/core/backend.hpp"
#include "pnn/cpu/device.hpp"
#include "pnn/cpu/executor.hpp"
#include "pnn/cpu/kernels.hpp"
#include "pnn/cpu/linalg.hpp"
#include "pnn/cpu/timeline.hpp"

namespace pnn {

static_assert(Backend<cpu, float>, "the CPU backend must supply everything core/backend.hpp lists");
static_assert(Backend<cpu, double>, "the CPU backend must supply everything core/backend.hpp lists");

}  // namespace pnn
