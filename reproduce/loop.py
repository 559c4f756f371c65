"""The one training loop. Every preset, Atari or CartPole, DQN or Rainbow, runs through `train`."""

from __future__ import annotations

import collections
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agents import DQNAgent
from agents.replay import build_replay
from reproduce import checkpoint
from reproduce.config import Config
from reproduce.evaluation import evaluate, summarize
from reproduce.rundir import RunDir, resolve_device
from reproduce.sinks import WandbSink
from wrappers.vector import finished_episodes, make_vector_env, next_observations, observation_spec


def crossed(step: int, previous: int, period: int) -> bool:
    """Whether a multiple of `period` lies in (previous, step]."""
    return period > 0 and step // period > previous // period


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def train(config: Config, run_dir: Path, progress: bool = True) -> dict:
    """Trains `config` into `run_dir` (which must not hold a run) and returns the run's summary."""
    device = resolve_device(config.train.device)
    replay_device = device if config.replay.device == "auto" else resolve_device(config.replay.device)
    seed = config.train.seed
    seed_everything(seed, config.train.deterministic)
    protocol, c = config.protocol, config.agent
    num_envs, total = config.env.num_envs, config.train.steps
    frame_skip = max(protocol.frame_skip, 1)

    # Everything that can fail is built before the run folder is written.
    envs = make_vector_env(config.env.game, protocol, num_envs, seed, backend=config.env.backend)
    obs, _ = envs.reset(seed=seed)
    obs_shape, stack = observation_spec(obs, protocol)
    agent = DQNAgent(c, obs_shape, stack, int(envs.single_action_space.n), device, seed)
    replay = build_replay(c, config.replay.capacity, num_envs, obs_shape, stack,
                          torch.as_tensor(obs).dtype, replay_device, seed, total)
    run = RunDir.create(run_dir, config)
    wandb = WandbSink(config.log.wandb, config.log.wandb_project, run.path, run.path.name, config.to_dict())

    recent = collections.deque(maxlen=100)  # scores of the last 100 whole games
    losses, qs = [], []
    step, owed, start = 0, 0.0, time.time()
    bar = tqdm(total=total, unit="step", disable=not progress, dynamic_ncols=True, smoothing=0.05)
    try:
        while step < total:
            epsilon = agent.epsilon(step)
            action = agent.act(obs, epsilon)
            next_obs, reward, terminated, truncated, info = envs.step(action)
            replay.add(obs, action, reward, terminated, truncated, next_observations(next_obs, info))
            obs, previous, step = next_obs, step, step + num_envs
            bar.update(num_envs)

            games = finished_episodes(info)
            if games:
                run.episodes.write(*[(step, step * frame_skip, g.env, g.score, g.length) for g in games])
                recent.extend(g.score for g in games)
                bar.set_postfix(eps=f"{epsilon:.3f}", ret=f"{np.mean(recent):.1f}", refresh=False)

            if step >= c.learning_starts_steps:
                owed += num_envs / c.update_period_steps
                while owed >= 1:
                    batch = replay.sample(c.batch_size)
                    out = agent.learn(batch)
                    if c.prioritized:
                        replay.update_priorities(batch.index, out["priority"])
                    losses.append(out["loss"])
                    qs.append(out["q"])
                    owed -= 1

            if crossed(step, previous, config.log.period_steps) or step >= total:
                values = {"epsilon": epsilon, "steps_per_second": step / (time.time() - start),
                          "updates": agent.updates}
                if losses:
                    values |= {"loss": torch.stack(losses).mean().item(), "q": torch.stack(qs).mean().item()}
                    losses, qs = [], []
                if recent:
                    values["return_last100"] = float(np.mean(recent))
                run.metrics.write(step, step * frame_skip, values)
                wandb.log(step, values)

            final = step >= total
            if crossed(step, previous, config.eval.period_steps) or final:
                scores = run_evaluation(agent, config, run, step, frame_skip)
                mean, std = summarize(scores)
                run.metrics.write(step, step * frame_skip, {"eval_return_mean": mean, "eval_return_std": std})
                wandb.log(step, {"eval_return_mean": mean, "eval_return_std": std})
                bar.write(f"step {step:,}: evaluation {mean:.1f} +/- {std:.1f} over {len(scores)} games")
            if crossed(step, previous, config.log.checkpoint_period_steps) or final:
                checkpoint.save(run.checkpoints, step, {"agent": agent.state_dict()}, config.log.keep_checkpoints)
    finally:
        bar.close()
        envs.close()

    wall = time.time() - start
    summary = run.write_summary(config, step, step * frame_skip, mean, std, len(scores), wall, agent.params_sha256())
    wandb.summary(summary)
    wandb.close()
    run.close()
    return summary


def run_evaluation(agent: DQNAgent, config: Config, run: RunDir, step: int, frame_skip: int) -> list[float]:
    results = evaluate(agent, config.env.game, config.protocol, config.eval.episodes, config.eval.epsilon,
                       config.eval.max_episode_frames, config.eval.num_envs,
                       seed=config.train.seed + 1_000_003 * (1 + step // max(config.eval.period_steps, 1)))
    run.evals.write(*[(step, step * frame_skip, i, score, length) for i, (score, length) in enumerate(results)])
    return [score for score, _ in results]
