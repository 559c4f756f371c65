"""Row-major against column-major linear weights on this CPU, side by side in one run:

- gemm: x [32, in] times W^T for the linear layers of the suite's networks, W [out, in] stored
  row-major (PyTorch's default) or column-major (agents.networks.column_major_weights);
- loop: agent steps per second of whole presets as they run (their network, replay, update period),
  with the agent's weights in either layout.

    python scripts/bench/linear_layout.py [--repeats 3] [--measure 1000]   -> results/bench/linear_layout.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import loop_rate, machine, rate, write  # noqa: E402

import agents.agent  # noqa: E402

# (batch, in, out): Nature CNN's hidden layer, data-efficient Rainbow's, MinAtar's.
SHAPES = {"nature_dqn_hidden": (32, 3136, 512), "der_hidden": (32, 576, 256), "minatar_hidden": (32, 1024, 128)}
PRESETS = {"nature_dqn": "pong", "der": "freeway", "minatar_dqn": "minatar_breakout"}
LAYOUTS = ("row_major", "column_major")


def gemm_rate(shape: tuple[int, int, int], layout: str, seconds: float) -> float:
    batch, n_in, n_out = shape
    x, weight = torch.randn(batch, n_in), torch.randn(n_out, n_in)
    if layout == "column_major":
        weight = weight.t().contiguous().t()
    return rate(lambda: torch.nn.functional.linear(x, weight), seconds)


def preset_rate(preset: str, game: str, layout: str, measure: int) -> float:
    keep = agents.agent.column_major_weights
    if layout == "row_major":
        agents.agent.column_major_weights = lambda module: module
    try:
        return loop_rate(preset, {"env.game": game}, learn_start=1_000, warm=200, measure=measure)
    finally:
        agents.agent.column_major_weights = keep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per gemm measurement")
    parser.add_argument("--measure", type=int, default=1_000, help="agent steps timed per preset run")
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    presets = {p: PRESETS[p] for p in args.presets.split(",")}
    gemm = {(s, lay): [] for s in SHAPES for lay in LAYOUTS}
    loop = {(p, lay): [] for p in presets for lay in LAYOUTS}
    for _ in range(args.repeats):  # alternated, so that machine noise hits both layouts alike
        for (s, lay), r in gemm.items():
            r.append(gemm_rate(SHAPES[s], lay, args.seconds))
        for (p, lay), r in loop.items():
            r.append(preset_rate(p, presets[p], lay, args.measure))

    def table(rates):
        median = {k: statistics.median(v) for k, v in rates.items()}
        names = sorted({k for k, _ in rates}, key=list(dict.fromkeys(k for k, _ in rates)).index)
        return {n: {"row_major": round(median[n, "row_major"], 1), "column_major": round(median[n, "column_major"], 1),
                    "column_over_row": round(median[n, "column_major"] / median[n, "row_major"], 2),
                    "repeats": {lay: [round(x, 1) for x in rates[n, lay]] for lay in LAYOUTS}} for n in names}

    write("linear_layout", {
        "what": "torch.nn.functional.linear(x, W) per second for [batch, in] x [out, in]^T, and whole presets' "
                "agent steps per second (1,000 steps before learning, 200 of learning, then the timed steps; no "
                "evaluation), with W row-major or column-major; one torch thread; medians of alternated repeats",
        "gemm_per_second": table(gemm),
        "preset_steps_per_second": table(loop),
        "shapes": {k: list(v) for k, v in SHAPES.items()},
        "games": presets,
        "command": " ".join(["python", "scripts/bench/linear_layout.py", *sys.argv[1:]]),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
