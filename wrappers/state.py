"""An environment's whole state, captured and restored: the emulator (with its random generators) and
every wrapper's own fields (frame buffers, stacks, life and no-op counters, episode returns).

ale-py's `cloneState(include_rng=True)` restores RAM, CPU and random generators exactly, but not all of
the video chip's state: restored into another emulator, the same actions give the same RAM and the
same scores, yet a few screen rows (score digits) differ for the rest of the game (seen on Breakout,
Pong, Space Invaders with ale-py 0.12). Restored right after `reset_game`, it is exact. So the
emulator is recorded from the start of each game (state + the actions since, one byte per frame),
and restoring replays the game's actions from its start: at most 108,000 frames, a few seconds.
"""

from __future__ import annotations

import collections
import copy
import pickle
from array import array

import gymnasium as gym
import numpy as np

_PLAIN = (int, float, bool, str, bytes, type(None), np.ndarray, np.generic, np.random.Generator, collections.deque,
          list, tuple, dict)
# Game objects of pure-Python environments, kept whole (MinAtar's game state and its RandomState).
_WHOLE_MODULES = ("minatar",)
_SKIP = {"env", "ale", "spec", "_action_space", "_observation_space", "_metadata", "_cached_spec"}


class EmulatorRecorder(gym.Wrapper):
    """Innermost wrapper of an Atari environment: keeps the emulator state at the start of the current
    game and every action since, so that the emulator can be rebuilt exactly in another process."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.game_start = b""
        self.actions = array("B")

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self.game_start = pickle.dumps(self.env.unwrapped.ale.cloneState(include_rng=True))
        self.actions = array("B")
        return out

    def step(self, action):
        self.actions.append(int(action))
        return self.env.step(action)

    def rebuild(self, game_start: bytes, actions: array, expected: bytes) -> None:
        ale = self.env.unwrapped.ale
        ale.restoreState(pickle.loads(game_start))
        for a in actions:
            self.env.step(a)
        if pickle.dumps(ale.cloneState(include_rng=True)) != expected:
            raise RuntimeError("replaying the game's actions did not reach the saved emulator state")


class Snapshot(gym.Wrapper):
    """Outermost wrapper: `get_state()` and `set_state(states)` over the whole chain. Vector
    environments reach it with `call("get_state")`, in-process or in worker processes alike; `index`
    picks this environment's entry from the list given to set_state."""

    def __init__(self, env: gym.Env, index: int = 0):
        super().__init__(env)
        self.index = index

    def get_state(self) -> bytes:
        layers, env = [], self.env
        while isinstance(env, gym.Wrapper):
            layers.append(_fields(env))
            env = env.env
        layers.append(_fields(env))
        emulator = None
        if hasattr(env, "ale"):
            emulator = pickle.dumps(env.ale.cloneState(include_rng=True))
        return pickle.dumps({"layers": layers, "emulator": emulator})

    def set_state(self, states) -> None:
        state = pickle.loads(states[self.index] if isinstance(states, (list, tuple)) else states)
        chain, env = [], self.env
        while isinstance(env, gym.Wrapper):
            chain.append(env)
            env = env.env
        chain.append(env)
        if len(chain) != len(state["layers"]):
            raise ValueError(f"saved state has {len(state['layers'])} layers, this environment {len(chain)}")
        for layer, fields in zip(chain, state["layers"]):
            vars(layer).update(copy.deepcopy(fields))
        if state["emulator"] is not None:
            recorder = next(w for w in chain if isinstance(w, EmulatorRecorder))
            recorder.rebuild(recorder.game_start, recorder.actions, state["emulator"])


def _fields(layer) -> dict:
    """A layer's own data: numbers, arrays, buffers and generators; not its environment, spaces or functions."""
    return {
        k: copy.deepcopy(v)
        for k, v in vars(layer).items()
        if k not in _SKIP and (isinstance(v, _PLAIN + (array,)) or type(v).__module__.startswith(_WHOLE_MODULES))
        and not callable(v)
    }
