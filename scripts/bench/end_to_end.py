"""End-to-end speed of Nature DQN on Pong at the papers' ratio (one update of 32 per 4 agent steps):
this suite beside Stable-Baselines3's DQN and a CleanRL-style loop (following cleanrl's dqn_atari.py:
SB3's ReplayBuffer with optimize_memory_usage, one network forward per step, MSE to the max target),
all on the same environment (the suite's `nature` protocol), the same hyperparameters and one torch
thread each, timed alternately in one process; plus the learner's own rate (the bound it sets), the
acting rate of each vector backend, and replay sampling beside SB3's ReplayBuffer.

    pip install stable-baselines3          # for the comparison only
    python scripts/bench/end_to_end.py     # -> results/bench/end_to_end.json
    bash scripts/bench/gpu.sh              # on a CUDA machine -> results/bench/end_to_end_gpu.json

Each system warms up (random steps until learning starts, then WARM_LEARN steps of learning, which
includes torch.compile's compilation), then is timed over MEASURE agent steps (MEASURE_BASELINE for
SB3 and the CleanRL-style loop, which step one environment). Each section's figures are written as soon
as they are measured.

The timed window comes early in a run, where each system's epsilon is still about 1, so that nearly
every action is random and none of the three runs its network to act. Most of a 50M-frame run acts at
epsilon 0.1 instead (its floor after the first 1M frames); `--epsilon 0.1` holds every system there:

    python scripts/bench/end_to_end.py --epsilon 0.1 --skip learner,acting,sampling --out end_to_end_epsilon_0.1
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import loop_rate, machine, nature_update, rate, write  # noqa: E402

from agents import DQNAgent  # noqa: E402
from agents.replay import FrameReplay  # noqa: E402
from reproduce import config as cfg  # noqa: E402
from wrappers.vector import make_env, make_vector_env, next_observations  # noqa: E402

# set from the command line
LEARN_START, WARM_LEARN, MEASURE, MEASURE_BASELINE = 1_000, 200, 800, 800
DEVICE, CAPACITY, NUM_ENVS = "cpu", 100_000, 1
EPSILON = None  # each system's own schedule, or one epsilon held by all
# The optimizer SB3's DQN and the CleanRL-style loop use (torch's Adam, its default epsilon), for a variant
# of ours that differs from them only in its loop.
ADAM = {"agent.optimizer": "adam", "agent.optimizer_eps": 1e-8}
HP = dict(learning_rate=2.5e-4, batch_size=32, train_freq=4, target_period=10_000, gamma=0.99)


def ours(variant: dict) -> float:
    """Agent steps per second of the suite's loop over the measured window."""
    overrides = {"env.game": "pong", "replay.capacity": CAPACITY, "train.device": DEVICE, "env.num_envs": NUM_ENVS,
                 **variant}
    if EPSILON is not None:
        overrides |= {"agent.epsilon_start": EPSILON, "agent.epsilon_end": EPSILON}
    return loop_rate("nature_dqn", overrides, LEARN_START, WARM_LEARN, MEASURE)


class StepTimer:
    """Wall time at given agent-step counts (for SB3's callback and the CleanRL loop)."""

    def __init__(self):
        self.marks = {}

    def mark(self, step: int) -> None:
        if step in (LEARN_START + WARM_LEARN, LEARN_START + WARM_LEARN + MEASURE_BASELINE):
            if DEVICE != "cpu":
                torch.cuda.synchronize()
            self.marks[step] = time.perf_counter()

    def rate(self) -> float:
        a, b = sorted(self.marks)
        return MEASURE_BASELINE / (self.marks[b] - self.marks[a])


def sb3() -> float | None:
    try:
        from stable_baselines3 import DQN
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        return None
    timer = StepTimer()

    class Mark(BaseCallback):
        def _on_step(self) -> bool:
            timer.mark(self.num_timesteps)
            return True

    env = DummyVecEnv([lambda: make_env("pong", "nature")])
    model = DQN("CnnPolicy", env, learning_rate=HP["learning_rate"], buffer_size=CAPACITY,
                learning_starts=LEARN_START, batch_size=HP["batch_size"], train_freq=HP["train_freq"],
                gradient_steps=1, target_update_interval=HP["target_period"], gamma=HP["gamma"],
                optimize_memory_usage=False, device=DEVICE, seed=0, verbose=0,
                **({} if EPSILON is None else {"exploration_initial_eps": EPSILON, "exploration_final_eps": EPSILON}))
    model.learn(LEARN_START + WARM_LEARN + MEASURE_BASELINE, callback=Mark())
    env.close()
    return timer.rate()


