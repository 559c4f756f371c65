"""`reproduce eval`: a finished or running run's latest network, played under the protocol's
evaluation settings, optionally recorded as MP4."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from agents import DQNAgent
from reproduce.checkpoint import Checkpointer
from reproduce.config import load_run_config
from reproduce.evaluation import evaluate, summarize
from reproduce.rundir import resolve_device
from wrappers.vector import make_env, make_vector_env, observation_spec


def evaluate_run(run_dir: Path, episodes: int | None, video: bool, device: str = "auto") -> dict:
    if not (run_dir / "config.toml").exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no config.toml)")
    config = load_run_config(run_dir / "config.toml")
    state = Checkpointer(run_dir / "checkpoints").load_latest()
    device = resolve_device(device)
    envs = make_vector_env(config.env.game, config.protocol, 1, config.train.seed)
    obs, _ = envs.reset(seed=config.train.seed)
    obs_shape, stack = observation_spec(obs, config.protocol)
    agent = DQNAgent(config.agent, obs_shape, stack, int(envs.single_action_space.n), device)
    envs.close()
    agent.online.load_state_dict(state["agent"]["online"])
    episodes = config.eval.episodes if episodes is None else episodes
    if episodes < 1:
        raise ValueError(f"--episodes = {episodes}; must be >= 1")
    results = evaluate(agent, config.env.game, config.protocol, episodes, config.eval.epsilon,
                       config.eval.max_episode_frames, config.eval.num_envs, seed=config.train.seed + 7)
    mean, std = summarize([s for s, _ in results])
    out = {"run": str(run_dir), "checkpoint_step": state["step"], "episodes": episodes,
           "epsilon": config.eval.epsilon, "return_mean": mean, "return_std": std,
           "returns": [s for s, _ in results]}
    if video:
        out["video"] = str(record_video(agent, config, run_dir / "videos" / f"eval-step{state['step']}.mp4"))
    return out


def record_video(agent: DQNAgent, config, path: Path) -> Path:
    """One evaluation game, every agent step's screen, as MP4 (opencv's writer: no extra dependency)."""
    import cv2

    protocol = dataclasses.replace(config.protocol, eval_max_episode_frames=config.eval.max_episode_frames)
    env = make_env(config.env.game, protocol, evaluation=True, render_mode="rgb_array")
    obs, _ = env.reset(seed=config.train.seed + 11)
    frames, done = [env.render()], False
    with agent.evaluating():
        while not done:
            action = agent.act(torch.as_tensor(np.asarray(obs))[None], config.eval.epsilon)[0]
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            done = terminated or truncated
    env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    fps = 60 / max(config.protocol.frame_skip, 1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
