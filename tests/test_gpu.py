"""The GPU paths against the CPU ones: replay storage and sampling by index on the device, the learner
(eager, compiled, CUDA graphs, bfloat16), and a whole run with exact resume. Skipped without CUDA (CI
has none); run on a GPU machine with `pytest tests/test_gpu.py`."""

import filecmp
import json

import numpy as np
import pytest
import torch

from agents import AgentConfig, DQNAgent
from agents.replay import FrameReplay, PrioritizedReplay
from agents.update import UpdateStep
from reproduce import config as cfg
from reproduce.cli import main
from reproduce.loop import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 in the comparisons: float32 on both sides."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def atari_like_stream(replay_cls, device, steps=600, num_envs=4, **kw):
    replay = replay_cls(2_000, num_envs, obs_shape=(84, 84), stack=4, n_step=3, seed=0, device=device, **kw)
    rng = np.random.default_rng(0)
    obs = np.zeros((num_envs, 4, 84, 84), np.uint8)
    obs[:, -1] = rng.integers(0, 255, (num_envs, 84, 84))
    for _ in range(steps):
        frame = rng.integers(0, 255, (num_envs, 1, 84, 84), dtype=np.uint8)
        nxt = np.concatenate([obs[:, 1:], frame], 1)
        terminated, truncated = rng.random(num_envs) < 0.02, rng.random(num_envs) < 0.01
        replay.add(obs, rng.integers(6, size=num_envs), rng.normal(size=num_envs), terminated, truncated, nxt)
        obs = nxt.copy()
        done = terminated | truncated
        obs[done, :-1] = 0  # a new episode: zero padding before its first frame
    return replay


@pytest.mark.parametrize("replay_cls", [FrameReplay, PrioritizedReplay])
def test_replay_on_the_gpu_gathers_what_the_cpu_one_does(replay_cls):
    cpu, gpu = atari_like_stream(replay_cls, "cpu"), atari_like_stream(replay_cls, "cuda")
    assert len(cpu) == len(gpu)
    assert torch.equal(cpu.tree.leaves, gpu.tree.leaves.cpu())
    index = gpu.sample(256).index
    a, b = cpu._gather(index.cpu()), gpu._gather(index)
    for name in ("obs", "action", "reward", "discount", "next_obs"):
        assert torch.allclose(getattr(a, name), getattr(b, name).cpu()), name
    # The descent finds the same leaves for the same prefix sums.
    u = torch.rand(4096, dtype=torch.float64) * cpu.tree.total()
    assert torch.equal(cpu.tree.find(u), gpu.tree.find(u.cuda()).cpu())
    if replay_cls is PrioritizedReplay:
        priority = torch.rand(256) * 3
        cpu.update_priorities(index.cpu(), priority)
        gpu.update_priorities(index, priority.cuda())
        # (|delta| + eps)^alpha: the GPU's pow may differ from the CPU's in the last bit.
        assert torch.allclose(cpu.tree.leaves, gpu.tree.leaves.cpu(), rtol=1e-6, atol=0)
        assert torch.allclose(cpu.max_priority, gpu.max_priority.cpu(), rtol=1e-6, atol=0)


def nature_batch(seed=0):
    replay = atari_like_stream(FrameReplay, "cuda", steps=300)
    replay.generator.manual_seed(seed)
    return replay.sample(32)


@pytest.mark.parametrize("switches", [{}, {"distributional": "c51", "double": True, "dueling": True}])
def test_learner_on_the_gpu_follows_the_cpu_one(switches):
    """Five updates of the Nature network (centered RMSProp) on the same batch, CPU and GPU."""
    batch = nature_batch()
    losses = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        agent = DQNAgent(AgentConfig(**switches), (84, 84), 4, 6, device, seed=0)
        losses.append([agent.learn(batch.to(torch.device(device)))["loss"].item() for _ in range(5)])
    assert np.allclose(losses[0], losses[1], rtol=1e-3, atol=1e-6), losses


