#!/usr/bin/env python3
"""pnn's weights files against real PyTorch, both ways, for the example MLP, CNN and ResNet and a model of
every other layer type (tests/io/pytorch_interop.cpp holds the pnn side and says what each model is).

    check_pytorch_interop.py PATH/TO/pytorch_interop [MODEL...]

For each model:
  - pnn -> PyTorch: pnn saves its weights; the torch.nn module of the same layers loads them with
    load_state_dict(safetensors.torch.load_file(path), strict=True), and its logits in eval mode equal
    pnn's on the same inputs (to float rounding); BatchNorm's num_batches_tracked is the int64 count of
    the training passes pnn ran.
  - PyTorch -> pnn: PyTorch's state dict, after training passes that move BatchNorm's statistics, saved
    with safetensors.torch.save_file, loads into pnn with pnn::load, and pnn's logits equal PyTorch's.

Needs torch, numpy and safetensors: Debian's python3-torch and python3-numpy, and safetensors from PyPI,
in the virtual environment .venv that scripts/install-deps.sh makes (with the system's packages visible),
whose Python the test runs this with. Exits 77 (skipped), naming what is missing, without them.
"""

import os
import subprocess
import sys
import tempfile

def import_packages():
    """(torch, safetensors.torch), or exit 77 naming the missing package."""
    try:
        import numpy  # noqa: F401  safetensors.torch needs it
        import safetensors.torch
        import torch
        return torch, safetensors.torch
    except ImportError as error:
        print(f"skipped: Python module {error.name} is missing from {sys.executable} (scripts/install-deps.sh "
              "makes .venv with python3-torch, python3-numpy and safetensors)")
        sys.exit(77)


def build(name, nn):
    """The torch.nn twin of pnn_interop's model `name`, with the same names for every tensor."""

    class Residual(nn.Module):
        """pnn's Residual: body(x) + x, or body(x) + shortcut(x)."""

        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body = nn.Sequential(*body)
            self.shortcut = nn.Sequential(*shortcut) if shortcut else None

        def forward(self, x):
            return self.body(x) + (self.shortcut(x) if self.shortcut is not None else x)

    def basic(c):
        return Residual([nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)])

    def downsampling(c_in, c):
        return Residual([nn.Conv2d(c_in, c, 3, padding=1, stride=2), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)],
                        shortcut=[nn.Conv2d(c_in, c, 1, stride=2), nn.BatchNorm2d(c)])

    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)), (784,)
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)), (1, 28, 28)
    if name == "resnet":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), basic(16), nn.ReLU(),
                             downsampling(16, 32), nn.ReLU(), downsampling(32, 64), nn.ReLU(), nn.AvgPool2d(7),
                             nn.Flatten(), nn.Linear(64, 10)), (1, 28, 28)
    if name == "layers":
        return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6, eps=1e-3, momentum=0.25),
                             nn.Sigmoid(), nn.MaxPool2d(2, stride=1), nn.Conv2d(6, 5, 1), nn.AvgPool2d(2, stride=1),
                             nn.Flatten(), nn.Linear(30, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Dropout(0.2),
                             nn.Linear(12, 4)), (3, 9, 8)
    raise ValueError(f"unknown model {name}")


def largest_difference(torch, ours, theirs):
    """The largest |ours - theirs|, and whether every one is within float rounding of theirs."""
    difference = (ours.double() - theirs.double()).abs()
    bound = 1e-4 * theirs.double().abs().clamp(min=1.0)
    return difference.max().item(), bool((difference <= bound).all())


def pnn_to_pytorch(torch, st, program, name, directory):
    subprocess.run([program, name, "save", directory], check=True)
    model, _ = build(name, torch.nn)
    state = st.load_file(os.path.join(directory, "pnn_weights.safetensors"))
    model.load_state_dict(state, strict=True)  # raises, naming the keys, on any missing or unexpected tensor
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked") and (tensor.dtype != torch.int64 or tensor.item() != 3):
            return f"{key} is {tensor.dtype} {tensor.tolist()}, not the int64 count 3 of pnn's training passes"
    model.eval()
    x = st.load_file(os.path.join(directory, "pnn_inputs.safetensors"))["x"]
    expected = st.load_file(os.path.join(directory, "pnn_logits.safetensors"))["logits"]
    with torch.no_grad():
        logits = model(x)
    largest, close = largest_difference(torch, logits, expected)
    print(f"{name}: pnn -> PyTorch, largest logit difference {largest:.3g}")
    return None if close else f"PyTorch's logits differ from pnn's by up to {largest:.3g}"


def pytorch_to_pnn(torch, st, program, name, directory):
    torch.manual_seed(11)
    model, shape = build(name, torch.nn)
    model.train()
    with torch.no_grad():
        for step in range(3):  # BatchNorm's running statistics and counts move
            model(torch.rand(5, *shape) + step)
    model.eval()
    x = torch.rand(5, *shape)
    with torch.no_grad():
        logits = model(x)
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                 os.path.join(directory, "torch_weights.safetensors"))
    st.save_file({"x": x}, os.path.join(directory, "torch_inputs.safetensors"))
    st.save_file({"logits": logits}, os.path.join(directory, "torch_logits.safetensors"))
    result = subprocess.run([program, name, "check", directory], capture_output=True, text=True)
    print(f"{name}: PyTorch -> pnn, {result.stdout.strip()}{result.stderr.strip()}")
    return None if result.returncode == 0 else f"pnn could not load or reproduce PyTorch's model (exit {result.returncode})"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    torch, st = import_packages()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, safetensors from {os.path.dirname(st.__file__)}")
    program = os.path.abspath(sys.argv[1])
    failures = []
    for name in sys.argv[2:] or ["mlp", "cnn", "resnet", "layers"]:
        for direction in (pnn_to_pytorch, pytorch_to_pnn):
            with tempfile.TemporaryDirectory(prefix="pnn-interop-") as directory:
                try:
                    problem = direction(torch, st, program, name, directory)
                except Exception as error:  # a refused load_state_dict names the tensors
                    problem = f"{type(error).__name__}: {error}"
                if problem:
                    failures.append(f"{name}, {direction.__name__}: {problem}")
    for failure in failures:
        print("FAILED", failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
