"""Checkpoints that survive: atomic, checksummed, the last K kept, the replay saved incrementally.

Layout of a run's checkpoints/:
    ckpt-000001000000.pt         everything but the replay's frames (networks, optimizer, counters,
    ckpt-000001000000.pt.sha256  replay metadata and priorities, random streams, environment states,
                                 log positions, W&B id) and the list of frame chunks it needs
    replay/chunk-000001000000.pt the frames added since the previous checkpoint (+ .sha256)

Each file is written to a temporary name, fsynced and renamed; its SHA-256 is written (the same way)
after it, so a file without a matching checksum is incomplete and is never used. Loading takes the
newest checkpoint whose file and chunks all verify, warning about any newer one it skips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from agents.replay import FrameReplay

MARGIN_BYTES = 64 * 2**20


class CheckpointError(RuntimeError):
    pass


class _HashingWriter:
    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_verified(path: Path, obj) -> str:
    """torch.save(obj) to `path` atomically, then its checksum beside it; returns the checksum."""
    digest = {}

    def write(f):
        writer = _HashingWriter(f)
        torch.save(obj, writer)
        digest["sha"] = writer.sha.hexdigest()

    atomic_write(path, write)
    atomic_write(path.with_name(path.name + ".sha256"), lambda f: f.write(digest["sha"].encode()))
    return digest["sha"]


def read_verified(path: Path, expected: str | None = None):
    """Loads a file written by write_verified; raises CheckpointError if it is missing, incomplete or corrupt."""
    side = path.with_name(path.name + ".sha256")
    if not path.exists() or not side.exists():
        raise CheckpointError(f"{path.name} is incomplete (no file or no checksum)")
    recorded = side.read_text().strip()
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            sha.update(block)
    if sha.hexdigest() != recorded or (expected is not None and recorded != expected):
        raise CheckpointError(f"{path.name} does not match its checksum (corrupt or truncated)")
    return torch.load(path, map_location="cpu", weights_only=False)


def _unlink_verified(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def checkpoint_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("ckpt-*.pt"))


def has_checkpoint(directory: Path) -> bool:
    return bool(checkpoint_paths(directory))


class Checkpointer:
    """Saves and loads a run's checkpoints; remembers which frames the last one holds."""

    def __init__(self, directory: Path, keep: int = 2):
        self.directory, self.keep = directory, keep
        self.chunks: list[dict] = []  # the frame chunks the last checkpoint needs, oldest first
        self.saved_heads: np.ndarray | None = None  # newest frame per env at the last checkpoint

    def save(self, step: int, state: dict, replay: FrameReplay) -> Path:
        """Writes the frames added since the last checkpoint, then the checkpoint itself, then prunes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "replay").mkdir(exist_ok=True)
        since = self.saved_heads if self.saved_heads is not None else np.full(replay.num_envs, -1)
        ranges, frames = replay.frames_since(since)
        meta = replay.state_dict()
        needed = frames.numel() * frames.element_size() + sum(
            v.numel() * v.element_size() for v in meta.values() if isinstance(v, torch.Tensor))
        free = shutil.disk_usage(self.directory).free
        if free < needed + MARGIN_BYTES:
            raise CheckpointError(f"not enough disk for a checkpoint at step {step}: needs about "
                                  f"{(needed + MARGIN_BYTES) / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free")
        name = f"chunk-{step:012d}.pt"
        sha = write_verified(self.directory / "replay" / name, {"ranges": ranges, "frames": frames})
        oldest = replay.oldest_logical()
        chunks = [c for c in self.chunks if c["name"] != name and (np.asarray(c["ranges"])[:, 1] >= oldest).any()]
        chunks.append({"name": name, "sha256": sha, "ranges": ranges})
        path = self.directory / f"ckpt-{step:012d}.pt"
        write_verified(path, {**state, "step": step, "replay": meta, "frame_chunks": chunks,
                              "saved_heads": replay.head()})
        self.chunks, self.saved_heads = chunks, replay.head()
        self._prune()
        return path

    def _prune(self) -> None:
        kept = checkpoint_paths(self.directory)[-self.keep:]
        for old in checkpoint_paths(self.directory)[: -self.keep]:
            _unlink_verified(old)
        referenced = set()
        for path in kept:
            try:
                state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)  # tensors stay on disk
                referenced |= {c["name"] for c in state["frame_chunks"]}
            except Exception:  # noqa: BLE001 - an unreadable checkpoint protects nothing
                continue
        for chunk in (self.directory / "replay").glob("chunk-*.pt"):
            if chunk.name not in referenced:
                _unlink_verified(chunk)

    def load_latest(self, replay: FrameReplay | None = None) -> dict:
        """The newest checkpoint that verifies, with its frames written into `replay` (without a replay,
        only the checkpoint file itself is read: enough to evaluate its network)."""
        problems = []
        for path in reversed(checkpoint_paths(self.directory)):
            try:
                state = read_verified(path)
                chunks = [read_verified(self.directory / "replay" / c["name"], c["sha256"])
                          for c in (state["frame_chunks"] if replay is not None else [])]
            except CheckpointError as e:
                problems.append(str(e))
                print(f"warning: skipping checkpoint {path.name}: {e}", file=sys.stderr)
                continue
            if replay is not None:
                replay.load_state_dict(state["replay"])
                for chunk in chunks:
                    replay.write_frames(chunk["ranges"], chunk["frames"])
            self.chunks, self.saved_heads = state["frame_chunks"], np.asarray(state["saved_heads"])
            return state
        raise CheckpointError(f"no usable checkpoint in {self.directory}" + (f": {'; '.join(problems)}" if problems else ""))
