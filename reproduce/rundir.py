"""A run is a folder: config.toml, metrics.jsonl, episodes.csv, eval.csv, summary.json, checkpoints/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from reproduce.checkpoint import has_checkpoint
from reproduce.config import Config, load_run_config
from reproduce.sinks import EPISODE_FIELDS, EVAL_FIELDS, CsvLog, MetricsLog

RUN_FILES = ("config.toml", "metrics.jsonl", "episodes.csv", "eval.csv")


class RunDirError(ValueError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunDirError("device 'cuda' was asked for, but this machine has no CUDA device; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise RunDirError(f"unknown device {name!r}; allowed: auto, cpu, cuda")
    return torch.device(name)


def check_new_run_dir(path: Path) -> None:
    """Refuses a folder that already holds a run, or that cannot be written (so that nothing in it is
    touched and nothing starts)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is not a directory")
    held = [name for name in RUN_FILES + ("checkpoints", "summary.json") if (path / name).exists()]
    if held:
        hint = (f"continue it with `reproduce resume {path}` (or `reproduce run ... --resume`)"
                if has_checkpoint(path / "checkpoints") else "choose another --run-dir")
        raise RunDirError(f"run directory {path} already holds a run ({', '.join(held)}); {hint}")
    _check_writable(path)


def _check_writable(path: Path) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"run directory {path} cannot be written ({existing} is not writable)")


# Config keys a resumed run may change: the budget, how and where it runs (device, compilation: the same
# updates, rounded differently), and logging.
RESUMABLE_CHANGES = ("train.steps", "train.device", "replay.device", "train.compile", "log.")


def check_resumable(path: Path, config: Config | None = None) -> Config:
    """The config a resume continues with: the run's own, or `config` where it differs from the run's
    only in the budget, the device, compilation or logging. Refuses, listing every difference, otherwise."""
    if not (path / "config.toml").exists():
        raise RunDirError(f"{path} holds no run to resume (no config.toml)")
    if not has_checkpoint(path / "checkpoints"):
        raise RunDirError(f"{path} holds no checkpoint to resume from; start it again with `reproduce run`")
    saved = load_run_config(path / "config.toml")
    if config is None:
        return saved
    old, new = _flatten(saved.to_dict()), _flatten(config.to_dict())
    differences = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
                   if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if differences:
        raise RunDirError(f"{path} holds a run of a different configuration; a resumed run may change only "
                          f"the budget, device, compilation and logging. Differences:\n  " + "\n  ".join(differences))
    _check_writable(path)
    return config


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


class RunDir:
    def __init__(self, path: Path):
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.metrics = MetricsLog(path / "metrics.jsonl")
        self.episodes = CsvLog(path / "episodes.csv", EPISODE_FIELDS)
        self.evals = CsvLog(path / "eval.csv", EVAL_FIELDS)
        # Read now, before training: the code this process runs is the checkout's at its start, and the
        # checkout may move on during a long run.
        self.commit = git_commit()

    @classmethod
    def reopen(cls, path: Path, positions: dict[str, int]) -> RunDir:
        """The run folder of a resumed run, its logs cut back to the checkpoint's positions so that no
        line appears twice."""
        for name, size in positions.items():
            with open(path / name, "r+b") as f:
                f.truncate(size)
        return cls(path)

    def positions(self) -> dict[str, int]:
        """Byte length of each log, after flushing: where a resumed run continues."""
        out = {}
        for log in (self.metrics, self.episodes, self.evals):
            log.file.flush()
            out[log.path.name] = log.path.stat().st_size
        return out

    @classmethod
    def create(cls, path: Path, config: Config) -> RunDir:
        check_new_run_dir(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "config.toml").write_text(config.to_toml())
        return cls(path)

    def write_summary(self, config: Config, steps: int, frames: int, eval_mean: float, eval_std: float,
                      eval_episodes: int, wall: float, params_sha256: str) -> dict:
        summary = {
            "preset": config.preset,
            "game": config.env.game,
            "protocol": config.env.protocol,
            "seed": config.train.seed,
            "steps": steps,
            "frames": frames,
            "eval_return_mean": eval_mean,
            "eval_return_std": eval_std,
            "eval_episodes": eval_episodes,
            "wall_time_seconds": round(wall, 1),
            "steps_per_second": round(steps / wall, 1) if wall > 0 else None,
            "params_sha256": params_sha256,
            "versions": package_versions(),
            "git_commit": self.commit,  # of the process that finished the run, read when it opened it
            "host": host(),  # of the process that finished the run (a resumed run may have started elsewhere)
        }
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def close(self) -> None:
        for log in (self.metrics, self.episodes, self.evals):
            log.close()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("atari-reproduce", "torch", "gymnasium", "ale-py", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def host() -> dict:
    """The machine: CPU model, cores, how it computes bfloat16, and the GPU if there is one."""
    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1] for line in lines if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count()}
    # What decides the speed of bfloat16 on a CPU: AMX tiles (Sapphire Rapids and later), or AVX-512's bf16
    # instructions, or neither (converted to float32 and back).
    info["cpu_bf16"] = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "none"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
