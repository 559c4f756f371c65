"""Where a run's numbers go: metrics.jsonl, episodes.csv and eval.csv in the run folder (always), and
Weights & Biases (online, offline or disabled)."""

from __future__ import annotations

import csv
import json
import netrc
import os
import sys
import time
from pathlib import Path

EPISODE_FIELDS = ("step", "frames", "env", "return", "length")
EVAL_FIELDS = ("step", "frames", "episode", "return", "length")


class CsvLog:
    def __init__(self, path: Path, fields: tuple[str, ...]):
        new = not path.exists() or path.stat().st_size == 0
        self.path = path
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(fields)
            self.file.flush()

    def write(self, *rows) -> None:
        self.writer.writerows(rows)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class MetricsLog:
    """One JSON object per logged point: step (agent steps), frames, name, value, time (unix seconds)."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a")

    def write(self, step: int, frames: int, values: dict[str, float]) -> None:
        now = round(time.time(), 3)
        for name, value in values.items():
            self.file.write(json.dumps({"step": step, "frames": frames, "name": name, "value": value, "time": now}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbSink:
    """Logs metrics and the config to W&B. `auto` is online when credentials exist, offline otherwise;
    an online start that fails falls back to offline, so a run never waits on the network."""

    def __init__(self, mode: str, project: str, run_dir: Path, name: str, config: dict, run_id: str | None = None):
        """run_id: continue that W&B run (a resumed training run)."""
        self.run = None
        if mode == "disabled":
            return
        if mode == "auto":
            mode = "online" if has_wandb_credentials() else "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        for attempt in (mode, "offline") if mode == "online" else (mode,):
            try:
                self.run = wandb.init(project=project, dir=str(run_dir), name=name, config=config, mode=attempt,
                                      id=run_id, resume="allow" if run_id else None,
                                      settings=wandb.Settings(init_timeout=30, console="off"))
                self.mode = attempt
                break
            except Exception as e:  # noqa: BLE001 - any failure of the network side: go offline
                print(f"W&B {attempt} start failed ({e}); continuing offline", file=sys.stderr)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
