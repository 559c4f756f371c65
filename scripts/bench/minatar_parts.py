"""The host-side parts of a MinAtar step, apart from the network's forward and backward passes, in
microseconds per call on one thread:

- optimizer_step: `minatar_dqn`'s optimizer (PyTorch's centered RMSprop, as CenteredRMSprop runs it) on
  its network for Breakout, each call with new gradient tensors, as backward makes them;
- replay_step: what the loop asks of the replay at each learning step, FrameReplay.add of one env's
  step (10x10x4 frames, 100,000 slots) and then sample(32), which first brings the tree up to date.

Run it from each commit's tree (PYTHONPATH=TREE for an older one) to compare them:

    python scripts/bench/minatar_parts.py --out minatar_parts/COMMIT_rN
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, rate, write  # noqa: E402

from agents.networks import Head, MinAtarCNN, QNetwork  # noqa: E402
from agents.optim import build_optimizer  # noqa: E402
from agents.replay import FrameReplay  # noqa: E402


def optimizer_step():
    torch.manual_seed(0)
    network = QNetwork(MinAtarCNN(4, 10), Head(1024, 6, hidden=128))  # Breakout's 4 channels, the full 6 actions
    params = list(network.parameters())
    optimizer = build_optimizer(params, "rmsprop", lr=2.5e-4, eps=0.01, rmsprop_decay=0.95)
    grads = [[torch.randn_like(p) * 1e-2 for p in params] for _ in range(2)]  # two sets: new tensors each call
    turn = iter(range(2**62))

    def step():
        for p, g in zip(params, grads[next(turn) % 2]):
            p.grad = g
        optimizer.step()
    return step


def replay_step():
    replay = FrameReplay(100_000, 1, obs_shape=(10, 10, 4), stack=1, obs_dtype=torch.bool, seed=0)
    rng = np.random.default_rng(0)
    frames = [torch.as_tensor(rng.random((1, 1, 10, 10, 4)) < 0.1) for _ in range(64)]
    turn = iter(range(2**62))

    def add():
        k = next(turn)
        end = k % 200 == 199  # episodes of 200 steps
        replay.add(frames[k % 64], np.array([k % 3]), np.array([1.0]), np.array([end]), np.array([False]),
                   frames[(k + 1) % 64])

    for _ in range(20_000):
        add()

    def step():
        add()
        replay.sample(32)
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="minatar_parts", help="results/bench/<out>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = {"optimizer_step": optimizer_step(), "replay_step": replay_step()}
    micros = {name: [] for name in parts}
    for _ in range(args.repeats):  # interleaved
        for name, fn in parts.items():
            micros[name].append(1e6 / rate(fn, args.seconds))
    tree = Path(sys.modules["agents"].__file__).resolve().parents[1]  # the code measured (PYTHONPATH may move it)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()  # empty outside a git checkout
    write(args.out, {
        "what": __doc__.split("\n\n")[1],
        "code": {"tree": str(tree), "commit": commit},
        "microseconds": {name: round(statistics.median(v), 1) for name, v in micros.items()},
        "microseconds_per_repeat": {name: [round(x, 1) for x in v] for name, v in micros.items()},
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
