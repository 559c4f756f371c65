"""The MinAtar tier (optional extra): the preset runs through the one loop, and a game's state survives
a snapshot, as exact resume needs."""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.networks import MinAtarCNN
from reproduce import config as cfg
from reproduce.loop import train
from wrappers.vector import make_env

pytestmark = pytest.mark.skipif(importlib.util.find_spec("minatar") is None,
                                reason='MinAtar is not installed (pip install -e ".[minatar]")')


def test_minatar_snapshot_restores_the_game():
    env = make_env("minatar_breakout", "classic")
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(int(rng.integers(env.action_space.n)))
    state = env.get_state()
    actions = rng.integers(env.action_space.n, size=50)

    def play():
        out = []
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(int(a))
            out.append((obs.tobytes(), reward, terminated))
            if terminated:
                break
        return out

    first = play()
    other = make_env("minatar_breakout", "classic")
    other.reset(seed=99)
    other.set_state(state)
    env = other
    assert play() == first


@pytest.mark.slow
def test_minatar_preset_runs(tmp_path):
    config = cfg.resolve("minatar_dqn", {"train.steps": 1500, "agent.learning_starts_steps": 1000,
                                         "eval.period_steps": 0, "eval.episodes": 2, "log.period_steps": 500,
                                         "log.wandb": "disabled"})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 1500
    assert "loss" in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_minatar_torso_is_the_papers_convolution_on_a_contiguous_input():
    """MinAtar's [B, 10, 10, C] booleans through one 3x3 convolution, against the same convolution on the
    channels moved first by hand; the input reaches the convolution contiguous (a channels-last one makes
    the ReLU's backward pass take a slow mixed-layout path on a CPU)."""
    torso = MinAtarCNN(in_channels=4)
    seen = []
    torso.conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    obs = torch.rand(5, 10, 10, 4) < 0.2
    features = torso(obs)
    by_hand = np.transpose(obs.numpy(), (0, 3, 1, 2)).astype(np.float32)
    expected = F.relu(F.conv2d(torch.from_numpy(by_hand), torso.conv.weight, torso.conv.bias)).reshape(5, -1)
    torch.testing.assert_close(features, expected)
    assert seen == [True]
