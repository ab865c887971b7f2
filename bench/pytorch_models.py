#!/usr/bin/python3
"""PyTorch twins of pnn's example MLP, CNN and ResNet, trained the way pnn's fit() trains them, for side-by-side timing.

    /usr/bin/python3 bench/pytorch_models.py --model cnn --threads 1 [--steps 200] [--processes 2]

Models (examples/train_mlp.cpp, examples/train_cnn.cpp, examples/train_resnet.cpp):
    mlp       784-256-128-10, ReLU
    cnn       conv 5x5 1->16 pad 2, ReLU, maxpool 2, conv 5x5 16->32 pad 2, ReLU, maxpool 2, flatten,
              dense 128, ReLU, dense 10
    resnet    conv 3x3 1->16, BatchNorm, ReLU, a basic block of 16 channels, two down-sampling blocks (32, 64
              channels, stride 2, projection shortcuts), ReLU after each block, average pool 7, dense 10
    balanced  784-512-512-512-512-10 (bench/strategies_balanced.cpp)

Training matches pnn's: Fashion-MNIST from the IDX .gz files, pixels scaled to [0, 1], batch 64, SGD lr 0.05
momentum 0.9, softmax cross-entropy, a new shuffle each epoch. As in pnn's fit(), the timed loop includes the
batching (gathering the shuffled rows and converting bytes to floats, both kept as bytes in memory as pnn
does) and excludes evaluation. --steps N times N steps and extrapolates to an epoch; --warmup N runs N untimed
steps first.

--processes P trains with DistributedDataParallel (gloo) in P processes on one global batch of 64: rank r
takes rows [64 r / P, 64 (r + 1) / P) of every global batch, as pnn's DataParallel does; all ranks draw the
same shuffle. --processes 0 (the default) trains in this process without DDP.

Prints one line of JSON: seconds (timed loop), steps, seconds_per_step, seconds_per_epoch, test_accuracy
(after the timed steps), and the BLAS and thread settings.
"""

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def openblas_core_type():
    """OpenBLAS's kernel choice for this CPU: it misdetects some virtualised Zen parts, so name it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return None
    if "avx512f" in flags:
        return "SkylakeX"
    if "avx2" in flags:
        return "Haswell"
    return None


def configure_environment(threads):
    """Sets the BLAS and OpenMP thread counts; must run before torch (and its BLAS) is imported."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    core = openblas_core_type()
    if core and "OPENBLAS_CORETYPE" not in os.environ:
        os.environ["OPENBLAS_CORETYPE"] = core


