"""Bytes per transition of the replay at capacity 1,000,000, from the allocated tensors, beside
Stable-Baselines3's ReplayBuffer(optimize_memory_usage=True) measured the same way; and of the
compressed replay (replay.compress = lz4 | zstd) on Pong and Breakout, filled with 20,000 steps of a
random policy under the Nature protocol, with its sampling time beside the uncompressed replay's
(batches of 32, 3-step returns, the same stream and seed, timed alternately in one process).

    pip install stable-baselines3   # for the comparison only
    python scripts/bench/replay_memory.py   # -> results/bench/replay_memory.json

Neither buffer touches its pages here (torch.empty / numpy.zeros are lazy), so this measures what is
allocated, which is what a full buffer holds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

from agents.replay import FrameReplay  # noqa: E402
from wrappers.vector import make_vector_env, next_observations  # noqa: E402

CAPACITY = 1_000_000
FILL = 20_000


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


def compressed(game: str) -> dict:
    """Bytes per transition and sampling cost of the compressed replays on `game`."""
    replays = {codec: FrameReplay(FILL, 1, obs_shape=(84, 84), stack=4, n_step=3, seed=0, compress=codec)
               for codec in ("none", "lz4", "zstd")}
    envs = make_vector_env(game, "nature", 1, seed=0)
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(FILL - 200):  # leave room for episode-final frames: no slot is overwritten
        action = rng.integers(envs.single_action_space.n, size=1)
        nxt, reward, terminated, truncated, info = envs.step(action)
        for replay in replays.values():
            replay.add(obs, action, np.sign(reward), terminated, truncated, next_observations(nxt, info))
        obs = nxt
    envs.close()
    transitions = replays["none"].steps_added
    out = {"transitions": transitions}
    times = {codec: [] for codec in replays}
    for _ in range(300):  # alternate, so that machine noise hits all alike
        for codec, replay in replays.items():
            start = time.perf_counter()
            replay.sample(32)
            times[codec].append(time.perf_counter() - start)
    base = statistics.median(times["none"])
    out["uncompressed_bytes_per_transition"] = round(replays["none"].nbytes() / transitions, 1)
    out["sample_ms_uncompressed"] = round(base * 1e3, 3)
    for codec in ("lz4", "zstd"):
        replay = replays[codec]
        out[codec] = {"bytes_per_transition": round(replay.nbytes() / transitions, 1),
                      "frame_bytes_per_transition": round(replay.store.nbytes() / transitions, 1),
                      "sample_ms": round(statistics.median(times[codec]) * 1e3, 3),
                      "sample_slowdown": round(statistics.median(times[codec]) / base, 2)}
    return out


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
    result["compressed"] = {"fill": f"{FILL:,} steps of a random policy, nature protocol, capacity {FILL:,}",
                            **{game: compressed(game) for game in ("pong", "breakout")}}
    result["compressed_bytes_per_transition"] = {game: result["compressed"][game]["lz4"]["bytes_per_transition"]
                                                 for game in ("pong", "breakout")}
    write("replay_memory", result)
