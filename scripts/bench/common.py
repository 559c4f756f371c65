"""Shared by the benchmarks: a description of the machine, and writing results/bench/*.json."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

from reproduce.rundir import host

RESULTS = Path(__file__).resolve().parents[2] / "results" / "bench"


def machine() -> dict:
    info = host() | {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "numpy", "gymnasium", "ale-py", "stable-baselines3"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return info


def write(name: str, result: dict) -> Path:
    """Merges `result` into results/bench/<name>.json (other scripts may own other fields)."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)  # a name may hold a folder: minatar_cpu/COMMIT_r1
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(result)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def rate(fn, seconds: float) -> float:
    """Calls of `fn` per second over about `seconds` (after one call of warm-up); on a GPU, until the
    work they queued has run."""
    return alternated_rates({"fn": fn}, seconds, seconds)["fn"]


def alternated_rates(fns: dict, seconds: float, turn_seconds: float) -> dict:
    """Calls per second of each of `fns` over about `seconds`, taken in turns of `turn_seconds` (after one
    call each of warm-up): the shared machine's slower and faster spells fall on all of them alike. On
    a GPU, each turn lasts until the work it queued has run."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    calls, elapsed = dict.fromkeys(fns, 0), dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn()
    for _ in range(max(1, round(seconds / turn_seconds))):
        for name, fn in fns.items():
            sync()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < turn_seconds:
                fn()
                count += 1
            sync()
            calls[name] += count
            elapsed[name] += time.perf_counter() - start
    return {name: calls[name] / elapsed[name] for name in fns}


def nature_update(device: str = "cpu", overrides: dict | None = None, cuda_graph: bool = False, **agent_options):
    """The suite's learning update for nature_dqn (with `overrides`) on a replay of 2,000 Pong-sized steps
    of noise: an UpdateStep to call. `agent_options` go to DQNAgent (compile, bf16, ...)."""
    import numpy as np

    from agents import DQNAgent
    from agents.replay import FrameReplay
    from agents.update import UpdateStep
    from reproduce import config as cfg

    agent = DQNAgent(cfg.resolve("nature_dqn", overrides or {}).agent, (84, 84), 4, 6, device, seed=0, **agent_options)
    replay = FrameReplay(10_000, 1, obs_shape=(84, 84), stack=4, seed=0, device=device)
    rng = np.random.default_rng(0)
    obs = np.zeros((1, 4, 84, 84), np.uint8)  # an episode's first observation: zeros before its frame
    obs[:, -1] = rng.integers(0, 255, (84, 84))
    for _ in range(2_000):
        nxt = np.concatenate([obs[:, 1:], rng.integers(0, 255, (1, 1, 84, 84), dtype=np.uint8)], 1)
        replay.add(obs, [0], [0.0], [False], [False], nxt)
        obs = nxt
    return UpdateStep(agent, replay, 32, prioritized=False, cuda_graph=cuda_graph)


def loop_rate(preset: str, overrides: dict, learn_start: int, warm: int, measure: int) -> float:
    """Agent steps per second of the suite's training loop on `preset` over `measure` steps after
    `learn_start` steps before learning and `warm` steps of learning (from the times in metrics.jsonl;
    no evaluation, no checkpoint)."""
    from reproduce import config as cfg
    from reproduce.loop import train

    num_envs = int(overrides.get("env.num_envs", 1))
    overrides = {"train.steps": learn_start + warm + measure, "agent.learning_starts_steps": learn_start,
                 "eval.episodes": 0, "eval.period_steps": 0, "log.period_steps": max(200, 16 * num_envs),
                 "log.checkpoint_period_steps": 0, "log.wandb": "disabled", **overrides}
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg.resolve(preset, overrides), Path(tmp) / "run", progress=False)
        times = {}
        for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines():
            d = json.loads(line)
            times.setdefault(d["step"], d["time"])
    start = min(step for step in times if step >= learn_start + warm)
    end = max(times)
    return (end - start) / (times[end] - times[start])
