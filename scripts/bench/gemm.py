"""Where a CPU learner's time goes: the Nature DQN update (batch 32, one thread) split by torch operator,
and the float32 matrix products of its fully connected layers timed in torch (the BLAS it was built
with, MKL on x86 wheels) beside numpy (OpenBLAS) on the same machine, GFLOP/s.

Every loop in scripts/bench/end_to_end.py (this suite's, SB3's, the CleanRL-style one) spends nearly
all its time in these same torch kernels, which is why none of them can be much faster than another on
a CPU; this measures how fast those kernels are here.

    python scripts/bench/gemm.py   -> results/bench/gemm.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, nature_update, rate, write  # noqa: E402

BATCH = 32
# The fully connected layers' products in a Nature DQN update, as (m, k, n) of an [m, k] @ [k, n]:
# forward 3136 -> 512, and backward's two products (input gradient and weight gradient).
SHAPES = {"fc_forward": (BATCH, 3136, 512), "fc_input_grad": (BATCH, 512, 3136),
          "fc_weight_grad": (512, BATCH, 3136), "square_1024": (1024, 1024, 1024)}


def gflops(fn, flops: float, repeats: int = 7, seconds: float = 0.5) -> float:
    """Median GFLOP/s over `repeats` timings of about `seconds` each."""
    return statistics.median(rate(fn, seconds) for _ in range(repeats)) * flops / 1e9


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
        "what": "float32 matrix products of a Nature DQN update's fully connected layers, torch (its BLAS) beside "
                "numpy (OpenBLAS), GFLOP/s, 1 thread, median of 7; and the update's operator time by kind",
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "numpy_blas": np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"],
        "products": products(),
        "update": update_split(),
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
    }
    write("gemm", result)


if __name__ == "__main__":
    main()
