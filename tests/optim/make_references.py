#!/usr/bin/env python3
"""Prints the PyTorch reference values that tests/optim/test_optimizers.cpp embeds.

Not run by the test suite (CI has no PyTorch); run it by hand after changing a case here, and paste its
output over the block between the "generated" markers in test_optimizers.cpp:

    /usr/bin/python3 tests/optim/make_references.py     # Debian's python3-torch

Every case starts from the same parameters, a 3x4 weight and a bias of 3, and applies STEPS updates from
a fixed sequence of gradients. Inputs are small dyadic fractions given by integer formulas, so the C++
test builds bit-identical inputs without a data file (test_optimizers.cpp repeats the four formulas
below; keep the two in step). Everything is float64.

SGD, Adam and AdamW come from torch.optim. torch has no LARS, so lars() below implements the update
directly from the formula documented in include/pnn/optim/lars.hpp (You et al., 2017): an independent
implementation to check pnn's against, not a copy of its code.
"""
import torch

STEPS = 5
WEIGHT_SHAPE = (3, 4)
BIAS_SIZE = 3


# ----- inputs (repeated in test_optimizers.cpp) ------------------------------------------------------------
def initial_weight(i):  # i: flat row-major index; never zero
    return (2 * ((7 * i + 3) % 13) - 13) / 16


def initial_bias(j):
    return (2 * ((5 * j + 1) % 7) - 7) / 16


def weight_gradient(i, step):
    return (((3 * i + 5 * step + 2) % 11) - 5) / 4


def bias_gradient(j, step):
    return (((4 * j + 3 * step + 1) % 9) - 4) / 4


class Inputs:
    """The parameters and gradients of one case. zero_case: the weight's gradient is zero on the first step
    and the bias starts at zero, so LARS takes its trust-1 path for both norms."""

    def __init__(self, zero_case=False):
        self.zero_case = zero_case

    def parameters(self):
        weight = torch.tensor([initial_weight(i) for i in range(12)], dtype=torch.float64).reshape(WEIGHT_SHAPE)
        bias = torch.tensor([0.0 if self.zero_case else initial_bias(j) for j in range(BIAS_SIZE)],
                            dtype=torch.float64)
        return weight.requires_grad_(), bias.requires_grad_()

    def gradients(self, step):
        weight = torch.tensor([0.0 if (self.zero_case and step == 0) else weight_gradient(i, step)
                               for i in range(12)], dtype=torch.float64).reshape(WEIGHT_SHAPE)
        bias = torch.tensor([bias_gradient(j, step) for j in range(BIAS_SIZE)], dtype=torch.float64)
        return weight, bias


# ----- torch.optim -----------------------------------------------------------------------------------------
def run_torch(make_optimizer, learning_rates=None, inputs=Inputs()):
    """Runs STEPS steps; learning_rates, if given, is the rate of each step (a schedule)."""
    weight, bias = inputs.parameters()
    optimizer = make_optimizer([weight, bias])
    for step in range(STEPS):
        if learning_rates is not None:
            for group in optimizer.param_groups:
                group["lr"] = learning_rates[step]
        weight.grad, bias.grad = inputs.gradients(step)
        optimizer.step()
    return weight.detach(), bias.detach(), optimizer.state


# ----- LARS, from the formula in lars.hpp ------------------------------------------------------------------
def lars(learning_rate, momentum, weight_decay, eta, skip_vectors, inputs=Inputs()):
    weight, bias = (p.detach().clone() for p in inputs.parameters())
    velocities = [torch.zeros_like(weight), torch.zeros_like(bias)]
    for step in range(STEPS):
        for parameter, gradient, velocity in zip((weight, bias), inputs.gradients(step), velocities):
            if skip_vectors and parameter.dim() == 1:
                trust, decay = 1.0, 0.0
            else:
                weight_norm = torch.linalg.vector_norm(parameter).item()
                gradient_norm = torch.linalg.vector_norm(gradient).item()
                if weight_norm == 0 or gradient_norm == 0:
                    trust = 1.0
                else:
                    trust = eta * weight_norm / (gradient_norm + weight_decay * weight_norm)
                decay = weight_decay
            velocity.mul_(momentum).add_(learning_rate * trust * (gradient + decay * parameter))
            parameter.sub_(velocity)
    return weight, bias, velocities


