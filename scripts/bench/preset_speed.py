"""Training speed of any preset as it is run (its own network, replay, update period and batch), and the
hours its whole budget takes at that speed: the figure behind the GPU-hours of the recipes table for
presets whose ratio is not Nature DQN's (`der` updates at every agent step). Evaluation is not counted.

    python scripts/bench/preset_speed.py der --game freeway                       # this CPU, eager
    python scripts/bench/preset_speed.py der --game freeway --threads 1,2 \
        --out der_cpu_threads                                                      # one run on 1 and on 2 cores
    python scripts/bench/preset_speed.py der --game freeway --threads 2 \
        --variants eager,bf16 --out der_cpu_bf16                                   # float32 and bf16 on 2 cores
    python scripts/bench/preset_speed.py minatar_dqn --game minatar_breakout --learn-start 5000 \
        --warm 10000 --measure 4000 --repeats 1 --variants eager,eager_denormal \
        --out minatar_cpu/COMMIT_rN                                                # flushed or not (README)
    python scripts/bench/preset_speed.py der --game freeway --device cuda \\
        --variants eager,cuda_graph --out der_gpu                                 # -> results/bench/der_gpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import loop_rate, machine, write  # noqa: E402

from reproduce import config as cfg  # noqa: E402

VARIANTS = {
    "eager": {"train.compile": "false"},
    "compiled": {"train.compile": "true"},
    "cuda_graph": {"train.compile": "false", "train.cuda_graph": True},
    "bf16": {"train.compile": "false", "train.bf16": True},  # pays on a GPU, or a CPU with AMX or AVX-512 bf16
    "compiled_bf16": {"train.compile": "true", "train.bf16": True},
    # Denormals computed as the CPU does by default; toggled per run on the calling thread only, so
    # compare with --threads 1.
    "eager_denormal": {"train.compile": "false", "train.flush_denormal": False},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("preset")
    parser.add_argument("--game", default="pong")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default="eager", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--learn-start", type=int, default=1_600)
    parser.add_argument("--warm", type=int, default=400, help="agent steps of learning before timing")
    parser.add_argument("--measure", type=int, default=2_000, help="agent steps timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1", help="torch threads on a CPU, comma-separated to compare")
    parser.add_argument("--out", default=None, help="results/bench/<out>.json (default: <preset>_<device>)")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [None]
    runs = {(n if len(threads) == 1 else f"{n}, {t} threads"): (n, t) for n in names for t in threads}
    budget = cfg.resolve(args.preset, {"env.game": args.game}).train.steps
    overrides = {"env.game": args.game, "train.device": args.device}
    rates = {key: [] for key in runs}
    for _ in range(args.repeats):  # alternated, so that machine noise hits every variant alike
        for key, (n, t) in runs.items():
            if t is not None:
                torch.set_num_threads(t)
            rates[key].append(loop_rate(args.preset, overrides | VARIANTS[n], args.learn_start, args.warm, args.measure))
    median = {n: round(statistics.median(r), 1) for n, r in rates.items()}
    write(args.out or f"{args.preset}_{args.device}", {
        "what": f"{args.preset} on {args.game}, its own settings, device {args.device}"
                f"{f' (torch threads: {args.threads})' if args.device == 'cpu' else ''}: agent steps per second over {args.measure:,} "
                f"steps after {args.learn_start:,} steps before learning and {args.warm:,} of learning; median of "
                f"{args.repeats} alternated repeats; hours_per_run = the preset's {budget:,} steps at that speed, "
                "evaluation not counted",
        "machine": machine(),
        "command": " ".join(["python", "scripts/bench/preset_speed.py", *sys.argv[1:]]),
        "steps_per_second": median,
        "all_repeats": {n: [round(x, 1) for x in r] for n, r in rates.items()},
        "hours_per_run": {n: round(budget / r / 3600, 2) for n, r in median.items()},
    })


if __name__ == "__main__":
    main()