def cleanrl() -> float | None:
    """A loop in the manner of cleanrl's dqn_atari.py (written here; cleanrl is not a package)."""
    try:
        from stable_baselines3.common.buffers import ReplayBuffer
    except ImportError:
        return None
    import torch.nn.functional as F
    from torch import nn

    env = make_env("pong", "nature")
    n = env.action_space.n

    def network():
        return nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
                             nn.Linear(512, n))

    q, target = network().to(DEVICE), network().to(DEVICE)
    target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=HP["learning_rate"])
    rb = ReplayBuffer(CAPACITY, env.observation_space, env.action_space, DEVICE, optimize_memory_usage=True,
                      handle_timeout_termination=False)
    timer, rng = StepTimer(), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for step in range(1, LEARN_START + WARM_LEARN + MEASURE_BASELINE + 1):
        epsilon = max(0.1, 1.0 - step / 1e6) if EPSILON is None else EPSILON
        if rng.random() < epsilon:
            action = int(rng.integers(n))
        else:
            with torch.no_grad():
                action = int(q(torch.as_tensor(obs[None], device=DEVICE).float() / 255.0).argmax(1))
        nxt, reward, terminated, truncated, info = env.step(action)
        rb.add(obs, nxt, np.array([action]), np.array([reward]), np.array([terminated]), [info])
        obs = env.reset()[0] if terminated or truncated else nxt
        if step > LEARN_START and step % HP["train_freq"] == 0:
            data = rb.sample(HP["batch_size"])
            with torch.no_grad():
                y = data.rewards.flatten() + HP["gamma"] * target(data.next_observations.float() / 255.0).max(1).values \
                    * (1 - data.dones.flatten())
            old = q(data.observations.float() / 255.0).gather(1, data.actions).squeeze(1)
            loss = F.mse_loss(y, old)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if step % HP["target_period"] == 0:
            target.load_state_dict(q.state_dict())
        timer.mark(step)
    env.close()
    return timer.rate()


def learner(compile: bool = False, seconds: float = 15.0, reduce_overhead: bool = False, bf16: bool = False,
            cuda_graph: bool = False, adam: bool = False) -> float:
    """Updates per second of the suite's learner, sampling included, on a replay of 2,000 steps
    (compiled, or captured, after warm-up); with the paper's centered RMSProp, or with ADAM."""
    update = nature_update(DEVICE, ADAM if adam else None, cuda_graph=cuda_graph, compile=compile,
                           reduce_overhead=reduce_overhead, bf16=bf16)
    for _ in range(10):  # compiles (and captures the CUDA graphs), where asked
        update()
    return rate(update, seconds)


def acting(backend: str, num_envs: int, seconds: float = 10.0) -> float:
    """Agent steps per second of batched greedy acting (one forward for all envs) on a vector backend."""
    agent = DQNAgent(cfg.resolve("nature_dqn").agent, (84, 84), 4, 6, DEVICE, seed=0)
    envs = make_vector_env("pong", "nature", num_envs, seed=0, backend=backend)
    obs = envs.reset(seed=0)[0]

    def step():
        nonlocal obs
        obs = envs.step(agent.act(obs, 0.05))[0]

    steps_per_second = num_envs * rate(step, seconds)
    envs.close()
    return steps_per_second


def sampling(seconds: float = 5.0) -> dict:
    """sample(32) per second at capacity CAPACITY, ours (on DEVICE) beside SB3's ReplayBuffer (its
    samples moved to DEVICE), both filled alike."""
    out = {}
    ours_replay = FrameReplay(CAPACITY, 1, obs_shape=(84, 84), stack=4, seed=0, device=DEVICE)
    envs = make_vector_env("pong", "nature", 1, seed=0)
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    stream = []
    for _ in range(5_000):
        action = rng.integers(6, size=1)
        nxt, reward, terminated, truncated, info = envs.step(action)
        final = next_observations(nxt, info)
        ours_replay.add(obs, action, reward, terminated, truncated, final)
        stream.append((obs[0], final[0], action, reward, terminated))
        obs = nxt
    envs.close()

    out["ours_per_second"] = round(rate(lambda: ours_replay.sample(32), seconds), 1)
    try:
        from gymnasium import spaces
        from stable_baselines3.common.buffers import ReplayBuffer
    except ImportError:
        return out
    rb = ReplayBuffer(CAPACITY, spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(6), DEVICE,
                      optimize_memory_usage=True, handle_timeout_termination=False)
    for o, f, a, r, d in stream:
        rb.add(o, f, a, r, d, [{}])
    out["sb3_per_second"] = round(rate(lambda: rb.sample(32), seconds), 1)
    out["speedup_vs_sb3"] = round(out["ours_per_second"] / out["sb3_per_second"], 2)
    out["note"] = "both 1-step; ours decides validity from episode flags (no invalid sample) and builds stacks at sample time"
    return out