# ----- printing --------------------------------------------------------------------------------------------
def cpp_list(values):
    # repr() of a Python float is the shortest string that reads back to the same double.
    return ", ".join(repr(float(x)) for x in values)


def print_case(name, weight, bias, comment):
    """A Values initialiser: the weight one matrix row per line, then the bias."""
    rows = [cpp_list(row) for row in weight.reshape(WEIGHT_SHAPE).tolist()]
    print(f"// {comment}")
    print(f"constexpr Values {name}{{{{")
    print(",\n".join(f"    {row}" for row in rows) + "},")
    print(f"    {{{cpp_list(bias.tolist())}}}}};")


def main():
    SGD, Adam, AdamW = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW
    print(f"// generated by tests/optim/make_references.py (torch {torch.__version__}, float64, {STEPS} steps)")

    w, b, _ = run_torch(lambda p: SGD(p, lr=0.1))
    print_case("sgd_plain", w, b, "SGD lr 0.1")
    w, b, state = run_torch(lambda p: SGD(p, lr=0.1, momentum=0.9))
    print_case("sgd_momentum", w, b, "SGD lr 0.1, momentum 0.9")
    weight_velocity = state[list(state.keys())[0]]["momentum_buffer"]
    bias_velocity = state[list(state.keys())[1]]["momentum_buffer"]
    print_case("sgd_momentum_velocity", weight_velocity, bias_velocity, "its momentum buffers")
    w, b, _ = run_torch(lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    print_case("sgd_nesterov", w, b, "SGD lr 0.1, momentum 0.9, nesterov")
    w, b, _ = run_torch(lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01))
    print_case("sgd_momentum_decay", w, b, "SGD lr 0.1, momentum 0.9, weight_decay 0.01")
    w, b, _ = run_torch(lambda p: SGD(p, lr=0.1, momentum=0.9), learning_rates=[0.1, 0.1, 0.05, 0.05, 0.05])
    print_case("sgd_momentum_schedule", w, b, "SGD momentum 0.9, lr 0.1 for two steps, then 0.05")

    w, b, state = run_torch(lambda p: Adam(p, lr=1e-2))
    print_case("adam", w, b, "Adam lr 1e-2, betas (0.9, 0.999), eps 1e-8")
    weight_state, bias_state = (state[key] for key in list(state.keys()))
    print_case("adam_first_moment", weight_state["exp_avg"], bias_state["exp_avg"], "its first moments")
    print_case("adam_second_moment", weight_state["exp_avg_sq"], bias_state["exp_avg_sq"], "its second moments")
    w, b, _ = run_torch(lambda p: Adam(p, lr=1e-2, weight_decay=0.01))
    print_case("adam_decay", w, b, "Adam lr 1e-2, weight_decay 0.01")
    w, b, _ = run_torch(lambda p: AdamW(p, lr=1e-2, weight_decay=0.01))
    print_case("adamw", w, b, "AdamW lr 1e-2, weight_decay 0.01")

    w, b, velocities = lars(0.5, 0.9, 0.01, 0.02, skip_vectors=True)
    print_case("lars", w, b, "LARS lr 0.5, momentum 0.9, weight_decay 0.01, eta 0.02, skip_vectors")
    print_case("lars_velocity", velocities[0], velocities[1], "its velocities")
    w, b, _ = lars(0.5, 0.9, 0.01, 0.02, skip_vectors=False)
    print_case("lars_all", w, b, "the same without skip_vectors: the bias is adapted and decayed too")
    w, b, _ = lars(0.5, 0.9, 0.01, 0.02, skip_vectors=False, inputs=Inputs(zero_case=True))
    print_case("lars_zero_norms", w, b,
               "the same with a zero weight gradient on step 0 and a zero initial bias (trust 1)")


if __name__ == "__main__":
    main()
