"""`reproduce report` and `reproduce compare`: our runs beside the published tables, with the statistics
of Agarwal et al. 2021 (rliable): per-game scores, human-normalised scores, aggregates with stratified
bootstrap confidence intervals, performance profiles, probability of improvement, learning curves.

Reads only run folders (config.toml, summary.json, eval.csv; episodes.csv for training scores), so it
works offline and on copied or exported runs. A run's score is its final evaluation; with score="best"
its best evaluation during training (the highest mean over one evaluation's games, what some papers'
tables report: IQN's, for one); or with score="training" the mean return of the training episodes that
ended in its last `window` agent steps, which is what Dopamine's baselines report (one iteration: 250K
steps). Runs are grouped into variants by
`log.label` (default: the preset); a variant's runs must share one budget and one protocol, and every
game the same number of seeds, or the report refuses rather than average incomparable runs.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reproduce import published
from reproduce.config import Config, load_run_config

REPS = 2000  # bootstrap resamples
SCORES = ("eval", "best", "training")
_EVALUATION_KIND = {"eval": "final", "best": "best", "training": None}  # as index.json's `score` names them
DOPAMINE_ITERATION_STEPS = 250_000
AGGREGATES = ("mean", "median", "iqm", "optimality_gap")


class ReportError(ValueError):
    pass


@dataclass
class Run:
    path: Path
    config: Config
    summary: dict
    curve: list[tuple[int, float]]  # (frames, mean evaluation return)
    score: float
    score_kind: str = "eval"

    @property
    def variant(self) -> str:
        return self.config.log.label or self.config.preset

    @property
    def game(self) -> str:
        return self.config.env.game


# ------------------------------------------------------------------------------------ loading runs
def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders: given directly, inside a sweep (runs/), or one level below a folder."""
    out = []
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path} does not exist")
        if (path / "config.toml").exists():
            out.append(path)
        elif (path / "sweep.json").exists():
            out += sorted(p for p in (path / "runs").iterdir() if p.is_dir())
        else:
            found = sorted(p for p in path.iterdir() if (p / "config.toml").exists())
            if not found:
                raise ReportError(f"{path} is not a run folder (no config.toml), a sweep (no sweep.json), "
                                  "nor a folder of run folders")
            out += found
    return out


def load_run(path: Path, score: str = "eval", window: int = DOPAMINE_ITERATION_STEPS) -> Run:
    if score not in SCORES:
        raise ReportError(f"score {score!r}; allowed: {', '.join(SCORES)}")
    needed = ("config.toml", "summary.json", "eval.csv") + (("episodes.csv",) if score == "training" else ())
    missing = [n for n in needed if not (path / n).exists()]
    if missing:
        raise ReportError(f"run folder {path} lacks {', '.join(missing)} (is the run finished?)")
    config = load_run_config(path / "config.toml")
    summary = json.loads((path / "summary.json").read_text())
    curve = eval_curve(path)
    if score == "training":
        value = final_training_return(path, int(summary["steps"]), window)
    elif score == "best":
        if not curve:
            raise ReportError(f"run folder {path}: eval.csv holds no evaluation")
        value = max(mean for _, mean in curve)
    else:
        value = float(summary["eval_return_mean"])
    return Run(path, config, summary, curve, value, score)


def final_training_return(path: Path, steps: int, window: int) -> float:
    """Mean return of the training episodes of a run folder's episodes.csv that ended in the run's last
    `window` agent steps (steps - window, steps]."""
    if window < 1:
        raise ReportError(f"window = {window}; must be >= 1 agent step")
    with open(path / "episodes.csv") as f:
        returns = [float(r["return"]) for r in csv.DictReader(f) if steps - window < int(r["step"]) <= steps]
    if not returns:
        raise ReportError(f"run folder {path}: no training episode ended in its last {window:,} steps; "
                          "widen --window")
    return float(np.mean(returns))


