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

    p = sub.add_parser("eval", help="evaluate a run's latest saved network under the protocol's evaluation settings")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, help="whole games (default: the run's eval.episodes)")
    p.add_argument("--video", action="store_true", help="also record the first game as MP4 in RUN_DIR/videos/")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (cfg.ConfigError, ValueError, FileNotFoundError, MemoryError) as e:
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
    from reproduce.loop import train
    from reproduce.rundir import check_new_run_dir, resolve_device

    config = _resolve(args)
    resolve_device(config.train.device)
    run_dir = args.run_dir or Path("runs") / (
        f"{config.preset}-{config.env.game}-s{config.train.seed}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    check_new_run_dir(run_dir)
    print(f"{config.preset} on {config.env.game} ({config.env.protocol} protocol), seed {config.train.seed}: "
          f"{config.train.steps:,} agent steps = {config.frames:,} frames -> {run_dir}")
    summary = train(config, run_dir, progress=not args.no_progress)
    print(json.dumps({k: summary[k] for k in ("game", "steps", "eval_return_mean", "eval_return_std",
                                              "steps_per_second", "params_sha256")}, indent=2))
    return 0


def cmd_eval(args) -> int:
    from reproduce.playback import evaluate_run

    result = evaluate_run(args.run_dir, args.episodes, args.video, args.device)
    print(json.dumps(result, indent=2))
    return 0


COMMANDS = {"list": cmd_list, "show": cmd_show, "run": cmd_run, "eval": cmd_eval}

if __name__ == "__main__":
    sys.exit(main())
