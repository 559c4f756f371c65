"""Prioritized replay: sample(32) + update_priorities(32) per second at capacity 1,000,000, beside a
straightforward pure-Python binary sum tree of the same capacity, in the same run.

    python scripts/bench/per.py [--seconds 20]   -> results/bench/per.json
    python scripts/bench/per.py --device cuda --out per_gpu   (the tree and the frames on the GPU)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, rate, write  # noqa: E402

from agents.replay import PrioritizedReplay  # noqa: E402

CAPACITY, BATCH = 1_000_000, 32


class PythonSumTree:
    """The textbook binary sum tree in pure Python lists, one item at a time."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.nodes = [0.0] * (2 * capacity)

    def update(self, index: int, priority: float) -> None:
        i = index + self.capacity
        change = priority - self.nodes[i]
        while i >= 1:
            self.nodes[i] += change
            i //= 2

    def find(self, u: float) -> int:
        i = 1
        while i < self.capacity:
            left = self.nodes[2 * i]
            if u < left:
                i = 2 * i
            else:
                u -= left
                i = 2 * i + 1
        return i - self.capacity

    def total(self) -> float:
        return self.nodes[1]


def python_round(tree: PythonSumTree, rng: random.Random) -> None:
    total, segment = tree.total(), tree.total() / BATCH
    indices = [tree.find((k + rng.random()) * segment) for k in range(BATCH)]
    weights = [tree.nodes[i + tree.capacity] / total for i in indices]  # the probabilities, as a PER sample does
    del weights
    for i in indices:
        tree.update(i, rng.random() + 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="per", help="results/bench/<out>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    replay = PrioritizedReplay(CAPACITY, 1, obs_shape=(84, 84), stack=4, seed=0, alpha=0.6, beta=0.4, beta_steps=CAPACITY,
                               device=args.device)
    # Fill every slot's metadata (frames stay unwritten: sampling cost does not depend on their content).
    replay.count[:] = CAPACITY + 10
    replay.flags.zero_()
    replay.host_flags[...] = 0
    replay.host_flags[0] = 4  # FIRST
    replay.flags[0] = 4
    replay.episode_start[:] = False
    rng = np.random.default_rng(0)
    replay.tree.update(torch.arange(CAPACITY), torch.as_tensor(rng.random(CAPACITY) + 1e-3, dtype=torch.float32))
    replay.refreshed_head = replay._head()
    replay.steps_added = CAPACITY

    def ours():
        batch = replay.sample(BATCH)
        replay.update_priorities(batch.index, torch.rand(BATCH, device=args.device))

    tree = PythonSumTree(CAPACITY)
    for i, p in enumerate(rng.random(CAPACITY) + 1e-3):
        tree.update(i, float(p))
    prng = random.Random(0)
    ours_rates, python_rates = [], []
    for _ in range(args.repeats):  # interleaved, so that machine noise hits both alike
        ours_rates.append(rate(ours, args.seconds))
        python_rates.append(rate(lambda: python_round(tree, prng), args.seconds))
    result = {
        "capacity": CAPACITY,
        "batch": BATCH,
        "device": args.device,
        "what": "sample(32) (with stack and n-step gathers and importance weights) + update_priorities(32), per second",
        "ours_per_second": round(statistics.median(ours_rates), 1),
        "pure_python_sum_tree_per_second": round(statistics.median(python_rates), 1),
        "speedup": round(statistics.median(ours_rates) / statistics.median(python_rates), 2),
        "repeats": args.repeats,
        "note": "the pure-Python tree only finds and updates 32 indices; ours also gathers the frame stacks and n-step returns",
        "machine": machine(),
    }
    write(args.out, result)


if __name__ == "__main__":
    main()
