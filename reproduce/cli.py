"""The `reproduce` command."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from reproduce import config as cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reproduce", description="Atari reproductions of the DQN family.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="presets with their paper and protocol")

    p = sub.add_parser("show", help="the fully resolved config of a preset, as TOML, protocol card included")
    p.add_argument("preset")
    _add_overrides(p)

    p = sub.add_parser("run", help="train a preset on a game")
    p.add_argument("preset")
    _add_overrides(p)
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/PRESET-GAME-sSEED-TIME)")
    p.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"], help="Weights & Biases mode")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")

    p = sub.add_parser("resume", help="continue a run from its newest usable checkpoint")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, help="a new training budget in agent steps")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compile", choices=["auto", "true", "false", "reduce-overhead"],
                   help="train.compile from here on (the same updates, rounded differently)")
    p.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"])
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("sweep", help="one job per (game, seed[, grid point]) through submitit, locally or on Slurm")
    p.add_argument("preset", help="a preset, or a sweep file (.toml with preset, games, seeds, [set], [grid])")
    p.add_argument("--games", help="comma-separated games, e.g. Pong,Breakout")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--steps", type=int, help="agent steps per job")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--sweep-dir", type=Path, help="default: sweeps/PRESET-TIME")
    p.add_argument("--wait", action="store_true", help="block until every job has finished")
    p.add_argument("--parallel", type=int, default=0, help="local: jobs at once (default: the number of cores)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", type=int, default=60 * 24, help="Slurm time limit per job, minutes")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per job")
    p.add_argument("--cpus", type=int, default=4, help="CPUs per job")
    p.add_argument("--mem", type=int, default=32, help="memory per job, GB")
    p.add_argument("--signal-lead", type=int, default=120,
                   help="seconds before the time limit at which Slurm sends USR1 (the job checkpoints and requeues)")

    p = sub.add_parser("status", help="state, steps done, latest score and ETA of each job of a sweep")
    p.add_argument("sweep_dir", type=Path)

    for name, text in (("report", "our runs beside the published table: per game, HNS, aggregates with CIs, curves"),
                       ("compare", "variants side by side on the same games and seeds, with probability of improvement")):
        p = sub.add_parser(name, help=text)
        p.add_argument("runs", nargs="+", type=Path, help="run folders, sweep folders, or folders of run folders")
        p.add_argument("--against", help="published table (results/published/index.json); default: each preset's")
        p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report/)")
        p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
        p.add_argument("--score", choices=["eval", "best", "training"], default="eval",
                       help="a run's score: its final evaluation (default), its best evaluation during training "
                            "(as some papers' tables report), or the mean return of its training episodes over "
                            "the last --window steps, as Dopamine's baselines report")
        p.add_argument("--window", type=int, default=250_000,
                       help="agent steps of training episodes for --score training (default 250,000: one Dopamine iteration)")
        p.add_argument("--wandb", choices=["online", "offline"], help="also log the tables and figures to W&B")

    p = sub.add_parser("eval", help="evaluate a run's latest saved network under the protocol's evaluation settings")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, help="whole games (default: the run's eval.episodes)")
    p.add_argument("--video", action="store_true", help="also record the first game as MP4 in RUN_DIR/videos/")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    args = parser.parse_args(argv)
    from reproduce.checkpoint import CheckpointError
    from reproduce.loop import Preempted

    try:
        return COMMANDS[args.command](args)
    except Preempted as e:
        print(f"{e}; continue with `reproduce resume`", file=sys.stderr)
        return e.exit_code
    except (cfg.ConfigError, ValueError, FileNotFoundError, MemoryError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--game", help="Atari game (Pong, pong, space_invaders, ...) or cartpole")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, help="training budget in agent steps (frames = steps * frame skip)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config value, e.g. --set agent.prioritized=false (repeatable)")


def _resolve(args) -> cfg.Config:
    overrides = dict(cfg.parse_override(text) for text in args.overrides)
    for key, value in (("env.game", args.game), ("train.seed", args.seed), ("train.steps", args.steps),
                       ("train.device", args.device), ("log.wandb", getattr(args, "wandb", None))):
        if value is not None:
            overrides[key] = value
    return cfg.resolve(args.preset, overrides)


def cmd_list(args) -> int:
    rows = []
    for name in cfg.preset_names():
        c = cfg.from_dict(cfg.load_preset(name), name)
        paper = f"{c.paper.title} ({c.paper.year})" if c.paper.year else c.paper.title
        rows.append((name, c.env.protocol, paper))
    width = max(len(r[0]) for r in rows)
    for name, protocol, paper in rows:
        print(f"{name:<{width}}  {protocol:<8}  {paper}")
    return 0


def cmd_show(args) -> int:
    config = _resolve(args)
    print(f"# preset {config.preset}: {config.train.steps:,} agent steps = {config.frames:,} frames")
    print(config.to_toml())
    return 0


def cmd_run(args) -> int:
    from reproduce.rundir import check_new_run_dir, check_resumable, resolve_device

    config = _resolve(args)
    resolve_device(config.train.device)
    if args.resume:
        if args.run_dir is None:
            raise cfg.ConfigError("--resume needs the --run-dir of the run to continue")
        return _continue(args.run_dir, check_resumable(args.run_dir, config), args.no_progress)
    run_dir = args.run_dir or Path("runs") / (
        f"{config.preset}-{config.env.game}-s{config.train.seed}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    check_new_run_dir(run_dir)
    print(f"{config.preset} on {config.env.game} ({config.env.protocol} protocol), seed {config.train.seed}: "
          f"{config.train.steps:,} agent steps = {config.frames:,} frames -> {run_dir}")
    return _report(_train(config, run_dir, args.no_progress, resume=False), config)


def cmd_resume(args) -> int:
    from reproduce.rundir import check_resumable, resolve_device

    config = check_resumable(args.run_dir)
    for key, value in (("train.steps", args.steps), ("train.device", args.device), ("train.compile", args.compile),
                       ("log.wandb", args.wandb)):
        if value is not None:
            cfg.set_value(config, key, value)
    config = cfg.finalize(config)
    resolve_device(config.train.device)
    return _continue(args.run_dir, config, args.no_progress)


def _continue(run_dir: Path, config: cfg.Config, no_progress: bool) -> int:
    from reproduce.checkpoint import atomic_write

    atomic_write(run_dir / "config.toml", lambda f: f.write(config.to_toml().encode()))  # a new budget
    return _report(_train(config, run_dir, no_progress, resume=True), config)


def _train(config, run_dir, no_progress, resume):
    from reproduce.loop import train

    return train(config, run_dir, progress=not no_progress, resume=resume)


def _report(summary: dict, config: cfg.Config) -> int:
    from reproduce import published

    print(json.dumps({k: summary[k] for k in ("game", "steps", "eval_return_mean", "eval_return_std",
                                              "steps_per_second", "params_sha256")}, indent=2))
    table = config.paper.compare_with
    if table and summary["steps"] >= config.train.steps and summary["eval_episodes"] > 0:
        ref = published.load(table)
        score = ref.scores.get(config.env.game)
        if score is not None:
            # The report's score of the same kind as the table's: training returns, or the best evaluation.
            kind = "training" if ref.info.get("returns") == "training" else ref.info.get("score", "final")
            what = {"training": ", training returns", "best": ", each game's best agent during training"}.get(kind, "")
            option = f" --score {kind}" if kind in ("training", "best") else ""
            print(f"your score {summary['eval_return_mean']:.1f} (evaluation) beside the published {score:g} ({table}"
                  f"{what}); for a comparison over seeds with CIs: reproduce report <run folders> --against {table}{option}")
    return 0


def cmd_sweep(args) -> int:
    from reproduce import sweep

    path = Path(args.preset)
    if path.suffix == ".toml":
        if not path.exists():
            raise FileNotFoundError(f"no sweep file {path}")
        spec = sweep.SweepSpec.from_file(path)
    else:
        if not args.games or not args.seeds:
            raise cfg.ConfigError("a sweep of a preset needs --games and --seeds (or give a sweep file)")
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise cfg.ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
        spec = sweep.SweepSpec(args.preset, args.games.split(","), seeds)
    if args.steps is not None:
        spec.steps = args.steps
    spec.overrides |= dict(cfg.parse_override(text) for text in args.overrides)
    sweep_dir = args.sweep_dir or Path("sweeps") / f"{spec.preset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if (sweep_dir / "sweep.json").exists():
        raise cfg.ConfigError(f"{sweep_dir} already holds a sweep; choose another --sweep-dir")
    slurm = sweep.SlurmOptions(args.partition, args.time, args.gpus, args.cpus, args.mem, args.signal_lead)
    jobs = sweep.submit(spec, sweep_dir, args.launcher, slurm, args.parallel)
    print(f"submitted {len(jobs)} jobs ({args.launcher}) -> {sweep_dir}; follow with `reproduce status {sweep_dir}`")
    if args.wait:
        print(sweep.format_status(sweep.wait(sweep_dir)))
    return 0


def cmd_status(args) -> int:
    from reproduce import sweep

    print(sweep.format_status(sweep.status(args.sweep_dir)))
    return 0


def cmd_report(args) -> int:
    from reproduce import report

    result = report.build(args.runs, args.out, args.against, args.reps, args.wandb, args.score, args.window)
    if args.command == "compare" and len(result["variants"]) < 2:
        raise report.ReportError("compare needs runs of at least two variants (presets or log.label)")
    print(f"report written to {args.out}/report.md")
    return 0


def cmd_eval(args) -> int:
    from reproduce.playback import evaluate_run

    result = evaluate_run(args.run_dir, args.episodes, args.video, args.device)
    print(json.dumps(result, indent=2))
    return 0


COMMANDS = {"list": cmd_list, "show": cmd_show, "run": cmd_run, "resume": cmd_resume, "sweep": cmd_sweep,
            "status": cmd_status, "eval": cmd_eval, "report": cmd_report, "compare": cmd_report}

if __name__ == "__main__":
    sys.exit(main())
