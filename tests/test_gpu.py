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
    """No TF32 in the comparisons: float32 on both sides. And deterministic cuDNN: otherwise the first
    convolutions of a process may run other algorithms (or atomics in another order) on one side than on
    the other, a few 1e-6 apart after ten updates (measured on an H200, old and new optimizer alike),
    which says nothing about the paths compared here."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = cuda.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark
    cuda.allow_tf32 = cudnn.allow_tf32 = cudnn.benchmark = False
    cudnn.deterministic = True
    yield
    cuda.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved


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


HEADS = {  # the switches whose updates draw random numbers on the device are here too: noisy layers, IQN
    "dqn": dict(double=True),
    "der": dict(network="data_efficient_cnn", distributional="c51", noisy=True, noisy_sigma0=0.1, dueling=True,
                double=True, max_grad_norm=10.0, epsilon_start=0.0, epsilon_end=0.0),
    "qr": dict(distributional="qr", double=True),
    "iqn": dict(distributional="iqn", double=True),
    "munchausen": dict(munchausen=True),
}


@pytest.mark.parametrize("head, prioritized, optimizer", [
    ("dqn", False, "centered_rmsprop"), ("dqn", True, "adam"), ("der", True, "adam"), ("qr", False, "adam"),
    ("iqn", False, "adam"), ("munchausen", False, "adam")])
def test_graphed_update_follows_the_eager_one(head, prioritized, optimizer):
    """The whole update captured as a CUDA graph: at each update, the batch it drew gives the same loss,
    priorities and weights through the eager path, and the draws move on from update to update. Both sides
    start each update from the same seeds, so that noisy layers and IQN's fractions draw the same numbers
    (a graph reads its generators' seeds and offsets when it is replayed)."""
    replay_cls = PrioritizedReplay if prioritized else FrameReplay
    extra = {"beta_steps": 5_000} if prioritized else {}
    graphed_replay, eager_replay = (atari_like_stream(replay_cls, "cuda", **extra) for _ in range(2))
    config = AgentConfig(prioritized=prioritized, optimizer=optimizer, **HEADS[head])
    agents = []
    for _ in range(2):
        torch.manual_seed(0)
        agents.append(DQNAgent(config, (84, 84), 4, 6, "cuda", seed=0))
    graphed, eager = agents
    update = UpdateStep(graphed, graphed_replay, 32, prioritized, cuda_graph=True)

    def seed(agent, i):
        torch.cuda.manual_seed(1_000 + i)
        agent.generator.manual_seed(2_000 + i)

    drawn, losses = set(), []
    for i in range(10):
        seed(graphed, i)
        out = update()
        index = update.outputs["index"].clone()
        drawn.add(tuple(index.tolist()))
        eager_replay.prepare_sample(32)
        batch = eager_replay._gather(index)
        if prioritized:  # the paper's weights, (P(i) / min P)^-beta, from the eager replay's tree
            p = eager_replay.tree.get(index).double() / eager_replay.tree.total()
            batch.weight = ((p / p.min()) ** -eager_replay.beta()).float()
        seed(eager, i)
        ref = eager.gradient_step(batch)
        if prioritized:
            eager_replay.update_priorities(index, ref["priority"])
        eager.step_done()
        losses.append((out["loss"].item(), ref["loss"].item()))
    assert update.cuda_graph and update.graph is not None, "the capture failed and the update fell back to eager"
    assert len(drawn) == 10
    assert np.allclose(*zip(*losses), rtol=1e-4, atol=0), losses
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


@pytest.mark.parametrize("noisy", [False, True])
def test_graph_replays_draw_new_noise(noisy):
    """Replayed, the graph does not repeat the random numbers it drew while captured: on the same batch
    (the replay's generator reseeded before each update) and with a negligible learning rate, noisy layers
    give a new loss at every update, and plain ones the same loss."""
    replay = atari_like_stream(FrameReplay, "cuda", steps=300)
    agent = DQNAgent(AgentConfig(learning_rate=1e-12, noisy=noisy, distributional="c51", epsilon_start=0.0, epsilon_end=0.0), (84, 84), 4, 6, "cuda",
                     seed=0)
    update = UpdateStep(agent, replay, 32, prioritized=False, cuda_graph=True)
    losses = []
    for _ in range(8):
        replay.generator.manual_seed(0)
        losses.append(update()["loss"].item())
    assert update.graph is not None
    replayed = losses[4:]  # updates 5 to 8: graph replays
    if noisy:
        assert len(set(replayed)) == len(replayed), losses
    else:
        assert max(replayed) - min(replayed) <= 1e-6 * abs(replayed[0]), losses


@pytest.mark.parametrize("preset, cuda_graph", [("nature_dqn", False), ("nature_dqn", True), ("rainbow", False),
                                                ("rainbow", True), ("prioritized_dqn", True), ("noisy_dqn", True), ("c51", True)])
def test_a_gpu_run_resumes_exactly(tmp_path, preset, cuda_graph):
    """A deterministic Breakout run on the GPU, replay on the GPU (and the update one CUDA graph): stopped
    at its checkpoint and resumed, it ends where the uninterrupted run ends. Resumed, the graphed update
    is warmed up and captured again."""
    overrides = {"env.game": "breakout", "train.steps": 1600, "env.num_envs": 2, "agent.learning_starts_steps": 400,
                 "replay.capacity": 1200, "log.checkpoint_period_steps": 800, "eval.period_steps": 800,
                 "eval.episodes": 2, "eval.max_episode_frames": 1000, "log.wandb": "disabled",
                 "train.device": "cuda", "train.deterministic": True, "train.compile": "false",
                 "train.cuda_graph": cuda_graph,
                 # beta anneals over the budget by default: the same schedule in both runs
                 "agent.priority_beta_steps": 800}
    whole = train(cfg.resolve(preset, overrides), tmp_path / "whole", progress=False)
    half = train(cfg.resolve(preset, {**overrides, "train.steps": 800}), tmp_path / "cut", progress=False)
    assert half["steps"] == 800
    # Resuming with a longer budget continues the same run.
    assert main(["resume", str(tmp_path / "cut"), "--steps", "1600", "--wandb", "disabled", "--no-progress"]) == 0
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert cut["params_sha256"] == whole["params_sha256"]
    assert filecmp.cmp(tmp_path / "whole" / "episodes.csv", tmp_path / "cut" / "episodes.csv", shallow=False)