def read_idx(path):
    """An IDX file (raw or .gz) as a numpy array of its shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).copy()  # writable, as torch wants
    if values.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {values.size} values")
    return values.reshape(dims)


def find(directory, name):
    for candidate in (os.path.join(directory, name), os.path.join(directory, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"cannot find {name}[.gz] in {directory}")


def load_fashion_mnist(directory):
    """(train_images, train_labels, test_images, test_labels): images as uint8 (count, 784), labels int64."""
    train_images = read_idx(find(directory, "train-images-idx3-ubyte"))
    train_labels = read_idx(find(directory, "train-labels-idx1-ubyte"))
    test_images = read_idx(find(directory, "t10k-images-idx3-ubyte"))
    test_labels = read_idx(find(directory, "t10k-labels-idx1-ubyte"))
    flat = lambda images: images.reshape(images.shape[0], -1)
    return flat(train_images), train_labels.astype(np.int64), flat(test_images), test_labels.astype(np.int64)


def build_model(name, torch):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "balanced":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "resnet":
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

        return nn.Sequential(nn.Unflatten(1, (1, 28, 28)),
                             nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), basic(16), nn.ReLU(),
                             downsampling(16, 32), nn.ReLU(), downsampling(32, 64), nn.ReLU(), nn.AvgPool2d(7),
                             nn.Flatten(), nn.Linear(64, 10))
    raise ValueError(f"unknown model {name}: mlp, cnn, resnet or balanced")


def train(args, rank=0, world=0, port=0):
    """Trains on rank `rank` of `world` DDP processes (world 0: no DDP); returns the result on rank 0."""
    configure_environment(args.threads)
    import torch
    import torch.nn.functional as functional

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    torch.manual_seed(args.seed)
    train_images, train_labels, test_images, test_labels = load_fashion_mnist(args.data)
    images = torch.from_numpy(train_images)  # uint8, converted per batch like pnn
    labels = torch.from_numpy(train_labels)

    model = build_model(args.model, torch)
    trained = model
    if world > 0:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        trained = DistributedDataParallel(model)  # broadcasts rank 0's weights
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.05, momentum=0.9)
    batch = args.batch
    samples = images.shape[0]
    steps_per_epoch = (samples + batch - 1) // batch
    parts = max(world, 1)

    def run(steps):
        """Runs `steps` optimiser steps (0: one epoch) from the start of an epoch; returns (steps, mean loss)."""
        generator = torch.Generator().manual_seed(args.seed)  # the same order on every rank
        order = torch.randperm(samples, generator=generator)
        limit = steps_per_epoch if steps <= 0 else min(steps, steps_per_epoch)
        loss_sum = 0.0
        for step in range(limit):
            rows = order[step * batch: (step + 1) * batch]
            count = rows.shape[0]
            mine = rows[count * rank // parts: count * (rank + 1) // parts]
            x = images.index_select(0, mine).to(torch.float32).div_(255.0)
            y = labels.index_select(0, mine)
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(trained(x), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()  # pnn's fit() reads every step's loss too
        return limit, loss_sum / max(limit, 1)

    model.train()
    if args.warmup > 0:
        run(args.warmup)
    if world > 0:
        torch.distributed.barrier()
    start = time.perf_counter()
    steps, train_loss = run(args.steps)
    seconds = time.perf_counter() - start

    result = None
    if rank == 0:
        model.eval()
        with torch.no_grad():
            x = torch.from_numpy(test_images).to(torch.float32).div_(255.0)
            predictions = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, x.shape[0], 1000)])
            accuracy = (predictions == torch.from_numpy(test_labels)).float().mean().item()
        result = {
            "framework": "pytorch", "torch": torch.__version__, "model": args.model,
            "strategy": "ddp" if world > 0 else "serial", "processes": world, "threads": args.threads,
            "batch": batch, "steps": steps, "seconds": seconds, "seconds_per_step": seconds / steps,
            "steps_per_epoch": steps_per_epoch, "seconds_per_epoch": seconds / steps * steps_per_epoch,
            "train_loss": train_loss, "test_accuracy": accuracy,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
            "blas": blas_name(torch),
        }
    if world > 0:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def blas_name(torch):
    """The BLAS, oneDNN and vector instructions this PyTorch computes with. Debian's torch links the generic
    libblas.so.3, which update-alternatives points at OpenBLAS or the reference implementation, so that one
    is named from the libraries loaded; the PyPI wheel links MKL and oneDNN statically, named by its build
    configuration."""
    found = []
    for line in torch.__config__.show().splitlines():
        line = line.strip().lstrip("- ")
        if "Math Kernel Library Version" in line:
            found.append("MKL " + line.split("Version", 1)[1].split()[0])
        elif line.startswith("Intel(R) MKL-DNN") or line.startswith("Intel(R) oneDNN"):
            found.append("oneDNN " + line.split()[2])
        elif line.startswith("CPU capability usage"):
            found.append(line.split(":", 1)[1].strip())
    if not any(name.startswith("MKL") for name in found):
        try:
            with open("/proc/self/maps") as maps:
                libraries = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
        except OSError:
            libraries = set()
        found = sorted(os.path.basename(path) for path in libraries if "cublas" not in path) + found
    return ", ".join(found) if found else "unknown"


def ddp_worker(rank, args, world, port, queue):
    try:
        result = train(args, rank, world, port)
        if rank == 0:
            queue.put(result)
    except BaseException as error:  # report, so the parent does not wait forever
        if rank == 0:
            queue.put({"error": f"rank {rank}: {error!r}"})
        raise


def free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "cnn", "resnet", "balanced"], required=True)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--steps", type=int, default=0, help="timed steps, extrapolated to an epoch (0: one epoch)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps before the timed ones")
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--processes", type=int, default=0, help="DDP processes (0: plain single process)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=os.environ.get("PNN_DATA") or DEFAULT_DATA)
    args = parser.parse_args()
    if args.threads < 1 or args.batch < 1 or args.processes < 0:
        parser.error("--threads and --batch must be positive, --processes not negative")

    if args.processes == 0:
        result = train(args)
    else:
        configure_environment(args.threads)  # inherited by the spawned processes
        import torch.multiprocessing as multiprocessing
        context = multiprocessing.get_context("spawn")
        queue = context.SimpleQueue()
        multiprocessing.spawn(ddp_worker, args=(args, args.processes, free_port(), queue), nprocs=args.processes,
                              join=True)
        result = queue.get()
        if "error" in result:
            sys.exit(f"pytorch_models.py: {result['error']}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
