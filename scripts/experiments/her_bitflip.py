"""Figure 1 of Andrychowicz et al. 2017 on a CPU: success rate against the number of bits, DQN with and
without hindsight experience replay.

    python scripts/experiments/her_bitflip.py --bits 10 15 20 25 30 40 50 --seeds 0 1 2 --epochs 6
    python scripts/experiments/her_bitflip.py --bits 40 50 --seeds 0 1 2 --epochs 24 --presets her_bitflip \
        --runs runs/her_long --out results/her_bitflip_24_epochs

Each run is the her_bitflip or dqn_bitflip preset on bitflip<n>, with the paper's cycle (16 episodes,
40 updates) scaled to n, for `epochs` epochs of 50 cycles (800 n agent steps each). The success rate is
that of the final evaluation (100 greedy episodes; an episode succeeds when its return is above -n),
and the table gives each run's wall time beside it (from its summary; runs share the machine).
Runs go to runs/her_bitflip/ (not committed; a run with a summary there is not run again), two at a time
with one torch thread each; the table goes to <out>/her_bitflip.csv and the figure to
<out>/her_bitflip.png (default: results/).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def overrides(bits: int, epochs: int) -> dict:
    epoch = 800 * bits  # 50 cycles of 16 episodes of n steps
    return {"env.game": f"bitflip{bits}", "agent.update_period_steps": max(1, round(0.4 * bits)),
            "agent.learning_starts_steps": 16 * bits + 16, "train.steps": epochs * epoch,
            "eval.period_steps": epoch, "log.period_steps": epoch}


def run_one(preset: str, bits: int, seed: int, epochs: int, out: Path) -> Path:
    run_dir = out / f"{preset}-{bits}-s{seed}"
    if (run_dir / "summary.json").exists():
        return run_dir
    cmd = [sys.executable, "-m", "reproduce.cli", "run", preset, "--seed", str(seed), "--run-dir", str(run_dir),
           "--wandb", "disabled", "--no-progress"]
    for key, value in overrides(bits, epochs).items():
        cmd += ["--set", f"{key}={value}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return run_dir


def final_success_rate(run_dir: Path, bits: int) -> float:
    with open(run_dir / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["step"]) for r in rows)
    return float(np.mean([float(r["return"]) > -bits for r in rows if int(r["step"]) == last]))


def wall_time_seconds(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["wall_time_seconds"]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for her, label, color in ((True, "DQN + HER", "C0"), (False, "DQN", "C3")):
        mine = [r for r in rows if r["her"] == her]
        if not mine:
            continue
        bits = sorted({r["bits"] for r in mine})
        rates = [[r["success_rate"] for r in mine if r["bits"] == n] for n in bits]
        ax.plot(bits, [np.mean(x) for x in rates], "-o", color=color, label=label)
        for n, x in zip(bits, rates):
            ax.scatter([n] * len(x), x, color=color, alpha=0.35, s=12)
    ax.set(xlabel="number of bits n", ylabel="success rate (final evaluation)", ylim=(-0.05, 1.05),
           title="Bit flipping (Andrychowicz et al. 2017, fig. 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[10, 15, 20, 25, 30])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["her_bitflip", "dqn_bitflip"], choices=["her_bitflip", "dqn_bitflip"])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "her_bitflip")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()

    jobs = [(preset, n, seed) for n in sorted(args.bits, reverse=True) for seed in args.seeds
            for preset in args.presets]
    with ThreadPoolExecutor(args.parallel) as pool:
        dirs = list(pool.map(lambda job: run_one(*job, args.epochs, args.runs), jobs))
    rows = [{"bits": n, "her": preset == "her_bitflip", "seed": seed, "success_rate": final_success_rate(d, n),
             "wall_time_seconds": wall_time_seconds(d)}
            for (preset, n, seed), d in zip(jobs, dirs)]
    rows.sort(key=lambda r: (r["bits"], not r["her"], r["seed"]))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "her_bitflip.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["bits", "her", "seed", "success_rate", "wall_time_seconds"])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "her_bitflip.png")
    for n in sorted({r["bits"] for r in rows}):
        her = [r["success_rate"] for r in rows if r["bits"] == n and r["her"]]
        dqn = [r["success_rate"] for r in rows if r["bits"] == n and not r["her"]]
        print(f"n = {n:3d}: DQN + HER {np.mean(her) if her else float('nan'):.2f}   DQN {np.mean(dqn) if dqn else float('nan'):.2f}")


if __name__ == "__main__":
    main()