def learner_kind(variant: dict) -> str:
    """The learner figure that bounds a variant of ours (a key of learner_updates_per_second)."""
    compiled = variant["train.compile"] == "true"
    if variant.get("train.cuda_graph"):
        return "cuda_graph_compiled" if compiled else "cuda_graph"
    if variant.get("agent.optimizer") == "adam":
        return "eager_adam"
    return ("compiled" if compiled else "eager") + ("_bf16" if variant.get("train.bf16") else "")


def summarize(result: dict, rates: dict, variants: dict) -> None:
    """Medians so far, the best of ours, and its ratios to SB3, CleanRL and the learner's bound."""
    median = {name: round(statistics.median(r), 1) for name, r in rates.items() if r}
    result["steps_per_second"] = median
    result["all_repeats"] = {name: [round(x, 1) for x in r] for name, r in rates.items()}
    ours_done = [k for k in variants if k in median]
    if not ours_done:
        return
    best = max(ours_done, key=median.get)
    result["best_ours"] = best
    if "sb3" in median:
        result["speedup_vs_sb3"] = round(median[best] / median["sb3"], 2)
        result["speedup_vs_sb3_by_variant"] = {k: round(median[k] / median["sb3"], 2) for k in ours_done}
    if "cleanrl" in median:
        result["speedup_vs_cleanrl"] = round(median[best] / median["cleanrl"], 2)
    if "learner_bound_steps_per_second" in result:
        bounds = result["learner_bound_steps_per_second"]
        kinds = {k: learner_kind(variants[k]) for k in ours_done}
        fractions = {k: round(median[k] / bounds[kind], 3) for k, kind in kinds.items() if kind in bounds}
        if best in fractions:
            result["fraction_of_learner_bound"] = fractions[best]
        result["fraction_of_learner_bound_by_variant"] = fractions


