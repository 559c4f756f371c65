"""HindsightReplay: experience replay with hindsight goals (Andrychowicz et al. 2017).

For goal-conditioned tasks (dict observations with `observation`, `achieved_goal`, `desired_goal`). Each
environment's episode is staged until it ends, then stored whole, so that every stored transition
knows its episode's bounds. Relabelling happens at sample time: with probability k / (k + 1) a sampled
transition's goal is replaced by a goal the agent achieved

    future:  at a uniformly drawn step of the same episode from this transition on,
    final:   at the episode's last step,
    episode: at a uniformly drawn step of the same episode,

and its reward (and, for tasks that end on reaching their goal, its termination) is recomputed for that
goal with the task's own `compute_reward` (`compute_terminated`). One-step targets only.

Storage is a ring of transitions indexed by a running transition id `a` (slot a % capacity); an episode
occupies consecutive ids, and later transitions outlive earlier ones, so a stored transition's future is
always stored too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from agents.replay.frame import Batch

STRATEGIES = ("future", "final", "episode")


class HindsightReplay:
    def __init__(self, capacity: int, num_envs: int, obs_dim: int, goal_dim: int, strategy: str, k: int,
                 gamma: float, compute_reward: Callable, compute_terminated: Callable | None = None,
                 max_episode_steps: int = 0, seed: int | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"hindsight strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if k < 0:
            raise ValueError(f"hindsight k = {k}; must be >= 0 (relabelled goals per real one)")
        if capacity < max(max_episode_steps, 1):
            raise ValueError(f"replay capacity {capacity} cannot hold one whole episode of {max_episode_steps} steps")
        self.capacity, self.num_envs, self.strategy, self.k, self.gamma = capacity, num_envs, strategy, k, gamma
        self.compute_reward, self.compute_terminated = compute_reward, compute_terminated
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_achieved = np.zeros((capacity, goal_dim), np.float32)  # achieved goal after the step
        self.desired = np.zeros((capacity, goal_dim), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.first = np.zeros(capacity, np.int64)  # id of the episode's first transition
        self.last = np.zeros(capacity, np.int64)  # id of the episode's last transition
        self.stored = 0  # transitions stored so far (the next id)
        self.staging: list[list[tuple]] = [[] for _ in range(num_envs)]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.stored, self.capacity)

    def add(self, obs: dict, action, reward, terminated, truncated, next_obs: dict) -> None:
        """One step of every environment (rewards and flags are recomputed at sample time from the goals)."""
        for i in range(self.num_envs):
            self.staging[i].append((obs["observation"][i], int(action[i]), next_obs["observation"][i],
                                    next_obs["achieved_goal"][i], obs["desired_goal"][i]))
            if terminated[i] or truncated[i]:
                self._store(self.staging[i])
                self.staging[i] = []

    def _store(self, episode: list[tuple]) -> None:
        if len(episode) > self.capacity:
            raise ValueError(f"an episode of {len(episode)} steps does not fit a replay of capacity {self.capacity}")
        ids = self.stored + np.arange(len(episode))
        slots = ids % self.capacity
        obs, action, next_obs, next_achieved, desired = (np.stack(x) for x in zip(*episode))
        self.obs[slots], self.action[slots], self.next_obs[slots] = obs, action, next_obs
        self.next_achieved[slots], self.desired[slots] = next_achieved, desired
        self.first[slots], self.last[slots] = ids[0], ids[-1]
        self.stored += len(episode)

    def cut_episodes(self) -> None:
        """Forgets the episodes in progress (their environments restart them)."""
        self.staging = [[] for _ in range(self.num_envs)]

    def relabel_sources(self, ids: np.ndarray, u_relabel: np.ndarray, u_step: np.ndarray) -> np.ndarray:
        """The transition id whose achieved goal becomes each sampled transition's goal, or -1 to keep
        its own; u_relabel and u_step are uniform draws in [0, 1)."""
        slots = ids % self.capacity
        last = self.last[slots]
        if self.strategy == "future":
            lo = ids
        elif self.strategy == "final":
            lo = last
        else:
            lo = np.maximum(self.first[slots], self.stored - len(self))  # the episode's oldest stored step
        source = lo + np.floor(u_step * (last - lo + 1)).astype(np.int64)
        return np.where(u_relabel < self.k / (self.k + 1), source, -1)

    def sample(self, batch_size: int) -> Batch:
        if len(self) == 0:
            raise ValueError("the hindsight replay holds no finished episode yet; raise agent.learning_starts_steps "
                             "above one episode's length")
        ids = self.stored - len(self) + self.rng.integers(len(self), size=batch_size)
        u_relabel, u_step = self.rng.random((2, batch_size))
        source = self.relabel_sources(ids, u_relabel, u_step)
        slots = ids % self.capacity
        goal = np.where((source >= 0)[:, None], self.next_achieved[source % self.capacity], self.desired[slots])
        achieved = self.next_achieved[slots]
        reward = self.compute_reward(achieved, goal, None).astype(np.float32)
        terminated = (self.compute_terminated(achieved, goal, None) if self.compute_terminated is not None
                      else np.zeros(batch_size, bool))
        t = torch.from_numpy
        return Batch(obs=t(np.concatenate([self.obs[slots], goal], 1)), action=t(self.action[slots]),
                     reward=t(reward), discount=t(np.where(terminated, 0.0, self.gamma).astype(np.float32)),
                     next_obs=t(np.concatenate([self.next_obs[slots], goal], 1)), index=t(ids))

    # ---------------------------------------------------------------- checkpoints
    # Goal vectors are small: the whole replay travels in state_dict, with no frame chunks.
    def head(self) -> np.ndarray:
        return np.full(self.num_envs, -1)

    def oldest_logical(self) -> np.ndarray:
        return np.zeros(self.num_envs, np.int64)

    def frames_since(self, heads):
        return [(0, -1)] * self.num_envs, torch.empty(0)

    def write_frames(self, ranges, frames) -> None:
        pass

    def state_dict(self) -> dict:
        # Slots fill from 0, so the first len(self) slots are all that is written.
        arrays = {name: getattr(self, name)[:len(self)].copy() for name in
                  ("obs", "next_obs", "next_achieved", "desired", "action", "first", "last")}
        return arrays | {"stored": self.stored, "staging": [list(s) for s in self.staging],
                         "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.stored = int(state["stored"])
        for name in ("obs", "next_obs", "next_achieved", "desired", "action", "first", "last"):
            getattr(self, name)[:len(self)] = state[name]
        self.staging = [list(s) for s in state["staging"]]
        self.rng.bit_generator.state = state["rng"]
