"""Time and bytes of a first and a second checkpoint of a run holding 200,000 Atari transitions.

    python scripts/bench/checkpoint.py [--transitions 200000] [--second 10000] [--dir /tmp/ckpt-bench]
    -> results/bench/checkpoint.json

The replay (capacity 1M, Atari frames) is filled with 200,000 transitions, then a Nature DQN agent's
state and the replay are checkpointed with the suite's Checkpointer, as a run does; 10,000 more
transitions are added and a second checkpoint is written, which should hold only the new frames.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

from agents import AgentConfig, DQNAgent  # noqa: E402
from agents.replay import FrameReplay  # noqa: E402
from reproduce.checkpoint import Checkpointer  # noqa: E402


def fill(replay: FrameReplay, steps: int, rng: np.random.Generator, frames: np.ndarray) -> None:
    obs = np.zeros((1, 4, 84, 84), np.uint8)
    obs[0, -1] = frames[0]
    for i in range(steps):
        nxt = np.concatenate([obs[:, 1:], frames[None, None, i % len(frames)]], axis=1)
        done = rng.random() < 0.002
        replay.add(obs, [rng.integers(6)], [0.0], [done], [False], nxt)
        obs = nxt if not done else np.concatenate([np.zeros((1, 3, 84, 84), np.uint8), nxt[:, -1:]], axis=1)


def size(paths) -> int:
    return sum(p.stat().st_size for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=200_000)
    parser.add_argument("--second", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/ckpt-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (512, 84, 84), dtype=np.uint8)
    replay = FrameReplay(1_000_000, 1, n_step=3, seed=0)
    agent = DQNAgent(AgentConfig(optimizer="centered_rmsprop", optimizer_eps=1e-5), (84, 84), 4, 6)
    checkpointer = Checkpointer(args.dir, keep=2)

    def checkpoint(step):
        before = set(args.dir.rglob("*.pt")) if args.dir.exists() else set()
        start = time.perf_counter()
        checkpointer.save(step, {"agent": agent.state_dict()}, replay)
        seconds = time.perf_counter() - start
        new = set(args.dir.rglob("*.pt")) - before
        return {"seconds": round(seconds, 2), "bytes": size(new), "files": sorted(p.name for p in new)}

    fill(replay, args.transitions, rng, frames)
    first = checkpoint(args.transitions)
    fill(replay, args.second, rng, frames)
    second = checkpoint(args.transitions + args.second)
    frame_bytes = 84 * 84
    result = {
        "transitions_first": args.transitions,
        "transitions_added_before_second": args.second,
        "first": first,
        "second": second,
        "second_over_first_bytes": round(second["bytes"] / first["bytes"], 4),
        "new_frame_bytes_second": args.second * frame_bytes,
        "note": "second checkpoint = new frames + replay metadata (actions, rewards, flags, priorities: "
                "13 bytes per slot of the 1M capacity) + networks and optimizer",
        "machine": machine(),
    }
    write("checkpoint", result)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
