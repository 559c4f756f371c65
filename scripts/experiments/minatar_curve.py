"""A MinAtar learning curve over seeds, as the MinAtar paper draws it (Young & Tian 2019: the
return of training episodes, averaged over runs), with the evaluation games beside it.

    python scripts/experiments/minatar_curve.py runs/minatar_dqn-minatar_breakout-s?/ --out results/minatar

For each run folder: `return_last100` from metrics.jsonl (the mean return of the last 100 training
episodes, logged every `log.period_steps`) and the evaluation games of eval.csv (epsilon 0.05). Writes
<out>/<game>_curve.csv (step, seed, return_last100, eval_return_mean), <out>/<game>_curve.png, and
copies each run's config.toml, summary.json and eval.csv to <out>/<run>/.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from pathlib import Path

from reproduce.config import load_run_config
from reproduce.report import eval_curve


def training_curve(run: Path) -> dict[int, float]:
    curve = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["name"] == "return_last100":
            curve[int(record["step"])] = float(record["value"])
    return curve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/minatar"))
    args = parser.parse_args()
    runs = {}
    for run in args.runs:
        config = load_run_config(run / "config.toml")
        runs[run] = (config.env.game, config.train.seed)
    games = {game for game, _ in runs.values()}
    if len(games) != 1:
        raise SystemExit(f"runs of one game only, got {sorted(games)}")
    game = games.pop()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, train, evals = [], {}, {}
    for run, (_, seed) in runs.items():
        train[seed], evals[seed] = training_curve(run), dict(eval_curve(run))  # MinAtar: a frame is a step
        for step in sorted(set(train[seed]) | set(evals[seed])):
            rows.append({"step": step, "seed": seed, "return_last100": train[seed].get(step, ""),
                         "eval_return_mean": evals[seed].get(step, "")})
        keep = args.out / run.name
        keep.mkdir(exist_ok=True)
        for name in ("config.toml", "summary.json", "eval.csv"):
            if (run / name).exists():
                shutil.copy(run / name, keep / name)
    with open(args.out / f"{game}_curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "seed", "return_last100", "eval_return_mean"])
        writer.writeheader()
        writer.writerows(rows)

    common = sorted(set.intersection(*(set(c) for c in train.values())))
    mean = [statistics.fmean(train[s][step] for s in train) for step in common]
    eval_steps = sorted(set.intersection(*(set(c) for c in evals.values())))
    eval_mean = [statistics.fmean(evals[s][step] for s in evals) for step in eval_steps]
    print(f"{game}, {len(train)} seeds: training return (last 100 episodes) at step {common[-1]:,}: "
          f"{mean[-1]:.2f} (per seed {', '.join(f'{train[s][common[-1]]:.2f}' for s in train)})")
    if eval_steps:
        print(f"evaluation (epsilon 0.05) at step {eval_steps[-1]:,}: {eval_mean[-1]:.2f} "
              f"(per seed {', '.join(f'{evals[s][eval_steps[-1]]:.2f}' for s in evals)})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in train.items():
        steps = sorted(curve)
        ax.plot(steps, [curve[s] for s in steps], color="tab:blue", alpha=0.3, lw=1)
    ax.plot(common, mean, color="tab:blue", lw=2, label=f"training episodes, last 100 (mean of {len(train)} seeds)")
    ax.plot(eval_steps, eval_mean, "o-", color="tab:orange", label="evaluation, epsilon 0.05 (mean of seeds)")
    ax.set_xlabel("frames (MinAtar: one frame per agent step)")
    ax.set_ylabel("return")
    ax.set_title(f"DQN (minatar_dqn) on {game}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / f"{game}_curve.png", dpi=120)


if __name__ == "__main__":
    main()
