"""Every fast path against the plain one: the C++ vector env, process workers, the compiled and
bfloat16 learners, overlapped stepping and background evaluation."""

import dataclasses
import filecmp
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from agents import AgentConfig, DQNAgent
from agents.replay import FrameReplay
from reproduce import config as cfg
from reproduce.cli import main
from reproduce.loop import train
from wrappers.protocols import NATURE
from wrappers.vector import finished_episodes, make_vector_env, next_observations

# The part of the nature card both backends follow exactly (see wrappers/ale_vector.py for the rest).
EXACT = dataclasses.replace(NATURE, noop_max=0, fire_on_reset=False)


def step_both(a, b, steps, seed=1):
    rng = np.random.default_rng(seed)
    oa, _ = a.reset(seed=0)
    ob, _ = b.reset(seed=0)
    assert np.array_equal(oa, ob)
    terminals = games = 0
    for t in range(steps):
        action = rng.integers(0, a.single_action_space.n, a.num_envs)
        ra, rb = a.step(action), b.step(action)
        for x, y in zip(ra[:4], rb[:4]):
            assert np.array_equal(x, y), t
        assert np.array_equal(next_observations(ra[0], ra[4]), next_observations(rb[0], rb[4])), t
        assert finished_episodes(ra[4]) == finished_episodes(rb[4]), t
        terminals += int(ra[2].sum())
        games += len(finished_episodes(ra[4]))
    return terminals, games


@pytest.mark.parametrize("game", ["breakout", "space_invaders"])
def test_ale_backend_gives_the_gymnasium_frames(game):
    """Same frames, rewards (clipped), life-loss terminals, final observations and whole-game scores."""
    terminals, games = step_both(make_vector_env(game, EXACT, 2, 0, backend="ale"), make_vector_env(game, EXACT, 2, 0), 2500)
    assert terminals > games > 0  # lives were lost and games ended on the way


def test_ale_backend_evaluation_envs_match_too():
    terminals, games = step_both(make_vector_env("breakout", EXACT, 2, 0, evaluation=True, backend="ale"),
                                 make_vector_env("breakout", EXACT, 2, 0, evaluation=True), 1500)
    assert terminals == games > 0  # no life-loss terminal while evaluating


def test_a_frame_cap_of_zero_means_no_cap_on_both_backends():
    uncapped = dataclasses.replace(EXACT, eval_max_episode_frames=0)
    step_both(make_vector_env("breakout", uncapped, 1, 0, evaluation=True, backend="ale"),
              make_vector_env("breakout", uncapped, 1, 0, evaluation=True), 300)

def test_async_backend_gives_the_sync_frames():
    step_both(make_vector_env("breakout", NATURE, 2, 0, backend="async"), make_vector_env("breakout", NATURE, 2, 0), 300)


def test_ale_backend_departures_are_as_documented():
    envs = make_vector_env("pong", NATURE, 1, 0, backend="ale")
    frames = []
    for seed in range(60):
        _, info = envs.env.reset(seed=seed)
        frames.append(int(info["episode_frame_number"][0]))
    # No-op starts: 0 to 29 no-ops of 4 frames each (gymnasium's AtariPreprocessing: 1 to 30).
    assert min(frames) >= 0 and max(frames) <= 29 * 4 + 1 and len(set(frames)) > 10
    assert not envs.can_snapshot


