"""How much of a run's learner state is denormal (nonzero and below float32's smallest normal, 1.2e-38):
the numbers for which a CPU takes a slow path at every operation unless `train.flush_denormal`
flushes them. Reads checkpoints; per tensor of the networks and the optimizer state, the fraction of
denormal and of zero elements.

    python scripts/bench/denormals.py RUN_DIR/checkpoints/ckpt-*.pt --out minatar_denormals
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def fractions(tree, prefix: str = "") -> dict[str, dict[str, float]]:
    """{path: {"denormal": fraction, "zero": fraction}} for every float32 tensor in a nested state."""
    if isinstance(tree, torch.Tensor):
        if tree.dtype != torch.float32 or tree.numel() < 2:
            return {}
        magnitude = tree.abs()
        return {prefix: {"denormal": round(((magnitude > 0) & (magnitude < SMALLEST_NORMAL)).float().mean().item(), 5),
                         "zero": round((magnitude == 0).float().mean().item(), 5)}}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else ()
    out = {}
    for key, value in items:
        out |= fractions(value, f"{prefix}/{key}")
    return out


def named_optimizer_state(agent: dict) -> dict:
    """The optimizer's per-parameter state keyed by the parameter's name (the optimizer numbers them in the
    network's parameter order, the order of its state_dict when the network has no buffers)."""
    optimizer, names = agent["optimizer"], list(agent["online"])
    indices = [i for group in optimizer["param_groups"] for i in group["params"]]
    if len(indices) != len(names):  # buffers in the state_dict: the numbers cannot be named safely
        return optimizer["state"]
    return {names[indices.index(i)]: value for i, value in optimizer["state"].items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", required=True, help="results/bench/<out>.json")
    args = parser.parse_args()
    result = {}
    for path in args.checkpoints:
        state = torch.load(path, map_location="cpu", weights_only=False)
        config = state["config"]
        result[str(path)] = {"step": state["loop"]["step"],
                             "flush_denormal": config["train"].get("flush_denormal", "absent (before the option)"),
                             "tensors": fractions({"networks": state["agent"]["online"],
                                                   "optimizer": named_optimizer_state(state["agent"])})}
    write(args.out, {"what": "fraction of denormal (0 < |x| < 1.2e-38) and zero elements of each float32 tensor of "
                             "the online network and the optimizer state, per checkpoint",
                     "machine": machine(), "command": " ".join(["python", "scripts/bench/denormals.py", *sys.argv[1:]]),
                     "checkpoints": result})


if __name__ == "__main__":
    main()
