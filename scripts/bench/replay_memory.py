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


def sb3() -> dict | None:
    """SB3's bytes per transition; its arrays grow linearly with capacity, so where 1M does not fit in
    this machine's memory it is measured at 100,000."""
    try:
        import numpy as np
        from gymnasium import spaces
        from stable_baselines3.common.buffers import ReplayBuffer
    except ImportError:
        return None
    for capacity in (CAPACITY, 100_000):
        try:
            buffer = ReplayBuffer(capacity, spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(18),
                                  device="cpu", optimize_memory_usage=True, handle_timeout_termination=False)
        except MemoryError as e:
            refused = str(e)
            continue
        arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
        out = {"bytes_per_transition": round(sum(a.nbytes for a in arrays) / capacity, 2), "measured_at": capacity}
        if capacity != CAPACITY:
            out["at_1M"] = f"numpy refused the allocation on this machine: {refused}"
        return out
    return None


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = {
        "capacity": CAPACITY,
        "observation": "uint8 4x84x84 stack (Atari)",
        "bytes_per_transition": round(ours(1), 2),
        "bytes_per_transition_8_envs": round(ours(8), 2),
        "machine": machine(),
    }
    if (theirs := sb3()) is not None:
        result["sb3_bytes_per_transition"] = theirs.pop("bytes_per_transition")
        result["sb3"] = {"buffer": "ReplayBuffer(optimize_memory_usage=True, handle_timeout_termination=False), 1 env",
                         **theirs}
        result["ratio_sb3_over_ours"] = round(result["sb3_bytes_per_transition"] / result["bytes_per_transition"], 3)
    write("replay_memory", result)
