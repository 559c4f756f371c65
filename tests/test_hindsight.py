"""Hindsight experience replay: the bit-flipping task, relabelling against a naive per-transition
implementation, exact resume, and DQN + HER solving 10 bits."""

import csv
import random

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.replay.hindsight import HindsightReplay
from reproduce import config as cfg
from reproduce.loop import train
from tests.test_resume import assert_same_run, run, start_and_kill
from wrappers.bitflip import ENV_ID, BitFlipEnv


def test_bitflip_task():
    env = gym.make(ENV_ID, n_bits=4, max_episode_steps=4)
    for seed in range(50):
        obs, _ = env.reset(seed=seed)
        assert not np.array_equal(obs["observation"], obs["desired_goal"])  # never solved at the start
        assert np.array_equal(obs["observation"], obs["achieved_goal"])
    # Flip exactly the differing bits: -1 for every step but the last, which reaches the goal and ends.
    diff = np.flatnonzero(obs["observation"] != obs["desired_goal"])
    for i, bit in enumerate(diff):
        before = obs["observation"].copy()
        obs, reward, terminated, truncated, info = env.step(int(bit))
        assert (obs["observation"] != before).sum() == 1 and obs["observation"][bit] != before[bit]
        last = i == len(diff) - 1
        assert (reward, terminated, info["is_success"]) == ((0.0, True, True) if last else (-1.0, False, False))
    # Flipping the same bit back and forth never reaches the goal: cut after n steps, return -n.
    obs, _ = env.reset(seed=1)
    bit = int(np.flatnonzero(obs["observation"] == obs["desired_goal"])[0]) if \
        (obs["observation"] == obs["desired_goal"]).any() else 0
    total = 0.0
    for t in range(4):
        obs, reward, terminated, truncated, _ = env.step(bit)
        total += reward
    assert truncated and not terminated and total == -4.0
    with pytest.raises(ValueError, match="action 4"):
        env.unwrapped.step(4)
    with pytest.raises(ValueError, match="n_bits = 0"):
        BitFlipEnv(0)


def test_compute_reward_over_batches():
    env = BitFlipEnv(3)
    achieved = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 0]])
    desired = np.array([[0, 1, 1], [1, 0, 1], [0, 0, 0]])
    assert env.compute_reward(achieved, desired).tolist() == [0.0, -1.0, 0.0]
    assert env.compute_terminated(achieved, desired).tolist() == [True, False, True]
    assert env.compute_reward(achieved[None], desired[None]).shape == (1, 3)


def naive_sample(episodes, capacity, strategy, k, gamma, batch_size, seed):
    """Per transition, from whole episodes kept as lists (oldest first): which transitions are stored,
    which goal each sampled one gets, and its reward. Draws the same random numbers in the same order."""
    flat = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]
    stored = flat[-capacity:]
    oldest = len(flat) - len(stored)
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(stored), size=batch_size)
    u_relabel, u_step = rng.random((2, batch_size))
    out = []
    for j, p in enumerate(picks):
        e, t = stored[p]
        ep = episodes[e]
        start = sum(len(x) for x in episodes[:e])  # the episode's first transition id
        obs, action, next_obs, next_achieved, desired = ep[t]
        goal = desired
        if u_relabel[j] < k / (k + 1):
            first_stored = max(0, oldest - start)
            lo = {"future": t, "final": len(ep) - 1, "episode": first_stored}[strategy]
            goal = ep[lo + int(u_step[j] * (len(ep) - lo))][3]
        reached = np.array_equal(next_achieved, goal)
        out.append((np.concatenate([obs, goal]), action, 0.0 if reached else -1.0, 0.0 if reached else gamma,
                    np.concatenate([next_obs, goal])))
    return out


@settings(max_examples=60, deadline=None)
@given(strategy=st.sampled_from(["future", "final", "episode"]), k=st.integers(0, 6),
       capacity=st.integers(8, 40), num_envs=st.integers(1, 3), seed=st.integers(0, 2**16),
       lengths=st.lists(st.integers(1, 7), min_size=3, max_size=30))
