#!/usr/bin/env python3
"""PyTorch's training step time on the GPU for pnn's example MLP and CNN, the twin of bench/gpu/step_time.cu.

    python3 bench/gpu/pytorch_gpu.py [--models mlp,cnn] [--batches 64,512] [--modes eager,graph]
                                     [--steps 200] [--warmup 20] [--tf32] [--cudnn-benchmark]

Models: bench/pytorch_models.py's (MLP 784-256-128-10; CNN conv5x5 1->16 pad 2, ReLU, maxpool 2, conv5x5
16->32 pad 2, ReLU, maxpool 2, flatten, dense 128, ReLU, dense 10), PyTorch's default initialisation, SGD
lr 0.05 momentum 0.9 (PyTorch's default foreach implementation), cross-entropy. Modes:

    eager   the usual loop: zero_grad(set_to_none=True), forward, loss, backward, step; the loss stays on
            the device (no .item()), so the host never waits for the GPU inside the loop
    graph   the whole step captured with torch.cuda.graph after 3 warm-up steps on a side stream, as in
            PyTorch's "whole network capture" example; each step copies the batch into the static input
            and target tensors and replays

Data: synthetic, --staged batches of uniform [0, 1) inputs and uniform labels in [0, 10) on the device;
step i trains on batch i mod staged, as step_time.cu does. TF32 is off for matrix products and cuDNN
unless --tf32 (pnn's products are plain float by default; PyTorch enables TF32 in cuDNN by default).

Prints one JSON line per (model, batch, mode): median_ms and p10/p90 (CUDA events around each step on the
current stream) and wall_ms (host clock over the timed steps, ending with torch.cuda.synchronize()).
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bench/, for pytorch_models.build_model


def emit(**fields):
    print(json.dumps(fields), flush=True)


def quantile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def time_steps(torch, step, warmup, steps):
    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    start = time.perf_counter()
    events[0].record()
    for i in range(steps):
        step(warmup + i)
        events[i + 1].record()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) * 1e3 / steps
    times = [events[i].elapsed_time(events[i + 1]) for i in range(steps)]
    return {"median_ms": statistics.median(times), "p10_ms": quantile(times, 0.1), "p90_ms": quantile(times, 0.9),
            "wall_ms": wall, "steps": steps}


def run(torch, args, model_name, batch, mode):
    from pytorch_models import build_model
    functional = torch.nn.functional
    device = torch.device("cuda")
    torch.manual_seed(args.seed)
    model = build_model(model_name, torch).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    xs = [torch.rand(batch, 784, device=device, generator=generator) for _ in range(args.staged)]
    ys = [torch.randint(0, 10, (batch,), device=device, generator=generator) for _ in range(args.staged)]
    last_loss = {}

    if mode == "eager":
        def step(i):
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(model(xs[i % args.staged]), ys[i % args.staged])
            loss.backward()
            optimizer.step()
            last_loss["value"] = loss
    elif mode == "graph":
        static_x = xs[0].clone()
        static_y = ys[0].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                functional.cross_entropy(model(static_x), static_y).backward()
                optimizer.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = functional.cross_entropy(model(static_x), static_y)
            static_loss.backward()
            optimizer.step()

        def step(i):
            static_x.copy_(xs[i % args.staged])
            static_y.copy_(ys[i % args.staged])
            graph.replay()
            last_loss["value"] = static_loss
    else:
        raise ValueError(f"unknown mode {mode}: eager or graph")

    timing = time_steps(torch, step, args.warmup, args.steps)
    return dict(timing, final_loss=float(last_loss["value"].item()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--batches", default="64,512")
    parser.add_argument("--modes", default="eager,graph")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--staged", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in matrix products and cuDNN")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms first")
    args = parser.parse_args()

    try:
        import torch
    except ImportError as error:
        emit(program="pytorch_gpu", error=f"cannot import torch: {error}")
        sys.exit(2)
    if not torch.cuda.is_available():
        emit(program="pytorch_gpu", error=f"torch {torch.__version__} sees no CUDA device")
        sys.exit(2)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    emit(program="pytorch_gpu", device=torch.cuda.get_device_name(), torch=torch.__version__,
         cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), tf32=args.tf32,
         cudnn_benchmark=args.cudnn_benchmark, python=sys.executable)

    for model_name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for mode in args.modes.split(","):
                line = {"framework": "pytorch", "model": model_name, "batch": batch, "mode": mode}
                try:
                    line.update(run(torch, args, model_name, batch, mode))
                except Exception as error:  # report and go on with the other configurations
                    line["error"] = f"{type(error).__name__}: {error}"
                emit(**line)


if __name__ == "__main__":
    main()