def eval_curve(path: Path) -> list[tuple[int, float]]:
    """(frames, mean return of the evaluation games at those frames) from a run folder's eval.csv."""
    by_frames = defaultdict(list)
    with open(path / "eval.csv") as f:
        for row in csv.DictReader(f):
            by_frames[int(row["frames"])].append(float(row["return"]))
    return [(frames, float(np.mean(v))) for frames, v in sorted(by_frames.items())]


# ------------------------------------------------------------------------------------ checks
def protocol_differences(run: Run, info: dict) -> list[str]:
    """Where the run's protocol differs from the table's: each difference as a short phrase."""
    out, card, c = [], run.config.protocol, run.config
    here, there = ("training" if run.score_kind == "training" else "evaluation"), info.get("returns", "evaluation")
    if here != there:
        out.append(f"table: {there} returns; here: {here} returns")
    if here == there == "evaluation":
        ours, theirs = _EVALUATION_KIND[run.score_kind], info.get("score", "final")
        if ours != theirs:
            out.append(f"table: {theirs} evaluation; here: {ours} evaluation")
    if here == there == "training" and info.get("train_epsilon") is not None \
            and not math.isclose(c.agent.epsilon_end, info["train_epsilon"]):
        out.append(f"training epsilon {c.agent.epsilon_end} (table {info['train_epsilon']})")
    if info.get("evaluation") == "human starts":
        out.append("table evaluated from human starts (not reproducible here)")
    sticky = card.repeat_action_probability > 0
    if info.get("sticky") is not None and sticky != info["sticky"]:
        out.append(f"sticky actions p={card.repeat_action_probability}" if sticky else "no sticky actions (table: sticky)")
    if info.get("evaluation") == "no-op starts" and card.noop_max == 0:
        out.append("no no-op starts (table: up to 30)")
    if run.score_kind == "eval" and info.get("eval_epsilon") is not None and not math.isclose(c.eval.epsilon, info["eval_epsilon"]):
        out.append(f"eval epsilon {c.eval.epsilon} (table {info['eval_epsilon']})")
    if info.get("eval_episode_frames") and c.eval.max_episode_frames != info["eval_episode_frames"]:
        out.append(f"eval games capped at {c.eval.max_episode_frames:,} frames (table {info['eval_episode_frames']:,})")
    if info.get("budget_frames") and c.frames != info["budget_frames"]:
        out.append(f"budget {_frames(c.frames)} frames (table {_frames(info['budget_frames'])})")
    return out


def _frames(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}K"


