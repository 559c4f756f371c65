"""The one training loop. Every preset, Atari or CartPole, DQN or Rainbow, runs through `train`.

A run can stop at any step boundary (a signal, or a kill after a checkpoint) and `train(...,
resume=True)` continues it exactly: the checkpoint holds the networks, optimizer, replay, every random
stream, every environment's emulator and wrapper state, the loop's counters and the log positions.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agents import DQNAgent
from agents.replay import build_replay
from agents.update import UpdateStep
from reproduce.checkpoint import CheckpointError, Checkpointer
from reproduce.config import Config
from reproduce.evaluation import evaluate, summarize
from reproduce.rundir import RunDir, resolve_device
from reproduce.sinks import WandbSink
from wrappers.vector import (
    agent_observation,
    finished_episodes,
    get_states,
    goal_task,
    make_vector_env,
    next_observations,
    observation_spec,
    set_states,
)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint; the exit code is 128 + the signal."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step:,} after writing a checkpoint")
        self.signum, self.step = signum, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class LoopState:
    step: int = 0  # agent steps, all environments together
    owed: float = 0.0  # gradient updates due but not yet made
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))  # last game scores
    losses: list = field(default_factory=list)  # since the last metric line
    qs: list = field(default_factory=list)
    elapsed: float = 0.0  # wall seconds in earlier processes of this run
    last_eval: tuple = (math.nan, math.nan, 0)  # mean, std, games

    def state_dict(self) -> dict:
        return {"step": self.step, "owed": self.owed, "recent": list(self.recent),
                "losses": [x.cpu() for x in self.losses], "qs": [x.cpu() for x in self.qs],
                "elapsed": self.elapsed, "last_eval": self.last_eval}

    @classmethod
    def from_state(cls, state: dict, device) -> LoopState:
        s = cls(step=state["step"], owed=state["owed"], elapsed=state["elapsed"], last_eval=tuple(state["last_eval"]))
        s.recent.extend(state["recent"])
        s.losses = [x.to(device) for x in state["losses"]]
        s.qs = [x.to(device) for x in state["qs"]]
        return s


class StopSignals:
    """Records SIGTERM, SIGUSR1 (Slurm's warning before a time limit) and SIGINT instead of dying, so
    that the loop finishes its step and checkpoints."""

    def __enter__(self):
        self.received = None
        self.previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def crossed(step: int, previous: int, period: int) -> bool:
    """Whether a multiple of `period` lies in (previous, step]."""
    return period > 0 and step // period > previous // period


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace, set before its first use (PyTorch
        # otherwise raises at the first matrix product on a GPU).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def denormals_flushed(on: bool):
    """Denormal floats read and written as zero (FTZ and DAZ) on this thread and the threads started
    within, which inherit a thread's floating-point mode when they are created; this thread's mode is
    restored on exit (threads torch started within keep theirs)."""
    before = bool(np.float32(1e-39) == 0)  # torch has no getter: a conversion that flushes or not
    if not torch.set_flush_denormal(on) and on:
        print("warning: this CPU cannot flush denormals (train.flush_denormal has no effect)", file=sys.stderr)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def train(config: Config, run_dir: Path, progress: bool = True, resume: bool = False) -> dict:
    """Trains `config` into `run_dir` and returns the run's summary.

    A new run needs a folder that holds no run; with resume=True the folder's newest usable checkpoint
    is continued (see reproduce.rundir.check_resumable for what may differ from its config).
    """
    # Set first, so that the threads torch starts for the run inherit it.
    with denormals_flushed(config.train.flush_denormal):
        return _train(config, run_dir, progress, resume)


def _train(config: Config, run_dir: Path, progress: bool, resume: bool) -> dict:
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
    agent = DQNAgent(c, obs_shape, stack, int(envs.single_action_space.n), device, seed,
                     compile=config.train.compile in ("true", "reduce-overhead"), bf16=config.train.bf16,
                     reduce_overhead=config.train.compile == "reduce-overhead")
    task = goal_task(config.env.game)
    replay = build_replay(c, config.replay.capacity, num_envs, obs_shape, stack,
                          torch.as_tensor(agent_observation(obs)).dtype, replay_device, seed, total, task,
                          config.replay.compress)
    update = UpdateStep(agent, replay, c.batch_size, c.prioritized, cuda_graph=config.train.cuda_graph)
    # A hindsight replay keeps the goals apart (to relabel them); every other replay stores what the
    # network sees.
    stored = (lambda o: o) if c.hindsight != "none" else agent_observation
    checkpointer = Checkpointer(run_dir / "checkpoints", config.log.keep_checkpoints)
    wandb_id = None
    if resume:
        saved = checkpointer.load_latest(replay)
        run = RunDir.reopen(run_dir, saved["log_positions"])
        agent.load_state_dict(saved["agent"])
        loop = LoopState.from_state(saved["loop"], device)
        if saved["envs"] is not None:
            set_states(envs, saved["envs"])
            obs = saved["obs"]
        else:  # a backend without emulator snapshots: new episodes, the old ones cut in the replay
            obs, _ = envs.reset(seed=seed + loop.step)
            replay.cut_episodes()
            print(f"warning: backend {config.env.backend!r} cannot restore emulators; the {num_envs} episodes in "
                  "progress were restarted (recorded as resume_restarted_episodes in metrics.jsonl)", file=sys.stderr)
            run.metrics.write(loop.step, loop.step * frame_skip, {"resume_restarted_episodes": num_envs})
        set_rng_state(saved["rng"])
        wandb_id = saved.get("wandb_id")
        print(f"resumed {run_dir} at step {loop.step:,}", file=sys.stderr)
    else:
        run = RunDir.create(run_dir, config)
        loop = LoopState()
    wandb = WandbSink(config.log.wandb, config.log.wandb_project, run.path, run.path.name, config.to_dict(), wandb_id)

    def checkpoint() -> None:
        state = {"agent": agent.state_dict(), "envs": get_states(envs), "obs": obs, "rng": rng_state(),
                 "loop": loop.state_dict() | {"elapsed": loop.elapsed + time.time() - start},
                 "log_positions": run.positions(), "wandb_id": wandb.run_id, "config": config.to_dict()}
        try:
            checkpointer.save(loop.step, state, replay)
        except (CheckpointError, OSError) as e:  # the previous checkpoint is intact; keep training
            print(f"warning: checkpoint at step {loop.step:,} not written: {e}", file=sys.stderr)

    evaluator = Evaluator(config, run, wandb, frame_skip)
    pool = ThreadPoolExecutor(1, thread_name_prefix="envs") if config.train.overlap else None
    start, first_step = time.time(), loop.step
    bar = tqdm(total=total, initial=loop.step, unit="step", disable=not progress, dynamic_ncols=True, smoothing=0.05)
    try:
        with StopSignals() as signals:
            while loop.step < total:
                step = loop.step
                epsilon = agent.epsilon(step)
                action = agent.act(agent_observation(obs), epsilon)
                # The environments step while the learner updates on the transitions before this step
                # (in a thread with train.overlap; the order, and so the result, is the same without).
                stepping = pool.submit(envs.step, action) if pool else None
                previous, step = step, step + num_envs
                if step >= c.learning_starts_steps:
                    loop.owed += num_envs / c.update_period_steps
                    while loop.owed >= 1:
                        out = update()
                        loop.losses.append(out["loss"])
                        loop.qs.append(out["q"])
                        loop.owed -= 1
                next_obs, reward, terminated, truncated, info = stepping.result() if pool else envs.step(action)
                replay.add(stored(obs), action, reward, terminated, truncated, stored(next_observations(next_obs, info)))
                obs = next_obs
                loop.step = step
                bar.update(num_envs)

                games = finished_episodes(info)
                if games:
                    run.episodes.write(*[(step, step * frame_skip, g.env, g.score, g.length) for g in games])
                    loop.recent.extend(g.score for g in games)
                    bar.set_postfix(eps=f"{epsilon:.3f}", ret=f"{np.mean(loop.recent):.1f}", refresh=False)

                if crossed(step, previous, config.log.period_steps) or step >= total:
                    values = {"epsilon": epsilon, "updates": agent.updates,
                              "steps_per_second": (step - first_step) / (time.time() - start)}
                    if loop.losses:
                        values |= {"loss": torch.stack(loop.losses).mean().item(), "q": torch.stack(loop.qs).mean().item()}
                        loop.losses, loop.qs = [], []
                    if loop.recent:
                        values["return_last100"] = float(np.mean(loop.recent))
                    run.metrics.write(step, step * frame_skip, values)
                    wandb.log(step, values)

                if crossed(step, previous, config.eval.period_steps) or step >= total:
                    loop.last_eval = evaluator.collect() or loop.last_eval
                    loop.last_eval = evaluator.start(agent, step) or loop.last_eval
                final = step >= total
                if crossed(step, previous, config.log.checkpoint_period_steps) or final or signals.received:
                    # Evaluation lines are written before a checkpoint, so that a resumed run has them.
                    loop.last_eval = evaluator.collect() or loop.last_eval
                    checkpoint()
                if signals.received:
                    raise Preempted(signals.received, step)
    finally:
        bar.close()
        if pool:
            pool.shutdown()
        envs.close()
        evaluator.close()
        if sys.exc_info()[0] is not None:
            wandb.close()
            run.close()

    wall = loop.elapsed + time.time() - start
    mean, std, games = loop.last_eval
    summary = run.write_summary(config, loop.step, loop.step * frame_skip, mean, std, games, wall, agent.params_sha256())
    wandb.summary(summary)
    wandb.close()
    run.close()
    return summary


class Evaluator:
    """Evaluation games on their own environments, with a copy of the network taken at `start`: in a
    background thread with eval.background (training goes on meanwhile), or at once. Results are
    written by `collect`, at the next evaluation, checkpoint or end: a fixed place in the logs
    whatever the thread's timing. Seeded by the step, so a resumed run replays them exactly."""

    def __init__(self, config: Config, run: RunDir, wandb: WandbSink, frame_skip: int):
        self.config, self.run, self.wandb, self.frame_skip = config, run, wandb, frame_skip
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="eval") if config.eval.background else None
        self.pending = None  # (step, future or results)

    def start(self, agent: DQNAgent, step: int) -> tuple | None:
        """Starts an evaluation; without a background thread it runs now and its result is returned.
        With eval.episodes = 0 there is none: nothing is written."""
        c = self.config
        if c.eval.episodes == 0:
            return None
        actor = agent.actor(seed=c.train.seed + step)
        job = functools.partial(evaluate, actor, c.env.game, c.protocol, c.eval.episodes, c.eval.epsilon,
                                c.eval.max_episode_frames, c.eval.num_envs,
                                seed=c.train.seed + 1_000_003 * (1 + step // max(c.eval.period_steps, 1)),
                                backend=c.env.backend)
        self.pending = (step, self.pool.submit(job) if self.pool else job())
        return None if self.pool else self.collect()

    def collect(self) -> tuple | None:
        """Waits for the evaluation in flight, writes it, and returns (mean, std, games)."""
        if self.pending is None:
            return None
        step, results = self.pending
        self.pending = None
        if self.pool:
            results = results.result()
        frames = step * self.frame_skip
        self.run.evals.write(*[(step, frames, i, score, length) for i, (score, length) in enumerate(results)])
        mean, std = summarize([score for score, _ in results])
        self.run.metrics.write(step, frames, {"eval_return_mean": mean, "eval_return_std": std})
        self.wandb.log(step, {"eval_return_mean": mean, "eval_return_std": std})
        print(f"step {step:,}: evaluation {mean:.1f} +/- {std:.1f} over {len(results)} games", file=sys.stderr)
        return (mean, std, len(results))

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(cancel_futures=True)
