"""Experience replay: frame storage (FrameReplay), priorities (PrioritizedReplay, SumTree)."""

from __future__ import annotations

import torch

from agents.config import AgentConfig
from agents.replay.frame import Batch, FrameReplay, ReplayTooLargeError
from agents.replay.prioritized import PrioritizedReplay
from agents.replay.sumtree import SumTree

__all__ = ["Batch", "FrameReplay", "PrioritizedReplay", "ReplayTooLargeError", "SumTree", "build_replay"]


def build_replay(agent: AgentConfig, capacity: int, num_envs: int, obs_shape: tuple[int, ...], stack: int,
                 obs_dtype: torch.dtype, device: str | torch.device, seed: int, total_steps: int) -> FrameReplay:
    """The replay an agent configuration asks for: uniform or prioritized, with its n-step returns."""
    common = dict(capacity=capacity, num_envs=num_envs, obs_shape=obs_shape, stack=stack, n_step=agent.n_step,
                  gamma=agent.gamma, device=device, obs_dtype=obs_dtype, seed=seed)
    if not agent.prioritized:
        return FrameReplay(**common)
    return PrioritizedReplay(**common, alpha=agent.priority_alpha, beta=agent.priority_beta, beta_end=agent.priority_beta_end,
                             beta_steps=agent.priority_beta_steps or total_steps, eps=agent.priority_eps)