def group(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """variant -> game -> runs (ordered by seed), after checking that each variant is comparable."""
    variants: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        variants[run.variant][run.game].append(run)
    for name, games in variants.items():
        budgets = {r.config.train.steps for rs in games.values() for r in rs}
        if len(budgets) > 1:
            raise ReportError(f"variant {name!r} mixes runs of different budgets {sorted(budgets)} (agent steps); "
                              "report them separately or give them different log.label")
        protocols = {json.dumps(r.config.protocol.to_dict(), sort_keys=True) for rs in games.values() for r in rs}
        if len(protocols) > 1:
            raise ReportError(f"variant {name!r} mixes runs under different protocols; report them separately")
        # Same protocol card, other environments: ale-py's vector env presses no FIRE and counts no-ops apart.
        backends = {r.config.env.backend for rs in games.values() for r in rs}
        if "ale" in backends and len(backends) > 1:
            raise ReportError(f"variant {name!r} mixes runs on env.backend = ale (ale-py's vector environment: no FIRE "
                              f"at a life's start, no-ops drawn in C++) with runs on {', '.join(sorted(backends - {'ale'}))} "
                              "(gymnasium's wrappers); report them separately or give them different log.label")
        evaluations = {f"epsilon {e.epsilon}, {e.episodes} games, frame cap {e.max_episode_frames}"
                       for rs in games.values() for e in (r.config.eval for r in rs)}
        if len(evaluations) > 1:
            raise ReportError(f"variant {name!r} mixes runs evaluated differently ({'; '.join(sorted(evaluations))}); "
                              "report them separately or give them different log.label")
        seeds = {g: len(rs) for g, rs in games.items()}
        if len(set(seeds.values())) > 1:
            raise ReportError(f"variant {name!r} has different numbers of seeds per game {seeds}; "
                              "aggregates need the same seeds on every game")
        for g in games:
            games[g].sort(key=lambda r: r.config.train.seed)
            dup = [s for s in {r.config.train.seed for r in games[g]} if sum(r.config.train.seed == s for r in games[g]) > 1]
            if dup:
                raise ReportError(f"variant {name!r} has two runs of {g} with seed {dup[0]}")
    return {k: dict(v) for k, v in variants.items()}


# ------------------------------------------------------------------------------------ statistics
def aggregate_estimates(matrices: dict[str, np.ndarray], reps: int = REPS, seed: int = 0,
                        normalized: bool = True) -> dict:
    """Mean, median, IQM and (for normalised scores) optimality gap of [runs x games] score matrices with
    95% stratified bootstrap confidence intervals (rliable). The gap is the shortfall from a score of 1,
    human level: for raw scores (CartPole's return) it says nothing, so it is left out."""
    from rliable import library as rly
    from rliable import metrics

    names = AGGREGATES if normalized else AGGREGATES[:3]

    def fn(x):
        values = [metrics.aggregate_mean(x), metrics.aggregate_median(x), metrics.aggregate_iqm(x)]
        return np.array(values + [metrics.aggregate_optimality_gap(x)] if normalized else values)

    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates(matrices, fn, reps=reps)
    return {name: {agg: {"value": float(points[name][i]), "ci95": [float(intervals[name][0][i]), float(intervals[name][1][i])]}
                   for i, agg in enumerate(names)} for name in matrices}


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = 0) -> dict:
    """P(X > Y) averaged over games, with its 95% bootstrap interval (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates({"p": (x, y)}, metrics.probability_of_improvement, reps=reps)
    return {"value": float(points["p"]), "ci95": [float(intervals["p"][0][0]), float(intervals["p"][1][0])]}


def bootstrap_band(values: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile-bootstrap band of the mean over seeds, per column of [seeds x points]."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], (reps, values.shape[0]))
    means = values[idx].mean(1)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


# ------------------------------------------------------------------------------------ the report
def build(paths: list[Path], out: Path, against: str | None = None, reps: int = REPS, wandb_mode: str | None = None,
          score: str = "eval", window: int = DOPAMINE_ITERATION_STEPS) -> dict:
    if reps < 1:
        raise ReportError(f"--reps must be at least 1 (bootstrap resamples), got {reps}")
    runs = [load_run(p, score, window) for p in find_runs(paths)]
    if not runs:
        raise ReportError("no runs to report")
    variants = group(runs)
    tables = {}
    for name, games in variants.items():
        first = next(iter(games.values()))[0]
        table_name = against or first.config.paper.compare_with
        if table_name:
            tables[name] = table = published.load(table_name)
            missing = [g for g in games if g not in table.scores]
            if missing:
                raise ReportError(f"published table {table.name} has no score for {', '.join(missing)} "
                                  f"(variant {name!r}); choose another with --against")
    # One normalisation for the whole report, so that its variants can be compared: the one every table
    # used, or DQN Zoo's where they differ.
    normalisation = {t.baselines for t in tables.values()}
    baselines_name = normalisation.pop() if len(normalisation) == 1 else "dqn_zoo"
    base = published.baselines(baselines_name)
    out.mkdir(parents=True, exist_ok=True)
    rows, matrices = [], {}

    for name, games in variants.items():
        table = tables.get(name)
        for game, rs in sorted(games.items()):
            scores = np.array([r.score for r in rs])
            hns = [published.human_normalized(s, game, base) for s in scores]
            row = {"variant": name, "game": game, "seeds": len(rs), "mean": float(scores.mean()),
                   "std": float(scores.std(ddof=1)) if len(rs) > 1 else 0.0, "frames": rs[0].config.frames,
                   "protocol": rs[0].config.env.protocol, "hns": None if hns[0] is None else float(np.mean(hns))}
            if table is not None:
                ref = table.scores[game]
                row |= {"table": table.name, "published": ref, "fraction_of_published": float(scores.mean() / ref) if ref > 0 else None,
                        "published_hns": published.human_normalized(ref, game, base),
                        "protocol_differences": "; ".join(protocol_differences(rs[0], table.info))}
            rows.append(row)
        matrices[name] = np.array([[r.score for r in rs] for _, rs in sorted(games.items())]).T  # [seeds, games]

    # Aggregates are over human-normalised scores, of the games that have baselines (Atari); over raw
    # scores where none has (CartPole). A game without baselines is left out and named, never mixed in raw.
    game_lists = {name: sorted(games) for name, games in variants.items()}
    all_games = sorted({g for games in game_lists.values() for g in games})
    unnormalised = [g for g in all_games if g not in base]
    normalized = len(unnormalised) < len(all_games)
    if normalized:
        matrices = {name: np.array([[published.human_normalized(s, g, base) for s, g in zip(row, game_lists[name])
                                     if g in base] for row in m]) for name, m in matrices.items()}
        game_lists = {name: [g for g in games if g in base] for name, games in game_lists.items()}
    metric = "human-normalised score" if normalized else "score"
    published_matrices = {}
    for name, table in tables.items():
        games = game_lists[name]
        if all(g in table.runs and table.runs[g] for g in games):
            n = min(len(table.runs[g]) for g in games)
            m = np.array([[table.runs[g][i] for g in games] for i in range(n)])
            if normalized:
                m = np.array([[published.human_normalized(s, g, base) for s, g in zip(row, games)] for row in m])
            kind = ", training returns" if table.info.get("returns") == "training" else ""
            published_matrices[f"{table.name} (published runs{kind})"] = m
    aggregates = aggregate_estimates({**matrices, **published_matrices}, reps=reps, normalized=normalized)
    result = {"metric": metric, "score": {"eval": "final evaluation", "best": "best evaluation during training",
                                          "training": f"training episodes ended in the last {window:,} agent steps"}[score],
              "aggregates": aggregates, "variants": {n: sorted(games) for n, games in variants.items()}}
    if normalized:
        result["baselines"] = baselines_name
        if unnormalised:
            result["games_without_baselines"] = unnormalised

    names = list(variants)
    if len(names) > 1:
        if len({tuple(g) for g in game_lists.values()}) > 1:
            raise ReportError(f"variants cover different games {game_lists}; compare them on the same games")
        result["probability_of_improvement"] = {
            f"{a} > {b}": probability_of_improvement(matrices[a], matrices[b], reps=reps)
            for i, a in enumerate(names) for b in names[i + 1:]}

    _write_csv(out / "per_game.csv", rows)
    (out / "aggregates.json").write_text(json.dumps(result, indent=2) + "\n")
    figures = _plot_curves(variants, out) + _plot_profiles({**matrices, **published_matrices}, metric, out)
    _write_markdown(out / "report.md", rows, result, figures, variants)
    if wandb_mode:
        _log_wandb(wandb_mode, rows, result, figures, out)
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)


def _title(run: Run) -> str:
    p = run.config.protocol
    start = f"sticky p={p.repeat_action_probability}" if p.repeat_action_probability else f"no-op starts <= {p.noop_max}"
    return f"{run.game}: {p.name} protocol ({start})"


def _plot_curves(variants, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({g for v in variants.values() for g in v})
    files = []
    for game in games:
        fig, ax = plt.subplots(figsize=(6, 4))
        title = None
        for name, by_game in variants.items():
            rs = by_game.get(game)
            if not rs:
                continue
            title = _title(rs[0])
            frames = sorted(set.intersection(*(set(f for f, _ in r.curve) for r in rs)))
            if not frames:
                continue
            values = np.array([[dict(r.curve)[f] for f in frames] for r in rs])
            _draw_curve(ax, frames, values, f"{name} ({len(rs)} seeds, eval epsilon {rs[0].config.eval.epsilon})")
        ax.set_xlabel("frames" if rs and rs[0].config.protocol.frame_skip > 1 else "agent steps")
        ax.set_ylabel("evaluation return")
        ax.set_title(title or game, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"curves_{game}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def _draw_curve(ax, frames: list[int], values: np.ndarray, label: str) -> None:
    """The mean over seeds ([seeds x points]) with its 95% bootstrap band. A run evaluated only at its
    end (Atari 100k) has one point, which a line would not show: a marker with the interval as an error
    bar, and each seed's score beside it."""
    mean = values.mean(0)
    low, high = bootstrap_band(values)
    if len(frames) > 1:
        ax.plot(frames, mean, label=label)
        ax.fill_between(frames, low, high, alpha=0.25)
        return
    bar = ax.errorbar(frames, mean, yerr=[mean - low, high - mean], fmt="o", capsize=5, label=label)
    ax.plot(np.repeat(frames, len(values)), values[:, 0], "x", color=bar.lines[0].get_color(), alpha=0.6)
    ax.set_xticks(frames, [f"{f:,}" for f in frames])


