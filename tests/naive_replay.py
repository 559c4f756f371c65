"""A naive replay for tests: keeps every full transition, and says which are stored by its own rule.

Storage rule (what FrameReplay promises, stated on frames rather than slots): each environment's
frames form one sequence, the newest frame of the first observation of each episode followed by the
newest frame of each next observation (a final observation's included); the newest `capacity // N`
frames of the sequence are kept. A transition is available when its n-step window is complete (n
steps added, or the episode ended) and every frame its observation and next observation use from
inside the episode is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Step:
    obs: np.ndarray
    action: int
    reward: float
    terminated: bool
    truncated: bool
    next_obs: np.ndarray
    frame: int  # position of obs's newest frame in the env's frame sequence
    episode_index: int  # position of this step in its episode


class NaiveReplay:
    def __init__(self, capacity: int, num_envs: int, stack: int, n_step: int, gamma: float):
        self.slots, self.stack, self.n_step, self.gamma = capacity // num_envs, stack, n_step, gamma
        self.steps: list[list[Step]] = [[] for _ in range(num_envs)]
        self.frames = [0] * num_envs  # frames in each env's sequence
        self.new_episode = [True] * num_envs

    def add(self, obs, action, reward, terminated, truncated, next_obs):
        for e in range(len(self.steps)):
            if self.new_episode[e]:
                self.frames[e] += 1
                index = 0
            else:
                index = self.steps[e][-1].episode_index + 1
            frame = self.frames[e] - 1
            self.frames[e] += 1  # next_obs's newest frame
            self.steps[e].append(
                Step(np.array(obs[e]), int(action[e]), float(reward[e]), bool(terminated[e]),
                     bool(truncated[e]), np.array(next_obs[e]), frame, index)
            )
            self.new_episode[e] = bool(terminated[e] or truncated[e])

    def available(self):
        """(obs, action, n-step reward, discount, next_obs) of every available transition."""
        out = []
        for e, steps in enumerate(self.steps):
            oldest_kept = self.frames[e] - self.slots
            for i, step in enumerate(steps):
                ret, k, terminated = 0.0, 0, False
                for j in range(self.n_step):
                    if i + j >= len(steps):
                        break
                    s = steps[i + j]
                    ret += self.gamma**j * s.reward
                    k += 1
                    if s.terminated or s.truncated:
                        terminated = s.terminated
                        break
                ended = steps[i + k - 1].terminated or steps[i + k - 1].truncated
                if k < self.n_step and not ended:
                    continue  # window not complete yet
                oldest_needed = step.frame - min(self.stack - 1, step.episode_index)
                if oldest_needed < oldest_kept:
                    continue
                discount = 0.0 if terminated else self.gamma**k
                out.append((step.obs, step.action, ret, discount, steps[i + k - 1].next_obs))
        return out
