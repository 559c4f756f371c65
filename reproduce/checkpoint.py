"""Checkpoints: written atomically (temporary file, fsync, rename), the last K kept."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def path_for(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:012d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    return sorted(directory.glob("ckpt-*.pt"))


def save(directory: Path, step: int, state: dict, keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = path_for(directory, step)
    tmp = final.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save({"step": step, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return final


def load_latest(directory: Path, map_location="cpu") -> dict:
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    return torch.load(found[-1], map_location=map_location, weights_only=False)