def main() -> None:
    global DEVICE, CAPACITY, NUM_ENVS, EPSILON, LEARN_START, WARM_LEARN, MEASURE, MEASURE_BASELINE
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--capacity", type=int, default=CAPACITY)
    parser.add_argument("--num-envs", type=int, default=NUM_ENVS, help="ours only: environments stepped together")
    parser.add_argument("--learn-start", type=int, default=LEARN_START)
    parser.add_argument("--warm", type=int, default=WARM_LEARN, help="agent steps of learning before timing")
    parser.add_argument("--measure", type=int, default=MEASURE, help="agent steps timed (ours)")
    parser.add_argument("--measure-baseline", type=int, default=MEASURE_BASELINE, help="agent steps timed (SB3, CleanRL)")
    parser.add_argument("--epsilon", type=float, help="hold every system's epsilon here (default: each one's schedule)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per learner, acting and sampling figure")
    parser.add_argument("--out", default="end_to_end", help="results/bench/<out>.json")
    parser.add_argument("--variants", help="comma-separated subset of this suite's variants")
    parser.add_argument("--learners", help="comma-separated subset of the learner figures (eager, compiled, ...)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: learner, acting, sampling")
    args = parser.parse_args()
    DEVICE, CAPACITY, NUM_ENVS, EPSILON = args.device, args.capacity, args.num_envs, args.epsilon
    LEARN_START, WARM_LEARN, MEASURE, MEASURE_BASELINE = args.learn_start, args.warm, args.measure, args.measure_baseline
    gpu = DEVICE != "cpu"
    if not gpu:
        torch.set_num_threads(1)
    variants = {
        "ours_eager": {"train.compile": "false"},
        "ours_compiled": {"train.compile": "true"},
        "ours_overlap": {"train.compile": "false", "train.overlap": True},
        "ours_adam": {"train.compile": "false", **ADAM},
        "ours_fast": {"train.compile": "true", "env.backend": "ale", "train.overlap": True},
        # bfloat16 autocast: oneDNN's bf16 kernels, which pay on a CPU with AMX (Intel Sapphire Rapids and
        # later) or AVX-512's bf16 instructions (AMD Zen 4); machine()["cpu_bf16"] says which the CPU has
        "ours_compiled_bf16": {"train.compile": "true", "train.bf16": True},
        "ours_ale_bf16": {"train.compile": "true", "env.backend": "ale", "train.bf16": True},
        "ours_fast_bf16": {"train.compile": "true", "env.backend": "ale", "train.overlap": True, "train.bf16": True},
    }
    # Four environments stepped together: at this ratio every loop iteration then has an update for the
    # environments' step to overlap with (with one environment, only one step in four has one).
    variants |= {f"{k}_4envs": {**variants[k], "env.num_envs": 4} for k in ("ours_fast", "ours_ale_bf16", "ours_fast_bf16")}
    if gpu:
        del variants["ours_compiled"], variants["ours_overlap"], variants["ours_adam"]
        # the whole update as one CUDA graph, on ale-py's threads or on processes that can snapshot
        # emulators (exact resume)
        variants |= {
            "ours_graph_ale": {"train.cuda_graph": True, "train.compile": "false", "env.backend": "ale", "train.overlap": True},
            "ours_graph_compiled_ale": {"train.cuda_graph": True, "train.compile": "true", "env.backend": "ale",
                                        "train.overlap": True},
            "ours_graph_async": {"train.cuda_graph": True, "train.compile": "false", "env.backend": "async",
                                 "train.overlap": True},
        }
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    epsilon = "on each system's schedule (about 1 here)" if EPSILON is None else f"held at {EPSILON} by every system"
    result = {
        "what": f"Nature DQN on Pong, 1 update of 32 per 4 agent steps, {NUM_ENVS} env(s) for ours (4 for "
                f"variants named _4envs; 1 for SB3 and CleanRL), replay {CAPACITY:,}, device {DEVICE}"
                f"{'' if gpu else ' (1 torch thread on a CPU)'}; "
                f"agent steps per second over {MEASURE:,} steps (ours; {MEASURE_BASELINE:,} for SB3 and CleanRL) after "
                f"{LEARN_START:,} random and {WARM_LEARN:,} learning steps of warm-up; "
                f"epsilon {epsilon}; "
                f"median of {args.repeats} alternated repeats",
        "machine": machine(),
        "command": " ".join(["python", "scripts/bench/end_to_end.py", *sys.argv[1:]]),
        "optimizers": {"ours_adam": "torch Adam (fused), eps 1e-8", "other ours": "the preset's centered RMSProp",
                       "sb3": "torch Adam (SB3's default)", "cleanrl": "torch Adam"},
    }
    seconds, skip = args.seconds, args.skip.split(",")
    if "learner" not in skip:
        kinds = {"eager": {}, "compiled": {"compile": True}, "eager_adam": {"adam": True},
                 "compiled_bf16": {"compile": True, "bf16": True}}
        if gpu:
            kinds |= {"reduce_overhead": {"compile": True, "reduce_overhead": True}, "cuda_graph": {"cuda_graph": True},
                      "cuda_graph_compiled": {"compile": True, "cuda_graph": True},
                      "cuda_graph_bf16": {"cuda_graph": True, "bf16": True}}
        if args.learners:
            kinds = {k: v for k, v in kinds.items() if k in args.learners.split(",")}
        updates = {k: learner(seconds=seconds, **{"compile": False, **v}) for k, v in kinds.items()}
        result["learner_updates_per_second"] = {k: round(v, 1) for k, v in updates.items()}
        result["learner_bound_steps_per_second"] = {k: round(4 * v, 1) for k, v in updates.items()}
        write(args.out, result)
    if "acting" not in skip:
        envs_counts = (1, 8) if not gpu else (16,)
        result["acting_steps_per_second"] = {f"{b}_{n}_envs": round(acting(b, n, seconds / 2), 1)
                                             for b in ("sync", "async", "ale") for n in envs_counts}
        write(args.out, result)

    rates = {name: [] for name in [*variants, "sb3", "cleanrl"]}
    systems = [(name, functools.partial(ours, variant)) for name, variant in variants.items()] + [("sb3", sb3), ("cleanrl", cleanrl)]
    for _ in range(args.repeats):  # alternate, so that machine noise hits every system alike
        for name, fn in systems:
            if (r := fn()) is not None:
                rates[name].append(r)
            summarize(result, rates, variants)
            write(args.out, result)
    if "sampling" not in skip:
        result["replay_sample_32"] = sampling(seconds / 3)
        write(args.out, result)


if __name__ == "__main__":
    main()