def _plot_profiles(matrices: dict[str, np.ndarray], metric: str, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly

    values = np.concatenate([m.ravel() for m in matrices.values()])
    taus = np.linspace(min(0.0, values.min()), values.max() * 1.05 + 1e-9, 101)
    profiles, cis = rly.create_performance_profile(matrices, taus)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in matrices:
        ax.plot(taus, profiles[name], label=name)
        ax.fill_between(taus, cis[name][0], cis[name][1], alpha=0.2)
    ax.set_xlabel(f"{metric} (tau)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title("performance profile (95% CIs)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "profile.png", dpi=110)
    plt.close(fig)
    return ["profile.png"]


def _fmt(x, digits=1):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _write_markdown(path: Path, rows, result, figures, variants) -> None:
    lines = ["# Report", "", f"Score of a run: {result['score']}.", "", "## Per game", "",
             "| variant | game | seeds | ours (mean +/- std) | published | ours / published | HNS | protocol differences |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = f"&dagger; {r['protocol_differences']}" if r.get("protocol_differences") else ""
        lines.append(f"| {r['variant']} | {r['game']} | {r['seeds']} | {_fmt(r['mean'])} +/- {_fmt(r['std'])} | "
                     f"{_fmt(r.get('published'))} {('(' + r['table'] + ')') if r.get('table') else ''} | "
                     f"{_fmt(r.get('fraction_of_published'), 2)} | {_fmt(r['hns'], 3)} | {mark} |")
    shown = list(next(iter(result["aggregates"].values())))
    lines += ["", f"## Aggregates ({result['metric']}, 95% stratified bootstrap CIs)", ""]
    if "baselines" in result:
        lines += [f"Normalised by the `{result['baselines']}` random and human scores (results/published/baselines.csv)."
                  + (f" Left out, having none: {', '.join(result['games_without_baselines'])}."
                     if "games_without_baselines" in result else ""), ""]
    lines += ["| | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for name, agg in result["aggregates"].items():
        cells = [f"{agg[a]['value']:.3f} [{agg[a]['ci95'][0]:.3f}, {agg[a]['ci95'][1]:.3f}]" for a in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "probability_of_improvement" in result:
        lines += ["", "## Probability of improvement", ""]
        for pair, p in result["probability_of_improvement"].items():
            lines.append(f"- P({pair}) = {p['value']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]")
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "Published tables give final scores only: no published learning curves are drawn.",
              "&dagger; the run's protocol differs from the table's as stated.", ""]
    path.write_text("\n".join(lines))


def _log_wandb(mode: str, rows, result, figures, out: Path) -> None:
    import wandb

    run = wandb.init(project="atari-reproduce", job_type="report", mode=mode, dir=str(out), config={"report": str(out)})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    run.log({"per_game": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows]),
             **{f.removesuffix(".png"): wandb.Image(str(out / f)) for f in figures}})
    run.summary.update({"aggregates": result["aggregates"]})
    run.finish()