def test_relabelling_matches_a_naive_implementation(strategy, k, capacity, num_envs, seed, lengths):
    bits, gamma, env = 3, 0.98, BitFlipEnv(3)
    replay = HindsightReplay(capacity, num_envs, bits, bits, strategy, k, gamma, env.compute_reward,
                             env.compute_terminated, max_episode_steps=7, seed=seed)
    rng = np.random.default_rng(seed + 1)
    remaining = [list(lengths[i::num_envs]) for i in range(num_envs)]  # episodes each env plays
    step_in_episode = [0] * num_envs
    finished = []  # whole episodes, in the order they end
    current = [[] for _ in range(num_envs)]
    while any(remaining):
        obs = {key: rng.integers(0, 2, (num_envs, bits)) for key in ("observation", "achieved_goal", "desired_goal")}
        nxt = {key: rng.integers(0, 2, (num_envs, bits)) for key in ("observation", "achieved_goal", "desired_goal")}
        action = rng.integers(0, bits, num_envs)
        ends = np.zeros(num_envs, bool)
        for i in range(num_envs):
            if not remaining[i]:
                continue
            current[i].append((obs["observation"][i], int(action[i]), nxt["observation"][i], nxt["achieved_goal"][i],
                               obs["desired_goal"][i]))
            step_in_episode[i] += 1
            if step_in_episode[i] == remaining[i][0]:
                ends[i] = True
                finished.append(current[i])
                current[i], step_in_episode[i] = [], 0
                remaining[i].pop(0)
        active = np.array([bool(c) or e for c, e in zip(current, ends)])
        if not active.any():
            break
        # Environments that are done for good keep stepping in an episode that never ends (never stored).
        terminated = ends & rng.integers(0, 2, num_envs).astype(bool)
        replay.add(obs, action, np.zeros(num_envs), terminated, ends & ~terminated, nxt)
    assert len(replay) == min(sum(lengths), capacity)
    batch = replay.sample(16)
    expected = naive_sample(finished, capacity, strategy, k, gamma, 16, seed)
    for j, (obs, action, reward, discount, next_obs) in enumerate(expected):
        assert batch.obs[j].tolist() == obs.tolist()
        assert batch.action[j].item() == action
        assert batch.reward[j].item() == reward
        assert batch.discount[j].item() == pytest.approx(discount)
        assert batch.next_obs[j].tolist() == next_obs.tolist()


def test_relabelled_share_is_k_over_k_plus_1():
    replay = HindsightReplay(1000, 1, 2, 2, "future", 4, 0.98, BitFlipEnv(2).compute_reward)
    ids = np.zeros(100_000, np.int64)
    share = (replay.relabel_sources(ids, np.random.default_rng(0).random(ids.size), np.zeros(ids.size)) >= 0).mean()
    assert share == pytest.approx(0.8, abs=0.01)


def test_hindsight_needs_a_goal_task():
    with pytest.raises(cfg.ConfigError, match="needs a goal-conditioned task"):
        cfg.resolve("her_bitflip", {"env.game": "cartpole"})
    with pytest.raises(cfg.ConfigError, match="agent.hindsight = 'past'"):
        cfg.resolve("her_bitflip", {"agent.hindsight": "past"})
    with pytest.raises(cfg.ConfigError, match="uniform 1-step replay only"):
        cfg.resolve("her_bitflip", {"agent.n_step": 3})


def success_rate(run_dir, bits):
    rows = list(csv.DictReader(open(run_dir / "eval.csv")))
    last = max(int(r["step"]) for r in rows)
    final = [float(r["return"]) for r in rows if int(r["step"]) == last]
    return float(np.mean([score > -bits for score in final]))


@pytest.mark.slow
def test_her_solves_10_bits(tmp_path):
    config = cfg.resolve("her_bitflip", {"train.steps": 8_000, "log.wandb": "disabled"})
    train(config, tmp_path / "her", progress=False)
    assert success_rate(tmp_path / "her", 10) >= 0.9


@pytest.mark.slow
def test_her_run_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    args = ["her_bitflip", "--steps", "3200", "--set", "log.checkpoint_period_steps=800",
            "--set", "eval.period_steps=1600", "--set", "eval.episodes=20", "--set", "log.period_steps=400"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run(args, reference).returncode == 0
    start_and_kill(args, killed, 1, random.Random(0))
    from reproduce.cli import main

    assert main(["resume", str(killed), "--no-progress"]) == 0
    assert_same_run(reference, killed)
