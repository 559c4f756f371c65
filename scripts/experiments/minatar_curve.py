"""A MinAtar learning curve over seeds, as the MinAtar paper draws it (Young & Tian 2019: the
return of training episodes, averaged over runs), with the evaluation games beside it.

    python scripts/experiments/minatar_curve.py runs/minatar_dqn-minatar_breakout-s?/ --out results/minatar \
        [--at 500000,1000000]

For each run folder: `return_last100` from metrics.jsonl (the mean return of the last 100 training
episodes, logged every `log.period_steps`) and the evaluation games of eval.csv (epsilon 0.05). Writes
<out>/<game>_curve.csv (step, seed, return_last100, eval_return_mean), <out>/<game>_curve.png,
<out>/<game>_progress.json (how far each run got, and how fast by its own clock), and copies
each run's config.toml, summary.json and eval.csv to <out>/<run>/. With --at, also prints the README's
table: the mean over seeds at those steps (and each seed's value at the last of them).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from pathlib import Path

from reproduce.checkpoint import Checkpointer
from reproduce.config import load_run_config
from reproduce.report import eval_curve


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def training_curve(records: list[dict]) -> dict[int, float]:
    return {int(r["step"]): float(r["value"]) for r in records if r["name"] == "return_last100"}


def progress(run: Path, records: list[dict], budget: int) -> dict:
    """How far a run got, and how fast by its own clock: the wall time of all its processes, summed across
    resumes, as its summary (a finished run) or its newest checkpoint records it. Evaluations, checkpoints
    and pauses within a process count; the time between a process's end and the next one's resume does
    not (the times of metrics.jsonl would count it)."""
    if (run / "summary.json").exists():
        summary = json.loads((run / "summary.json").read_text())
        step, seconds = summary["steps"], summary["wall_time_seconds"]
    else:
        state = Checkpointer(run / "checkpoints").load_latest()  # the checkpoint alone, not its frames
        step, seconds = state["step"], state["loop"]["elapsed"]
    return {"last_logged_step": records[-1]["step"], "budget_steps": budget, "clock_step": step,
            "running_hours": round(seconds / 3600, 2), "steps_per_second": round(step / seconds, 1)}


def table_at(train: dict[int, dict[int, float]], evals: dict[int, dict[int, float]], steps: list[int]) -> str:
    """A markdown table of the seeds' mean training return (last 100 episodes) and mean evaluation return
    at each of `steps`, each seed's value after the mean in the last column. Every seed must have logged
    every step asked for (training returns are logged every log.period_steps, evaluations every
    eval.period_steps)."""
    for name, curves in (("training return", train), ("evaluation", evals)):
        for seed, curve in curves.items():
            missing = [s for s in steps if s not in curve]
            if missing:
                raise SystemExit(f"--at {missing[0]:,}: seed {seed} has no {name} there; it has {_logged(curve)}")

    def row(label: str, curves: dict[int, dict[int, float]]) -> str:
        cells = [f"{statistics.fmean(c[s] for c in curves.values()):.2f}" for s in steps]
        cells[-1] += " (" + ", ".join(f"{curves[seed][steps[-1]]:.2f}" for seed in sorted(curves)) + ")"
        return f"| {label} | " + " | ".join(cells) + " |"

    return "\n".join([
        "| agent steps (= frames) | " + " | ".join(f"{s:,}" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
        row(f"training, last 100 episodes (mean of {len(train)} seeds)", train),
        row("evaluation, epsilon 0.05, 10 games per seed", evals),
    ])


def _logged(curve: dict[int, float]) -> str:
    steps = sorted(curve)
    if len(steps) < 2:
        return f"only step {steps[0]:,}" if steps else "none yet"
    return f"{steps[0]:,} to {steps[-1]:,} every {steps[1] - steps[0]:,} steps"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/minatar"))
    parser.add_argument("--at", type=lambda text: [int(s) for s in text.split(",")], default=None,
                        help="comma-separated steps: print the README's table at them")
    args = parser.parse_args()
    configs = {run: load_run_config(run / "config.toml") for run in args.runs}
    runs = {run: (config.env.game, config.train.seed) for run, config in configs.items()}
    seeds = [seed for _, seed in runs.values()]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"one run per seed, got seeds {sorted(seeds)}")
    games = {game for game, _ in runs.values()}
    if len(games) != 1:
        raise SystemExit(f"runs of one game only, got {sorted(games)}")
    game = games.pop()
    budget = max(config.train.steps for config in configs.values())
    records = {run: metrics(run) for run in runs}
    train = {seed: training_curve(records[run]) for run, (_, seed) in runs.items()}
    evals = {seed: dict(eval_curve(run)) for run, (_, seed) in runs.items()}  # MinAtar: a frame is a step
    table = table_at(train, evals, args.at) if args.at else None  # before anything is written

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for run, (_, seed) in runs.items():
        for step in sorted(set(train[seed]) | set(evals[seed])):
            rows.append({"step": step, "seed": seed, "return_last100": train[seed].get(step, ""),
                         "eval_return_mean": evals[seed].get(step, "")})
        keep = args.out / run.name
        keep.mkdir(exist_ok=True)
        for name in ("config.toml", "summary.json", "eval.csv"):
            if (run / name).exists():
                shutil.copy(run / name, keep / name)
    (args.out / f"{game}_progress.json").write_text(json.dumps(
        {f"seed {seed}": progress(run, records[run], configs[run].train.steps) for run, (_, seed) in runs.items()}, indent=2) + "\n")
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
    if table:
        print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in train.items():
        steps = sorted(curve)
        ax.plot(steps, [curve[s] for s in steps], color="tab:blue", alpha=0.3, lw=1)
    ax.plot(common, mean, color="tab:blue", lw=2, label=f"training episodes, last 100 (mean of {len(train)} seeds)")
    ax.plot(eval_steps, eval_mean, "o-", color="tab:orange", label="evaluation, epsilon 0.05 (mean of seeds)")
    ax.set_xlim(0, budget)  # the whole budget, so that the figure shows how much of it the runs cover
    ax.set_xlabel("frames (MinAtar: one frame per agent step)")
    ax.set_ylabel("return")
    ax.set_title(f"DQN (minatar_dqn) on {game}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / f"{game}_curve.png", dpi=120)


if __name__ == "__main__":
    main()
