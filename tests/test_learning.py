"""Learning tests: distributional heads recover a known return distribution; the CartPole check tier
is solved through the same training loop as Atari."""

import csv
from collections import defaultdict

import numpy as np
import pytest
import torch

from agents import AgentConfig, DQNAgent
from agents.replay import FrameReplay
from reproduce import config as cfg
from reproduce.loop import train

GAMMA = 0.9


def chain_agent(**switches) -> DQNAgent:
    """Trains on a two-step chain: s0 -> s1 (reward 0) -> end with reward +1 (p 0.75) or -1 (p 0.25).

    True return distributions: s1 {-1: 0.25, +1: 0.75}; s0 {-0.9: 0.25, +0.9: 0.75}.
    """
    torch.manual_seed(0)
    config = AgentConfig(network="mlp", mlp_hidden=[32], hidden=32, gamma=GAMMA, optimizer="adam",
                         learning_rate=2e-3, optimizer_eps=1e-8, batch_size=64, target_period_steps=200,
                         update_period_steps=1, **switches)
    agent = DQNAgent(config, (3,), 1, 2, seed=0)
    replay = FrameReplay(4000, 1, obs_shape=(3,), stack=1, gamma=GAMMA, obs_dtype=torch.float32, seed=0)
    rng = np.random.default_rng(0)
    s0, s1 = np.eye(3, dtype=np.float32)[[0]], np.eye(3, dtype=np.float32)[[1]]
    end = np.eye(3, dtype=np.float32)[[2]]
    for _ in range(1000):
        replay.add(s0, [rng.integers(2)], [0.0], [False], [False], s1)
        replay.add(s1, [rng.integers(2)], [1.0 if rng.random() < 0.75 else -1.0], [True], [False], end)
    for _ in range(3000):
        agent.learn(replay.sample(64))
    return agent


def test_c51_recovers_the_return_distribution():
    agent = chain_agent(distributional="c51", num_atoms=21, v_min=-1.0, v_max=1.0, epsilon_end=0.0)
    with torch.no_grad():
        probs = agent.online(torch.eye(3)[:2, None, :]).softmax(-1)  # [state, action, atom]
    support = agent.support
    for state, (low, high) in enumerate([(-GAMMA, GAMMA), (-1.0, 1.0)]):
        expected = torch.zeros(21)
        expected[torch.isclose(support, torch.tensor(low))] = 0.25
        expected[torch.isclose(support, torch.tensor(high))] = 0.75
        for action in range(2):
            assert (probs[state, action] - expected).abs().sum() < 0.1, (state, action, probs[state, action])


def test_qr_dqn_quantiles_match_the_true_quantiles():
    # Fractions 1/8, 3/8, 5/8, 7/8: the first lies in the 25% mass at the low return, the rest at the high.
    agent = chain_agent(distributional="qr", num_quantiles=4, kappa=0.01)
    with torch.no_grad():
        quantiles = agent.online(torch.eye(3)[:2, None, :])
    expected = torch.tensor([[-GAMMA, GAMMA, GAMMA, GAMMA], [-1.0, 1.0, 1.0, 1.0]])
    for action in range(2):
        assert torch.allclose(quantiles[:, action], expected, atol=0.1), quantiles


def eval_curve(run_dir):
    by_step = defaultdict(list)
    with open(run_dir / "eval.csv") as f:
        for row in csv.DictReader(f):
            by_step[int(row["step"])].append(float(row["return"]))
    return [float(np.mean(v)) for _, v in sorted(by_step.items())]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cartpole_dqn", "cartpole_rainbow"])
def test_cartpole_check_tier(preset, tmp_path):
    """Mean evaluation return of at least 195 within the preset's fixed, seeded budget (20,000 agent
    steps), through the same training loop as Atari."""
    config = cfg.resolve(preset, {"train.seed": 0, "log.wandb": "disabled"})
    summary = train(config, tmp_path / preset, progress=False)
    curve = eval_curve(tmp_path / preset)
    assert summary["steps"] == 20_000
    assert max(curve) >= 195, curve
