"""Experience replay: frame storage (FrameReplay), priorities (PrioritizedReplay, SumTree), hindsight goals
(HindsightReplay)."""

from __future__ import annotations

import torch

from agents.config import AgentConfig
from agents.replay.frame import Batch, FrameReplay, ReplayTooLargeError
from agents.replay.hindsight import HindsightReplay
from agents.replay.prioritized import PrioritizedReplay
from agents.replay.sumtree import SumTree

__all__ = ["Batch", "FrameReplay", "HindsightReplay", "PrioritizedReplay", "ReplayTooLargeError", "SumTree", "build_replay"]


def build_replay(agent: AgentConfig, capacity: int, num_envs: int, obs_shape: tuple[int, ...], stack: int,
                 obs_dtype: torch.dtype, device: str | torch.device, seed: int, total_steps: int,
                 goal_task=None, compress: str = "none") -> FrameReplay | HindsightReplay:
    """The replay an agent configuration asks for: uniform or prioritized, with its n-step returns, or
    with hindsight goals for `goal_task` (an unwrapped goal-conditioned environment)."""
    if agent.hindsight != "none":
        if goal_task is None:
            raise ValueError(f"agent.hindsight = {agent.hindsight!r} needs a goal-conditioned task (bitflip<n>)")
        space = goal_task.observation_space
        return HindsightReplay(capacity, num_envs, space["observation"].shape[0], space["desired_goal"].shape[0],
                               agent.hindsight, agent.hindsight_k, agent.gamma, goal_task.compute_reward,
                               getattr(goal_task, "compute_terminated", None), goal_task.spec.max_episode_steps or 0,
                               seed)
    common = dict(capacity=capacity, num_envs=num_envs, obs_shape=obs_shape, stack=stack, n_step=agent.n_step,
                  gamma=agent.gamma, device=device, obs_dtype=obs_dtype, seed=seed,
                  compress=compress)
    if not agent.prioritized:
        return FrameReplay(**common)
    return PrioritizedReplay(**common, alpha=agent.priority_alpha, beta=agent.priority_beta, beta_end=agent.priority_beta_end,
                             beta_steps=agent.priority_beta_steps or total_steps, eps=agent.priority_eps)
