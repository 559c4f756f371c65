"""Where a CPU learner's time goes, and how close to the machine's arithmetic rate it runs (one thread,
float32, batch 32):
- products: the fully connected layers' matrix products in torch (the BLAS it was built with, MKL on x86
  wheels) beside numpy (OpenBLAS), and a 1024x1024 product: the best rate a BLAS reaches on this core;
- layers: each layer of the Nature network forward and backward, GFLOP/s, with the convolutions' input in
  torch's default layout and channels-last;
- update: the suite's whole Nature DQN update (sampling and optimizer included), eager and compiled, as
  GFLOP/s of its network arithmetic, and its operator time split by kind.

Every loop in scripts/bench/end_to_end.py (this suite's, SB3's, the CleanRL-style one) spends nearly
all its time in these same torch kernels, which is why none of them can be much faster than another on
a CPU; this measures how fast those kernels are here.

    python scripts/bench/gemm.py   -> results/bench/gemm.json
"""

from __future__ import annotations

import os

# One thread for numpy's OpenBLAS, as for torch below (read when numpy is imported; unset, it takes a
# thread per core). Unpinned, numpy's products ran on both cores of a 2-core machine and seemed twice
# as fast as torch's (results/bench/gemm.json as of commit 6ea59f2 compared them so).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, nature_update, rate, write  # noqa: E402

BATCH = 32
# The fully connected layers' products in a Nature DQN update, as (m, k, n) of an [m, k] @ [k, n]:
# forward 3136 -> 512, and backward's two products (input gradient and weight gradient).
SHAPES = {"fc_forward": (BATCH, 3136, 512), "fc_input_grad": (BATCH, 512, 3136),
          "fc_weight_grad": (512, BATCH, 3136), "square_1024": (1024, 1024, 1024)}


# The Nature network's layers (Mnih et al. 2015) with the shape of their input, batch excluded.
LAYERS = {"conv1": ((4, 84, 84), lambda: nn.Conv2d(4, 32, 8, stride=4)),
          "conv2": ((32, 20, 20), lambda: nn.Conv2d(32, 64, 4, stride=2)),
          "conv3": ((64, 9, 9), lambda: nn.Conv2d(64, 64, 3, stride=1)),
          "fc1": ((3136,), lambda: nn.Linear(3136, 512)),
          "fc2": ((512,), lambda: nn.Linear(512, 6))}


def forward_flops(layer: nn.Module, out: torch.Tensor) -> float:
    """2 x the multiply-adds of a forward pass: each output sums in_channels x kernel area products."""
    if isinstance(layer, nn.Conv2d):
        return 2.0 * out.numel() * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    return 2.0 * out.numel() * layer.in_features


def update_flops() -> float:
    """A Nature DQN update's network arithmetic: the online and the target network forward, and the
    backward pass, whose weight gradient and input gradient each cost a forward's work, except that the
    first layer needs no input gradient (the frames are not learned)."""
    flops = {}
    for name, (shape, make) in LAYERS.items():
        layer = make()
        with torch.no_grad():
            flops[name] = forward_flops(layer, layer(torch.zeros(BATCH, *shape)))
    forward = sum(flops.values())
    return 2 * forward + (2 * forward - flops["conv1"])


def median_rate(fn, seconds: float, repeats: int = 7) -> float:
    """Median calls per second over `repeats` timings of about `seconds` each."""
    return statistics.median(rate(fn, seconds) for _ in range(repeats))


def gflops(fn, flops: float, seconds: float = 0.5) -> float:
    return median_rate(fn, seconds) * flops / 1e9


def products() -> dict:
    out = {}
    for name, (m, k, n) in SHAPES.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        an, bn = a.numpy(), b.numpy()
        flops = 2.0 * m * k * n
        torch_rate, numpy_rate = gflops(lambda a=a, b=b: a @ b, flops), gflops(lambda a=an, b=bn: a @ b, flops)
        out[name] = {"m_k_n": [m, k, n], "torch_gflops": round(torch_rate, 1), "numpy_gflops": round(numpy_rate, 1),
                     "torch_vs_numpy": round(torch_rate / numpy_rate, 2)}
    return out


