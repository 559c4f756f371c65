"""The fast backend: ale-py's AtariVectorEnv (C++ threads) mapped onto a protocol card.

It steps all environments in C++ threads, preprocessing included, several times faster than Python
wrappers. Where it can follow the card exactly it does; the rest, measured against the gymnasium path
(tests/test_fast_paths.py), is this exact account:

- Same frames, rewards, terminations and scores as the gymnasium path, step for step, for the same
  emulator and actions: grayscale, resize, max over the last two frames, frame skip, frame cap,
  zero padding before an episode's first frame, and life loss as a learning terminal (its frame stack
  continues across a lost life; this wrapper zero-pads it, as the gymnasium path's new stack does).
- No-op starts: 0 to noop_max - 1 no-ops drawn from the C++ generator, where gymnasium's
  AtariPreprocessing draws 1 to noop_max from the environment's: same cap, a range shifted by one,
  other random numbers. The frame cap counts from the end of the no-ops here and from the game's
  first frame on the gymnasium path, so games cut by the cap differ by at most noop_max frames.
- Sticky actions: the same probability, another random stream.
- FIRE is never pressed for the agent (the C++ fire reset takes other steps than FireReset, and
  presses nothing after a lost life): the agent presses FIRE itself, as in the Nature paper.
- The emulators cannot be cloned: a resumed run restarts the episodes in progress.
"""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode, VectorWrapper

from wrappers.games import canonical_game
from wrappers.protocols import Protocol


class ALEVectorProtocol(VectorWrapper):
    """AtariVectorEnv under a protocol card: learning rewards clipped and life losses as terminals as
    the card says, whole-game unclipped scores in info["final_info"]["episode"] (as gymnasium's
    RecordEpisodeStatistics gives them) and final observations in info["final_obs"]."""

    can_snapshot = False

    def __init__(self, game: str, protocol: Protocol, num_envs: int, evaluation: bool = False, num_threads: int = 0):
        from ale_py import AtariVectorEnv

        self.protocol, self.evaluation = protocol, evaluation
        self.life_loss = protocol.terminal_on_life_loss and not evaluation
        env = AtariVectorEnv(
            canonical_game(game), num_envs,
            num_threads=num_threads,
            repeat_action_probability=protocol.repeat_action_probability,
            full_action_space=protocol.full_action_space,
            max_num_frames_per_episode=_frame_cap(protocol.eval_max_episode_frames if evaluation else protocol.max_episode_frames),
            noop_max=protocol.noop_max,
            use_fire_reset=False,
            episodic_life=False,
            life_loss_info=self.life_loss,
            reward_clipping=False,
            frameskip=protocol.frame_skip,
            stack_num=protocol.frame_stack,
            img_height=protocol.screen_size,
            img_width=protocol.screen_size,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        super().__init__(env)
        n = num_envs
        self.score, self.length = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.since_start = np.zeros(n, dtype=np.int64)  # steps since the learning episode began
        self.frame_number = np.zeros(n, dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.score[:], self.length[:], self.since_start[:] = 0.0, 0, 0
        self.frame_number = np.asarray(info["episode_frame_number"], dtype=np.int64).copy()
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        reward = np.asarray(reward, dtype=np.float64)
        self.score += reward
        self.length += 1
        frame_number = np.asarray(info["episode_frame_number"], dtype=np.int64)
        # A game ended where the emulator was reset (its frame counter went back), or was truncated.
        game_over = (terminated & (frame_number < self.frame_number)) | truncated
        self.frame_number = frame_number.copy()
        ended = terminated | truncated
        out = {"lives": info["lives"]}
        if ended.any():
            # After a game's reset the C++ env gives the finished game's last observation in
            # info["final_obs"]; after a lost life the game goes on and the observation it returns is
            # that last observation (its info["final_obs"] entry is not).
            out["final_obs"] = np.empty(len(ended), dtype=object)
            for i in np.flatnonzero(ended):
                out["final_obs"][i] = info["final_obs"][i] if game_over[i] else obs[i].copy()
            out["_final_obs"] = ended.copy()
            out["final_info"] = {"life_loss": ended & ~game_over, "_life_loss": ended.copy()}
        if game_over.any():
            out["final_info"]["episode"] = {"r": self.score.copy(), "l": self.length.copy()}
            out["final_info"]["_episode"] = game_over.copy()
            self.score[game_over], self.length[game_over] = 0.0, 0
        # A learning episode starts after any end: frames from before it are zeros.
        self.since_start = np.where(ended, 0, self.since_start + 1)
        young = self.since_start < self.protocol.frame_stack - 1
        if young.any():
            obs = obs.copy()
            for i in np.flatnonzero(young):
                obs[i, : self.protocol.frame_stack - 1 - self.since_start[i]] = 0
        if self.protocol.clip_rewards and not self.evaluation:
            reward = np.clip(reward, -1.0, 1.0)
        return obs, reward, terminated, truncated, out


def _frame_cap(frames: int) -> int:
    """The card's frame cap as AtariVectorEnv takes it: 0 means no cap on a card (as for ALE itself,
    on the gymnasium path), while the vector env would truncate every step at 0."""
    return frames if frames > 0 else 2**31 - 1