@pytest.mark.parametrize("mode", ["compile", "reduce-overhead"])
def test_compiled_learner_on_the_gpu_matches_eager(mode):
    batches = [nature_batch(seed) for seed in range(6)]
    losses = []
    for compile in (False, True):
        torch.manual_seed(0)
        agent = DQNAgent(AgentConfig(), (84, 84), 4, 6, "cuda", seed=0, compile=compile,
                         reduce_overhead=mode == "reduce-overhead")
        losses.append([agent.learn(b)["loss"].item() for b in batches])
    assert np.allclose(losses[0], losses[1], rtol=1e-3, atol=1e-6), losses


@pytest.mark.parametrize("prioritized, optimizer", [(False, "centered_rmsprop"), (True, "adam")])
def test_graphed_update_follows_the_eager_one(prioritized, optimizer):
    """The whole update captured as a CUDA graph: at each update, the batch it drew gives the same loss,
    priorities and weights through the eager path, and the draws move on from update to update."""
    replay_cls = PrioritizedReplay if prioritized else FrameReplay
    extra = {"beta_steps": 5_000} if prioritized else {}
    graphed_replay, eager_replay = (atari_like_stream(replay_cls, "cuda", **extra) for _ in range(2))
    config = AgentConfig(prioritized=prioritized, double=True, optimizer=optimizer)
    agents = []
    for _ in range(2):
        torch.manual_seed(0)
        agents.append(DQNAgent(config, (84, 84), 4, 6, "cuda", seed=0))
    graphed, eager = agents
    update = UpdateStep(graphed, graphed_replay, 32, prioritized, cuda_graph=True)
    drawn = set()
    for _ in range(10):
        out = update()
        index = update.outputs["index"].clone()
        drawn.add(tuple(index.tolist()))
        eager_replay.prepare_sample(32)
        batch = eager_replay._gather(index)
        if prioritized:  # the paper's weights, (P(i) / min P)^-beta, from the eager replay's tree
            p = eager_replay.tree.get(index).double() / eager_replay.tree.total()
            batch.weight = ((p / p.min()) ** -eager_replay.beta()).float()
        ref = eager.gradient_step(batch)
        if prioritized:
            eager_replay.update_priorities(index, ref["priority"])
        eager.step_done()
        assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-4)
    assert update.graph is not None and len(drawn) == 10
    assert torch.allclose(graphed_replay.tree.leaves, eager_replay.tree.leaves, rtol=1e-5)
    for a, b in zip(graphed.online.parameters(), eager.online.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_on_the_gpu_within_two_percent():
    batch = nature_batch()
    for switches in ({}, {"distributional": "c51"}, {"distributional": "qr"}):
        losses = []
        for bf16 in (False, True):
            torch.manual_seed(0)
            agent = DQNAgent(AgentConfig(**switches), (84, 84), 4, 6, "cuda", seed=0, bf16=bf16)
            losses.append(agent.learn(batch)["loss"].item())
        assert losses[1] == pytest.approx(losses[0], rel=0.02), (switches, losses)


def test_a_gpu_run_resumes_exactly(tmp_path):
    """A deterministic Breakout run on the GPU, replay on the GPU: stopped at its checkpoint and resumed,
    it ends where the uninterrupted run ends."""
    overrides = {"env.game": "breakout", "train.steps": 1600, "env.num_envs": 2, "agent.learning_starts_steps": 400,
                 "replay.capacity": 1200, "log.checkpoint_period_steps": 800, "eval.period_steps": 800,
                 "eval.episodes": 2, "eval.max_episode_frames": 1000, "log.wandb": "disabled",
                 "train.device": "cuda", "train.deterministic": True, "train.compile": "false"}
    whole = train(cfg.resolve("nature_dqn", overrides), tmp_path / "whole", progress=False)
    half = train(cfg.resolve("nature_dqn", {**overrides, "train.steps": 800}), tmp_path / "cut", progress=False)
    assert half["steps"] == 800
    # Resuming with a longer budget continues the same run.
    assert main(["resume", str(tmp_path / "cut"), "--steps", "1600", "--wandb", "disabled", "--no-progress"]) == 0
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert cut["params_sha256"] == whole["params_sha256"]
    assert filecmp.cmp(tmp_path / "whole" / "episodes.csv", tmp_path / "cut" / "episodes.csv", shallow=False)
