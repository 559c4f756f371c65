"""Where FrameReplay keeps its frames: one flat row per slot, plus an all-zero row at the end that stands
in for the frames before an episode's start.

`DenseFrames` is a tensor (CPU or GPU). `CompressedFrames` keeps each frame compressed on its own (lz4 or
zstandard) on the host: Atari frames are mostly flat colour, so a frame shrinks 10-30x, and a sample
decompresses only the frames its stacks use (each distinct frame once). A chunk of one frame is the
granularity that keeps sampling cheap: with bigger chunks each sampled stack would decompress a whole
chunk for the few frames it needs (see scripts/bench/replay_memory.py for the figures).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

CODECS = ("none", "lz4", "zstd")


class DenseFrames:
    def __init__(self, rows: int, frame_size: int, dtype: torch.dtype, device: torch.device):
        # Rows are only read where written, so they need no zeroing (no page is touched).
        self.data = torch.empty((rows + 1, frame_size), dtype=dtype, device=device)
        self.data[-1] = 0

    def write(self, rows: torch.Tensor, frames: torch.Tensor) -> None:
        self.data.index_copy_(0, rows, frames.to(self.data.device, self.data.dtype))

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        # index_select of whole frames: ~10x faster on a CPU than advanced indexing of a 4-d tensor,
        # which computes an offset per pixel.
        return self.data.index_select(0, rows)

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def _codec(name: str):
    if name == "lz4":
        import lz4.block

        return (lambda raw: lz4.block.compress(raw, store_size=False),
                lambda blob, size: lz4.block.decompress(blob, uncompressed_size=size))
    if name == "zstd":
        import zstandard

        compressor, decompressor = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
        return compressor.compress, lambda blob, size: decompressor.decompress(blob, max_output_size=size)
    raise ValueError(f"replay compression {name!r}; allowed: {', '.join(CODECS)}")


class CompressedFrames:
    def __init__(self, rows: int, frame_size: int, dtype: torch.dtype, codec: str):
        self.compress, self.decompress = _codec(codec)
        self.frame_size = frame_size
        self.np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        self.raw_size = frame_size * self.np_dtype.itemsize
        self.blobs: list[bytes | None] = [None] * rows + [self.compress(bytes(self.raw_size))]

    def write(self, rows: torch.Tensor, frames: torch.Tensor) -> None:
        frames = np.ascontiguousarray(frames.cpu().numpy())
        for row, frame in zip(rows.tolist(), frames):
            self.blobs[row] = self.compress(frame.tobytes())

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        unique, inverse = np.unique(rows.cpu().numpy(), return_inverse=True)
        blobs, decompress, size = self.blobs, self.decompress, self.raw_size
        # One join into a writable buffer: cheaper than copying each frame into an array.
        raw = bytearray().join([decompress(blobs[row], size) for row in unique.tolist()])
        out = np.frombuffer(raw, dtype=self.np_dtype).reshape(len(unique), self.frame_size)
        return torch.from_numpy(out).index_select(0, torch.from_numpy(inverse.reshape(-1)))

    def nbytes(self) -> int:
        """Bytes held: the compressed frames with Python's per-object overhead, and the row table."""
        return sum(sys.getsizeof(b) for b in self.blobs if b is not None) + sys.getsizeof(self.blobs)


def frame_store(rows: int, frame_size: int, dtype: torch.dtype, device: torch.device, compress: str = "none"):
    if compress == "none":
        return DenseFrames(rows, frame_size, dtype, device)
    if device.type != "cpu":
        raise ValueError(f"replay compression {compress!r} keeps frames on the host; use replay.device = 'cpu' "
                         f"(got {device})")
    return CompressedFrames(rows, frame_size, dtype, compress)
