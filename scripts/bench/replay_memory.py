"""Bytes per transition of the replay at capacity 1,000,000, from the allocated tensors, beside
Stable-Baselines3's ReplayBuffer(optimize_memory_usage=True) measured the same way.

    pip install stable-baselines3   # for the comparison only
    python scripts/bench/replay_memory.py   # -> results/bench/replay_memory.json

Neither buffer touches its pages here (torch.empty / numpy.zeros are lazy), so this measures what is
allocated, which is what a full buffer holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

from agents.replay import FrameReplay  # noqa: E402

CAPACITY = 1_000_000


def ours(num_envs: int) -> float:
    replay = FrameReplay(CAPACITY, num_envs, obs_shape=(84, 84), stack=4, n_step=3)
    return replay.nbytes() / replay.capacity


def sb3() -> float | None:
    try:
        import numpy as np
        from gymnasium import spaces
        from stable_baselines3.common.buffers import ReplayBuffer
    except ImportError:
        return None
    buffer = ReplayBuffer(CAPACITY, spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(18), device="cpu",
                          optimize_memory_usage=True, handle_timeout_termination=False)
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    return sum(a.nbytes for a in arrays) / CAPACITY


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = {
        "capacity": CAPACITY,
        "observation": "uint8 4x84x84 stack (Atari)",
        "bytes_per_transition": round(ours(1), 2),
        "bytes_per_transition_8_envs": round(ours(8), 2),
        "sb3_bytes_per_transition": None if (b := sb3()) is None else round(b, 2),
        "sb3_note": "ReplayBuffer(optimize_memory_usage=True, handle_timeout_termination=False), 1 env, int64 actions",
        "machine": machine(),
    }
    if result["sb3_bytes_per_transition"]:
        result["ratio_sb3_over_ours"] = round(result["sb3_bytes_per_transition"] / result["bytes_per_transition"], 3)
    write("replay_memory", result)
