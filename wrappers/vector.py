"""Vector environments: N copies of one game under one protocol, stepped together."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics

from wrappers.ale_vector import ALEVectorProtocol
from wrappers.atari import make_atari_env
from wrappers.bitflip import make_bitflip
from wrappers.games import CLASSIC_GAMES, MINATAR_GAMES, bitflip_bits, canonical_game, is_atari
from wrappers.protocols import CLASSIC, Protocol, get_protocol
from wrappers.state import Snapshot

BACKENDS = ("sync", "async", "ale")


def make_env(game: str, protocol: Protocol | str, evaluation: bool = False, render_mode=None, index: int = 0) -> gym.Env:
    """One environment of `game` under `protocol` (a card or its name), its whole state reachable
    through get_state() / set_state() (wrappers/state.py); `index` is its place in a vector env."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    game = canonical_game(game)
    if is_atari(game):
        if protocol.name == CLASSIC.name:
            raise ValueError(f"game {game!r} is an Atari game; use protocol 'nature' or 'machado', not 'classic'")
        env = make_atari_env(game, protocol, evaluation=evaluation, render_mode=render_mode)
    elif protocol.name != CLASSIC.name:
        raise ValueError(f"game {game!r} is not an Atari game; it runs under protocol 'classic' only")
    elif bitflip_bits(game):
        env = RecordEpisodeStatistics(make_bitflip(bitflip_bits(game), render_mode=render_mode))
    elif game in MINATAR_GAMES:
        env = RecordEpisodeStatistics(make_minatar(game, render_mode))
    else:
        env = RecordEpisodeStatistics(gym.make(CLASSIC_GAMES[game], render_mode=render_mode))
    return Snapshot(env, index)


def make_minatar(game: str, render_mode=None) -> gym.Env:
    """A MinAtar game as its package gives it: [10, 10, C] boolean observations, sticky actions (0.1)
    and difficulty ramping inside the environment."""
    try:
        import minatar.gym
    except ImportError:
        raise ImportError(f"game {game!r} needs MinAtar: pip install -e \".[minatar]\"") from None
    if MINATAR_GAMES[game] not in gym.registry:
        minatar.gym.register_envs()
    return gym.make(MINATAR_GAMES[game], render_mode=render_mode)


def make_vector_env(
    game: str,
    protocol: Protocol | str,
    num_envs: int,
    seed: int,
    evaluation: bool = False,
    backend: str = "sync",
) -> gym.vector.VectorEnv:
    """`num_envs` environments of `game`; Atari observations are uint8 [num_envs, 4, 84, 84].

    Backends: `sync` (in this process), `async` (one process per environment) and `ale` (ale-py's C++
    vector env: fastest, but see wrappers/ale_vector.py for where it departs from the card and it
    cannot snapshot its emulators). Environments reset themselves in the step that ends an episode (gymnasium's SAME_STEP autoreset):
    the returned observation starts the next episode, and the last one of the finished episode is in
    info["final_obs"] (see `next_observations`). Environment i is seeded with seed + i at the first
    reset, which the caller makes with `reset(seed=seed)`.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    canonical_game(game)  # fail here, in this process, for an unknown game
    if backend == "ale":
        if not is_atari(game):
            raise ValueError(f"backend 'ale' runs Atari games only, not {game!r}; use 'sync' or 'async'")
        return ALEVectorProtocol(game, protocol, num_envs, evaluation)
    fns = [functools.partial(make_env, game, protocol, evaluation, None, i) for i in range(num_envs)]
    cls = SyncVectorEnv if backend == "sync" else AsyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def next_observations(obs: np.ndarray, info: dict) -> np.ndarray:
    """The observations that followed the actions: `obs`, with the final observation of each episode
    that ended in this step in place of the first observation of the next one."""
    if "_final_obs" not in info or not info["_final_obs"].any():
        return obs
    if isinstance(obs, dict):  # goal-conditioned: a dict of arrays, final_obs a dict per environment
        nxt = {k: v.copy() for k, v in obs.items()}
        for i in np.flatnonzero(info["_final_obs"]):
            for k in nxt:
                nxt[k][i] = info["final_obs"][i][k]
        return nxt
    nxt = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        nxt[i] = info["final_obs"][i]
    return nxt


def goal_task(game: str) -> gym.Env | None:
    """An unwrapped instance of a goal-conditioned game (its spaces, compute_reward, time limit), else None."""
    if not bitflip_bits(game):
        return None
    return make_env(game, CLASSIC).unwrapped


def agent_observation(obs):
    """What the Q-network sees: the observation itself, or for a goal-conditioned task the state and the
    desired goal side by side (the HER paper's input)."""
    if isinstance(obs, dict):
        return np.concatenate([obs["observation"], obs["desired_goal"]], axis=-1)
    return obs


@dataclass(frozen=True)
class Episode:
    env: int
    score: float  # unclipped return of the whole game
    length: int  # agent steps


def finished_episodes(info: dict) -> list[Episode]:
    """Whole games (not lives) that ended in this step, with their unclipped scores."""
    final = info.get("final_info")
    if final is None or "episode" not in final:
        return []
    ep, mask = final["episode"], final["_episode"]
    return [Episode(int(i), float(ep["r"][i]), int(ep["l"][i])) for i in np.flatnonzero(mask)]


def observation_spec(obs: np.ndarray, protocol: Protocol) -> tuple[tuple[int, ...], int]:
    """(shape of one frame, frames per stack) of a batch of observations [N, stack, *frame] (or
    [N, *frame] when the protocol stacks nothing)."""
    stack = protocol.frame_stack
    obs = agent_observation(obs)
    return (tuple(obs.shape[2:]) if stack > 1 else tuple(obs.shape[1:])), stack


def can_snapshot(envs: gym.vector.VectorEnv) -> bool:
    return getattr(envs, "can_snapshot", True)


def get_states(envs: gym.vector.VectorEnv) -> list[bytes] | None:
    """Every sub-environment's whole state (emulator, wrappers), for a checkpoint; None for a backend
    that cannot snapshot its emulators."""
    return list(envs.call("get_state")) if can_snapshot(envs) else None


def set_states(envs: gym.vector.VectorEnv, states: list[bytes]) -> None:
    envs.call("set_state", list(states))
