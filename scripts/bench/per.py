"""Prioritized replay at capacity 1,000,000, beside a straightforward pure-Python binary sum tree of the
same capacity, in the same run, rounds per second:

- tree: what the pure-Python tree's round does, on the suite's SumTree: 32 stratified prefix sums
  found, their probabilities read, 32 priorities written (the project's 20x target);
- tree_torch_kernel: the same on the tree's batched torch kernel (the GPU's), run on this CPU;
- compiled_loops_only: the CPU kernel's two compiled calls alone, on numpy arrays made beforehand
  (what the tree round costs without the torch calls around them);
- replay: PrioritizedReplay.sample(32) (frame stacks, n-step returns, importance weights) +
  update_priorities(32), every frame written first (an unwritten page costs a fault at each read).

Within a repeat the rounds take turns of --slice seconds, and each speedup is the median over repeats of
that repeat's ratio to the pure-Python tree: the shared machine's slow spells fall on both sides of it.

    python scripts/bench/per.py [--seconds 20] [--slice 0.25]   -> results/bench/per.json
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
from common import alternated_rates, machine, write  # noqa: E402

from agents.replay import PrioritizedReplay, SumTree  # noqa: E402
from agents.replay.sumtree import _stratified_loops, _update_loops  # noqa: E402

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


def python_round(tree: PythonSumTree, rng: random.Random, new_priorities: list[float]) -> None:
    total, segment = tree.total(), tree.total() / BATCH
    indices = [tree.find((k + rng.random()) * segment) for k in range(BATCH)]
    weights = [tree.nodes[i + tree.capacity] / total for i in indices]  # the probabilities, as a PER sample does
    del weights
    for i, priority in zip(indices, new_priorities):
        tree.update(i, priority)


def tree_round(tree: SumTree, uniform, new_priorities: torch.Tensor) -> None:
    """python_round on the suite's tree: 32 stratified finds with their probabilities, their uniform
    draws made as a PER sample makes them, then 32 updates."""
    index, _ = tree.stratified(uniform(BATCH))
    tree.update(index, new_priorities)


def per_uniform(kernel: str, device: str):
    """The uniform draws of an (empty) PrioritizedReplay with this kernel."""
    return PrioritizedReplay(64, 1, obs_shape=(1,), stack=1, seed=0, device=device, kernel=kernel).uniform


def filled_replay(priorities: np.ndarray, device: str) -> PrioritizedReplay:
    replay = PrioritizedReplay(CAPACITY, 1, obs_shape=(84, 84), stack=4, seed=0, alpha=0.6, beta=0.4,
                               beta_steps=CAPACITY, device=device)
    # Every slot's metadata as if a million steps of one long episode had been added, and every frame
    # written (with a pattern: zero pages would be shared and cached).
    replay.store.data[:-1] = torch.arange(84 * 84, device=device).to(torch.uint8)
    replay.count[:] = CAPACITY + 10
    replay.flags.zero_()
    replay.host_flags[...] = 0
    replay.host_flags[0] = 4  # FIRST
    replay.flags[0] = 4
    replay.episode_start[:] = False
    replay.tree.update(torch.arange(CAPACITY), torch.as_tensor(priorities, dtype=torch.float32))
    replay.refreshed_head = replay._head()
    replay.steps_added = CAPACITY
    return replay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice", type=float, default=0.25, help="seconds of each round's turn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="per", help="results/bench/<out>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    priorities = np.random.default_rng(0).random(CAPACITY) + 1e-3

    replay = filled_replay(priorities, args.device)

    def replay_round():
        batch = replay.sample(BATCH)
        replay.update_priorities(batch.index, new_tensors[next(turn) % 1024])

    trees = {"tree": SumTree(CAPACITY, args.device)}
    if args.device == "cpu":
        trees["tree_torch_kernel"] = SumTree(CAPACITY, args.device, kernel="torch")
    for tree in trees.values():
        tree.update(torch.arange(CAPACITY), torch.as_tensor(priorities, dtype=torch.float32))
    # Each tree's draws as PrioritizedReplay.uniform makes them for that kernel.
    draw = {name: per_uniform(tree.kernel, args.device) for name, tree in trees.items()}
    python_tree = PythonSumTree(CAPACITY)
    for i, p in enumerate(priorities):
        python_tree.update(i, float(p))
    prng = random.Random(0)
    # The new priorities are drawn beforehand, for every round alike: a learner hands them over.
    rng = np.random.default_rng(1)
    new = [rng.random(BATCH).astype(np.float32) + 1e-6 for _ in range(1024)]
    new_lists, new_tensors = [p.tolist() for p in new], [torch.as_tensor(p, device=args.device) for p in new]
    turn = iter(range(2**62))

    rounds = {"pure_python_sum_tree": lambda: python_round(python_tree, prng, new_lists[next(turn) % 1024]),
              "replay": replay_round}
    rounds.update({name: (lambda tree=tree, name=name: tree_round(tree, draw[name], new_tensors[next(turn) % 1024]))
                   for name, tree in trees.items()})
    if trees["tree"].kernel == "numba":
        draws = [rng.random(BATCH) for _ in range(1024)]

        def loops_round():
            k = next(turn) % 1024
            index, _ = np.empty(BATCH, np.int64), np.empty(BATCH)
            _stratified_loops(*trees["tree"]._host, draws[k], index, _)
            _update_loops(*trees["tree"]._host, CAPACITY, index, new[k])

        rounds["compiled_loops_only"] = loops_round
    rates = {name: [] for name in rounds}
    for _ in range(args.repeats):
        for name, value in alternated_rates(rounds, args.seconds, args.slice).items():
            rates[name].append(value)
    median = {name: statistics.median(r) for name, r in rates.items()}
    python = median["pure_python_sum_tree"]
    # Each repeat's ratio is of rates measured over the same seconds, so that its noise mostly cancels.
    ratios = {name: [ours / base for ours, base in zip(rates[name], rates["pure_python_sum_tree"])]
              for name in rounds if name != "pure_python_sum_tree"}
    result = {
        "capacity": CAPACITY,
        "batch": BATCH,
        "device": args.device,
        "tree_kernel": trees["tree"].kernel,
        "tree_fanout": trees["tree"].fanout,
        "what": {
            "pure_python_sum_tree": "binary tree in Python lists: total, 32 stratified finds, their probabilities, 32 updates",
            "tree": "the same round on the suite's SumTree (its default kernel on this device)",
            "tree_torch_kernel": "the same round on the SumTree's batched torch kernel (the GPU's), on this CPU",
            "compiled_loops_only": "the tree round's two compiled calls alone, on numpy arrays made beforehand",
            "replay": "PrioritizedReplay.sample(32) (frame stacks, n-step returns, importance weights) + update_priorities(32)",
        },
        **{f"{name}_per_second": round(value, 1) for name, value in median.items()},
        "speedup": round(statistics.median(ratios["tree"]), 2),
        **({"torch_kernel_speedup": round(statistics.median(ratios["tree_torch_kernel"]), 2)} if "tree_torch_kernel" in ratios else {}),
        "replay_speedup": round(statistics.median(ratios["replay"]), 2),
        **({"compiled_loops_speedup": round(statistics.median(ratios["compiled_loops_only"]), 2)}
           if "compiled_loops_only" in ratios else {}),
        "speedup_of_median_rates": round(median["tree"] / python, 2),
        "repeats": args.repeats,
        "slice_seconds": args.slice,
        "rates_per_repeat": {name: [round(r, 1) for r in values] for name, values in rates.items()},
        "speedups_per_repeat": {name: [round(r, 2) for r in values] for name, values in ratios.items()},
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
    }
    write(args.out, result)


if __name__ == "__main__":
    main()