def layers(seconds: float = 0.3) -> dict:
    """Each layer's forward pass and backward pass (weight and bias gradients, and the input's but for the
    first layer), GFLOP/s, median of 7; the backward's time is (forward + backward) - forward."""
    torch.manual_seed(0)
    out = {}
    for name, (shape, make) in LAYERS.items():
        layer = make()
        layouts = ("contiguous", "channels_last") if len(shape) == 3 else ("contiguous",)
        for layout in layouts:
            x = torch.rand(BATCH, *shape)
            if layout == "channels_last":
                layer, x = layer.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_(name != "conv1")
            with torch.no_grad():
                y = layer(x)
            flops, grad = forward_flops(layer, y), torch.ones_like(y)

            def forward(layer=layer, x=x):
                with torch.no_grad():
                    layer(x)

            def forward_backward(layer=layer, x=x, grad=grad):
                layer.zero_grad(set_to_none=True)  # as the update does: gradients are written, not added
                x.grad = None
                layer(x).backward(grad)

            forward_rate, both_rate = median_rate(forward, seconds), median_rate(forward_backward, seconds)
            backward_flops = flops * (1 if name == "conv1" else 2)
            out[f"{name}_{layout}" if len(layouts) > 1 else name] = {
                "forward_gflops": round(flops * forward_rate / 1e9, 1),
                "backward_gflops": round(backward_flops / (1 / both_rate - 1 / forward_rate) / 1e9, 1),
                "forward_ms": round(1e3 / forward_rate, 3),
                "backward_ms": round(1e3 / both_rate - 1e3 / forward_rate, 3)}
    return out


def update_rates(seconds: float = 3.0, repeats: int = 3) -> dict:
    """The suite's whole update (nature_update: sampling, loss, backward, centered RMSProp), eager and
    compiled, updates per second (median of `repeats`, alternated), and the GFLOP/s of its network
    arithmetic (update_flops) at that rate."""
    updates = {"eager": nature_update(compile=False), "compiled": nature_update(compile=True)}
    for update in updates.values():
        for _ in range(3):  # the compiled one compiles here
            update()
    rates = {name: [] for name in updates}
    for _ in range(repeats):
        for name, update in updates.items():
            rates[name].append(rate(update, seconds))
    flops = update_flops()
    out = {"gflop_per_update": round(flops / 1e9, 3)}
    for name, values in rates.items():
        out[f"{name}_updates_per_second"] = round(statistics.median(values), 2)
        out[f"{name}_gflops"] = round(statistics.median(values) * flops / 1e9, 1)
    return out


def update_split(steps: int = 20) -> dict:
    """Share of a Nature DQN update's operator time by kind of operator (torch.profiler, self CPU time):
    the suite's own update (nature_dqn's Huber loss and centered RMSProp), replay sampling in "other"."""
    update = nature_update()
    for _ in range(3):
        update()
    start = time.perf_counter()
    with profile() as prof:
        for _ in range(steps):
            update()
    per_update_ms = (time.perf_counter() - start) / steps * 1e3
    events = prof.key_averages()
    times = {e.key: e.self_cpu_time_total for e in events}
    total = sum(times.values())
    # The optimizer's step as a whole (on a CPU its multi-tensor ops run as per-tensor ops beneath it).
    step = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    groups = {"matrix_products": ("aten::mm", "aten::addmm"),
              "convolutions": ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution")}
    split = {g: round(sum(times.get(k, 0.0) for k in keys) / total, 3) for g, keys in groups.items()}
    split["optimizer_step"] = round(step / total, 3)
    split["other"] = round(1 - sum(split.values()), 3)
    return {"update_ms_profiled": round(per_update_ms, 1), "share_of_operator_time": split}


def main() -> None:
    torch.set_num_threads(1)
    result = {
        "what": "float32, 1 thread, batch 32: matrix products of a Nature DQN update's fully connected layers, "
                "torch (its BLAS) beside numpy (OpenBLAS), GFLOP/s, median of 7; the Nature network's layers "
                "forward and backward, GFLOP/s, median of 7; the suite's whole update eager and compiled, "
                "updates/s and GFLOP/s of its network arithmetic; the update's operator time by kind",
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "numpy_blas": np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"],
        "numpy_blas_threads": int(os.environ["OPENBLAS_NUM_THREADS"]),
        "products": products(),
        "layers": layers(),
        "update": {**update_rates(), **update_split()},
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
    }
    write("gemm", result)


if __name__ == "__main__":
    main()
