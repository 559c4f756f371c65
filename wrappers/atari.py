"""Atari environments under a protocol card, built from ale-py's AtariEnv and gymnasium's wrappers.

Stack, from the emulator up:
    AtariEnv (sticky actions, full/minimal action set, frame cap)           ale-py
    EmulatorRecorder (the game's start state and actions, for exact resume) wrappers/state.py
    AtariPreprocessing (no-op starts, frame skip, max of last two, 84x84)   gymnasium
    RecordEpisodeStatistics (unclipped score of the whole game)             gymnasium
    LifeLossTerminal (learning only)                                        here
    FireReset (games with FIRE)                                             here
    ClipReward (learning only)                                              gymnasium
    FrameStackObservation (zero padding before an episode's first frame)    gymnasium
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.wrappers import (
    AtariPreprocessing,
    ClipReward,
    FrameStackObservation,
    RecordEpisodeStatistics,
)

from wrappers.games import canonical_game
from wrappers.protocols import Protocol
from wrappers.state import EmulatorRecorder


class LifeLossTerminal(gym.Wrapper):
    """A lost life is `terminated` for learning, and the game goes on.

    gymnasium's AtariPreprocessing(terminal_on_life_loss=True) resets the whole game at the next
    reset, which shortens games and changes the score; here reset() after a life loss only starts
    a new learning episode (the observation stack restarts), and the emulator keeps playing.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True
        self.last_obs = None

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives
        self.lives = lives
        self.last_obs = obs
        info["life_loss"] = life_lost
        return obs, reward, terminated or life_lost, truncated, info

    def reset(self, *, seed=None, options=None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
            self.game_over = False
        else:
            obs, info = self.last_obs, {}
        self.lives = self.env.unwrapped.ale.lives()
        self.last_obs = obs
        return obs, info


class FireReset(gym.Wrapper):
    """Presses FIRE at the start of every life: games such as Breakout wait for it before play starts,
    and again after each lost life. Not in gymnasium.

    Above LifeLossTerminal: in training a lost life ends the learning episode, and the reset that
    follows presses FIRE; in evaluation the game goes on through a lost life, and step() presses FIRE
    itself. The emulator sees the same actions either way, and an evaluation game never waits, until
    its frame cap, for a policy that did not learn to press FIRE (it never had to in training).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, _ = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(options=options)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives and not (terminated or truncated):  # LifeLossTerminal's lost life
            obs, fire_reward, terminated, truncated, info = self.env.step(1)
            reward += fire_reward
        self.lives = lives
        return obs, reward, terminated, truncated, info


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def make_atari_env(
    game: str,
    protocol: Protocol,
    evaluation: bool = False,
    render_mode: str | None = None,
) -> gym.Env:
    """One Atari environment under `protocol`; observations uint8 [stack, 84, 84].

    Training environments give the learning signal (clipped reward, life loss as terminal when the
    protocol says so). Evaluation environments give raw rewards over whole games, capped at the
    protocol's evaluation length. Either way info["episode"]["r"] at the end of a game is its
    unclipped score.
    """
    from ale_py.env import AtariEnv

    max_frames = protocol.eval_max_episode_frames if evaluation else protocol.max_episode_frames
    env = AtariEnv(
        game=canonical_game(game),
        obs_type="grayscale",  # cheapest per-frame screen; AtariPreprocessing reads the screen itself
        frameskip=1,
        repeat_action_probability=protocol.repeat_action_probability,
        full_action_space=protocol.full_action_space,
        max_num_frames_per_episode=max_frames,
        render_mode=render_mode,
    )
    env = AtariPreprocessing(
        EmulatorRecorder(env),
        noop_max=protocol.noop_max,
        frame_skip=protocol.frame_skip,
        screen_size=protocol.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
    )
    env = RecordEpisodeStatistics(env)
    if protocol.terminal_on_life_loss and not evaluation:
        env = LifeLossTerminal(env)
    if protocol.fire_on_reset and needs_fire(env):
        env = FireReset(env)
    if protocol.clip_rewards and not evaluation:
        env = ClipReward(env, -1.0, 1.0)
    return FrameStackObservation(env, protocol.frame_stack, padding_type="zero")