@pytest.mark.slow
def test_resume_on_the_ale_backend_restarts_episodes_and_says_so(tmp_path, capsys):
    args = ["nature_dqn", "--game", "pong", "--steps", "600", "--set", "env.backend=ale", "--set", "env.num_envs=2",
            "--set", "agent.learning_starts_steps=200", "--set", "replay.capacity=2000", "--set", "log.checkpoint_period_steps=300",
            "--set", "eval.episodes=1", "--set", "eval.max_episode_frames=400", "--set", "eval.period_steps=0",
            "--wandb", "disabled", "--no-progress"]
    assert main(["run", *args[:4], "300", *args[5:], "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["resume", str(tmp_path / "run"), "--steps", "600", "--no-progress"]) == 0
    assert "episodes in progress were restarted" in capsys.readouterr().err
    names = [json.loads(line)["name"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert "resume_restarted_episodes" in names


def small_agent(**kw):
    torch.manual_seed(0)
    config = AgentConfig(network="mlp", mlp_hidden=[32], hidden=32, optimizer="adam", learning_rate=1e-3,
                         optimizer_eps=1e-8, **kw)
    return config


def filled_replay():
    replay = FrameReplay(500, 1, obs_shape=(4,), stack=1, obs_dtype=torch.float32, seed=0, n_step=3)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, 4)).astype(np.float32)
    for i in range(200):
        nxt = rng.normal(size=(1, 4)).astype(np.float32)
        done = i % 17 == 16
        replay.add(obs, [rng.integers(2)], [rng.normal()], [done], [False], nxt)
        obs = rng.normal(size=(1, 4)).astype(np.float32) if done else nxt
    return replay


@pytest.mark.slow
@pytest.mark.parametrize("switches", [{}, {"distributional": "c51", "v_min": -5.0, "v_max": 5.0, "double": True}])
def test_compiled_learner_matches_eager(switches):
    replay = filled_replay()
    batch = replay.sample(32)
    losses = []
    for compile in (False, True):
        agent = DQNAgent(small_agent(**switches), (4,), 1, 2, seed=0, compile=compile)
        agent.online.load_state_dict(DQNAgent(small_agent(**switches), (4,), 1, 2, seed=0).online.state_dict())
        losses.append([agent.learn(batch)["loss"].item() for _ in range(5)])
    assert np.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5), losses


def test_bf16_losses_match_fp32_within_two_percent():
    """bfloat16 keeps 8 bits of mantissa: the loss of one batch agrees with float32 to within 2%."""
    replay = filled_replay()
    batch = replay.sample(64)
    for switches in ({}, {"distributional": "c51", "v_min": -5.0, "v_max": 5.0}, {"distributional": "qr", "num_quantiles": 16}):
        losses = []
        for bf16 in (False, True):
            agent = DQNAgent(small_agent(**switches), (4,), 1, 2, seed=0, bf16=bf16)
            losses.append(agent.learn(batch)["loss"].item())
        assert losses[1] == pytest.approx(losses[0], rel=0.02), (switches, losses)


def test_bf16_nature_cnn_learns_along_the_fp32_path():
    """The convolutional learner under bfloat16 autocast (oneDNN's bf16 convolutions on a CPU, AMX where
    the CPU has it) against float32 from the same weights over the same 25 batches of Pong-sized frames:
    every loss on the way agrees within 1% (measured: within 0.1%), and learning moves Q alike."""
    rng = np.random.default_rng(0)
    replay = FrameReplay(1000, 1, obs_shape=(84, 84), stack=4, seed=0)
    obs = np.zeros((1, 4, 84, 84), np.uint8)
    obs[:, -1] = rng.integers(0, 255, (84, 84))
    for t in range(300):
        nxt = np.concatenate([obs[:, 1:], rng.integers(0, 255, (1, 1, 84, 84), dtype=np.uint8)], 1)
        replay.add(obs, [t % 6], [float(rng.random() < 0.2)], [False], [False], nxt)
        obs = nxt
    batches = [replay.sample(32) for _ in range(25)]
    probe = batches[0].obs
    config = cfg.resolve("nature_dqn").agent
    losses, moved = {}, {}
    for bf16 in (False, True):
        torch.manual_seed(0)  # the same initial weights (the training loop seeds torch so)
        agent = DQNAgent(config, (84, 84), 4, 6, seed=0, bf16=bf16)
        with torch.no_grad():
            before = agent.online(probe)
        losses[bf16] = np.array([agent.learn(b)["loss"].item() for b in batches])
        with torch.no_grad():
            moved[bf16] = agent.online(probe) - before
    assert np.allclose(losses[True], losses[False], rtol=0.01), losses
    assert moved[False].abs().mean() > 1e-3  # learning moved Q
    cosine = torch.nn.functional.cosine_similarity(moved[True].flatten(), moved[False].flatten(), dim=0)
    assert cosine > 0.999, cosine  # measured: 0.99999


def test_bf16_keeps_the_munchausen_target_in_float32():
    """M-DQN divides Q by tau = 0.03: with Q near 10 (bfloat16 steps of 0.06 there) a bfloat16 target
    network would put errors of tens of percent into the bonus tau log pi; the target stays float32."""
    batch = filled_replay().sample(64)
    targets = []
    for bf16 in (False, True):
        agent = DQNAgent(small_agent(munchausen=True, double=False), (4,), 1, 2, seed=0, bf16=bf16)
        with torch.no_grad():
            agent.target.head.advantage[-1].bias.add_(10.0)  # Q near 10, actions apart by the network's small spread
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            targets.append(agent._munchausen_target(batch))
    assert targets[1].dtype == torch.float32
    torch.testing.assert_close(targets[1], targets[0], rtol=1e-5, atol=1e-5)


CARTPOLE = {"train.steps": 3000, "log.wandb": "disabled", "eval.period_steps": 1000, "eval.episodes": 3,
            "log.checkpoint_period_steps": 0}


@pytest.mark.slow
def test_overlap_and_background_evaluation_give_the_serial_result(tmp_path):
    runs = {}
    for name, extra in {"serial": {}, "overlap": {"train.overlap": True},
                        "background": {"train.overlap": True, "eval.background": True}}.items():
        runs[name] = train(cfg.resolve("cartpole_dqn", {**CARTPOLE, **extra}), tmp_path / name, progress=False)
    shas = {k: v["params_sha256"] for k, v in runs.items()}
    assert len(set(shas.values())) == 1, shas
    for name in ("episodes.csv", "eval.csv"):
        assert filecmp.cmp(tmp_path / "serial" / name, tmp_path / "overlap" / name, shallow=False)
        assert filecmp.cmp(tmp_path / "serial" / name, tmp_path / "background" / name, shallow=False)
    assert runs["serial"]["eval_return_mean"] == runs["background"]["eval_return_mean"]


@pytest.mark.slow
def test_overlap_of_every_update_on_the_ale_backend_gives_the_serial_result(tmp_path):
    """Four environments at one update per 4 agent steps: every iteration's update runs beside ale-py's
    C++ threads stepping the environments, the case train.overlap is for."""
    pong = {"env.game": "pong", "env.backend": "ale", "env.num_envs": 4, "train.steps": 480,
            "agent.learning_starts_steps": 200, "agent.target_period_steps": 80, "replay.capacity": 2000,
            "train.compile": "false", "log.wandb": "disabled", "eval.episodes": 0, "eval.period_steps": 0,
            "log.checkpoint_period_steps": 0}
    shas = {overlap: train(cfg.resolve("nature_dqn", {**pong, "train.overlap": overlap}), tmp_path / str(overlap),
                           progress=False)["params_sha256"] for overlap in (False, True)}
    assert shas[False] == shas[True]


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_reaches_the_threads_a_run_starts(tmp_path, flush):
    # A fresh interpreter, so that torch's worker thread starts during the run. After it, the product
    # below is split between that thread, which keeps the run's mode, and this one, whose own mode the
    # run restored: some of its elements are zero only if the worker flushes, not all only if this
    # thread was restored.
    script = f"""
from pathlib import Path
import torch
from reproduce import config as cfg
from reproduce.loop import train
torch.set_num_threads(2)
train(cfg.resolve("cartpole_dqn", {{"train.steps": 300, "agent.learning_starts_steps": 100, "log.wandb": "disabled",
      "eval.period_steps": 0, "eval.episodes": 0, "log.checkpoint_period_steps": 0,
      "train.flush_denormal": {flush}}}), Path({str(tmp_path / "run")!r}), progress=False)
# 1e-40 from its bits: a float literal would be converted under this thread's mode.
denormal = torch.full((1 << 22,), 71362, dtype=torch.int32).view(torch.float32)
print(int(((denormal * 1.5).view(torch.int32) == 0).sum()))  # the bits: a float comparison would flush too
"""
    zeros = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert 0 < zeros < 1 << 22 if flush else zeros == 0
