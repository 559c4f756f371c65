"""The bit-flipping task of Andrychowicz et al. 2017 (Hindsight Experience Replay, section 3.1).

State and goal are n-bit strings; action i flips bit i. The reward is -1 after every step that does not
reach the goal and 0 on the step that does, which ends the episode; an episode is cut after n steps
(every goal is reachable within n flips). So an episode succeeds exactly when its return is above -n.
The goal never equals the initial state: every episode needs at least one flip.

Observations follow gymnasium's goal-conditioned convention (gymnasium-robotics' GoalEnv): a dict with
`observation`, `achieved_goal` (here the state itself) and `desired_goal`, and `compute_reward` /
`compute_terminated` that accept batches of goals, as hindsight relabelling needs.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "wrappers/BitFlip-v0"


class BitFlipEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, n_bits: int = 10):
        if not isinstance(n_bits, (int, np.integer)) or n_bits < 1:
            raise ValueError(f"n_bits = {n_bits!r}; must be an integer >= 1")
        self.n_bits = int(n_bits)
        bits = spaces.MultiBinary(self.n_bits)
        self.observation_space = spaces.Dict({"observation": bits, "achieved_goal": bits, "desired_goal": bits})
        self.action_space = spaces.Discrete(self.n_bits)
        self.state = np.zeros(self.n_bits, dtype=np.int8)
        self.goal = np.zeros(self.n_bits, dtype=np.int8)

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """0 where the goal is reached, -1 elsewhere; over any leading batch dimensions."""
        return -np.any(np.asarray(achieved_goal) != np.asarray(desired_goal), axis=-1).astype(np.float32)

    def compute_terminated(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return np.all(np.asarray(achieved_goal) == np.asarray(desired_goal), axis=-1)

    def _obs(self) -> dict:
        return {"observation": self.state.copy(), "achieved_goal": self.state.copy(), "desired_goal": self.goal.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.integers(0, 2, self.n_bits, dtype=np.int8)
        self.goal = self.state
        while np.array_equal(self.goal, self.state):
            self.goal = self.np_random.integers(0, 2, self.n_bits, dtype=np.int8)
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r}; allowed: 0 .. {self.n_bits - 1}")
        self.state = self.state.copy()
        self.state[int(action)] ^= 1
        reward = float(self.compute_reward(self.state, self.goal))
        terminated = bool(self.compute_terminated(self.state, self.goal))
        return self._obs(), reward, terminated, False, {"is_success": terminated}


def make_bitflip(n_bits: int, render_mode=None) -> gym.Env:
    """An n-bit task with its time limit of n steps, through gymnasium's registry."""
    if render_mode is not None:
        raise ValueError(f"render_mode {render_mode!r}: the bit-flipping task has no rendering")
    return gym.make(ENV_ID, n_bits=n_bits, max_episode_steps=n_bits)


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=BitFlipEnv)
