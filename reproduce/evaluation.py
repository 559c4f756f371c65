"""Evaluation: whole games on their own environments, under the protocol's evaluation settings.

The frames played here are counted apart and never against the training budget.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from agents import DQNAgent
from wrappers.protocols import Protocol
from wrappers.vector import agent_observation, finished_episodes, make_vector_env


def evaluate(agent: DQNAgent, game: str, protocol: Protocol, episodes: int, epsilon: float,
             max_episode_frames: int, num_envs: int, seed: int, backend: str = "sync") -> list[tuple[float, int]]:
    """(score, length in agent steps) of `episodes` whole games, in episode order.

    Environment i plays episodes i, i + n, i + 2n, ...: a fixed assignment, so that short games do not
    crowd out long ones (taking the first `episodes` games to finish would bias the mean).
    """
    if episodes == 0:
        return []
    num_envs = min(num_envs, episodes)
    protocol = dataclasses.replace(protocol, eval_max_episode_frames=max_episode_frames)
    envs = make_vector_env(game, protocol, num_envs, seed, evaluation=True, backend=backend)
    quota = [len(range(i, episodes, num_envs)) for i in range(num_envs)]
    results: list[list[tuple[float, int]]] = [[] for _ in range(num_envs)]
    try:
        obs, _ = envs.reset(seed=seed)
        with agent.evaluating():
            while any(len(r) < q for r, q in zip(results, quota)):
                obs, _, _, _, info = envs.step(agent.act(agent_observation(obs), epsilon))
                for ep in finished_episodes(info):
                    if len(results[ep.env]) < quota[ep.env]:
                        results[ep.env].append((ep.score, ep.length))
    finally:
        envs.close()
    return [results[i % num_envs][i // num_envs] for i in range(episodes)]


def summarize(scores: list[float]) -> tuple[float, float]:
    return (float(np.mean(scores)), float(np.std(scores))) if scores else (float("nan"), float("nan"))
