"""Spatial tiling for inference: tile plans, seam-free blending and tile size from a memory budget.

A frame too large for memory is cut into a grid of *cores* that partition it. Each tile's input is
its core extended by ``overlap`` pixels of real image content on every side (clamped at the image
border) so that the network's receptive field near the core edge sees the same pixels as on the whole
frame. Outputs are blended across every interior core boundary with a raised-cosine ramp of width
``overlap`` (``overlap / 2`` on each side of the boundary); the weights of the tiles covering a pixel sum
to one, so a flat image stays flat and there is no visible seam. Even the pixel where a tile's weight
vanishes has ``overlap / 2`` pixels of context beyond it.

Cores and tile inputs start on multiples of the model's ``pad_multiple`` so that strided
convolutions (EDVR's pyramid) sample the same grid as on the whole frame.

The tile size chosen from ``--max-memory`` uses the peak tensor memory of one restoration measured
on a small probe tile (:func:`measure_peak_bytes`), which scales linearly with the tile area for
convolutional networks (and for MANA's chunked attention).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from srkit.errors import ConfigError
from srkit.utils.sizes import parse_byte_size

__all__ = [
    "AxisSegment",
    "Tile",
    "TilePlan",
    "parse_memory",
    "plan_axis",
    "plan_tiles",
    "measure_peak_bytes",
    "tile_size_for_budget",
]

def parse_memory(value: str | int | float | None) -> int | None:
    """A memory budget (``"4GB"``, ``"512M"``, a byte count) in bytes; ``None`` (no budget) stays ``None``."""
    return None if value is None else parse_byte_size(value)


@dataclass(frozen=True)
class AxisSegment:
    """One tile along an axis: input crop ``[start, stop)`` and the blend weights of its output pixels."""

    start: int
    stop: int
    # Weight of each *output* pixel of the crop (length ``(stop - start) * scale``), already normalised
    # so that the segments covering a pixel sum to one.
    weight: np.ndarray


@dataclass(frozen=True)
class Tile:
    y: AxisSegment
    x: AxisSegment


@dataclass(frozen=True)
class TilePlan:
    height: int
    width: int
    scale: int
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)


def _ramp(t: np.ndarray) -> np.ndarray:
    """Raised cosine from 0 (t <= 0) to 1 (t >= 1); ``ramp(t) + ramp(1 - t) == 1`` so weights sum to one."""
    t = np.clip(t, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def plan_axis(n: int, tile: int, overlap: int, *, scale: int = 1, align: int = 1) -> list[AxisSegment]:
    """Split an axis of ``n`` input pixels into cores of at most ``tile`` pixels (see module docstring)."""
    if n <= 0:
        raise ValueError("axis length must be positive")
    overlap = max(0, int(overlap))
    align = max(1, int(align))
    if tile >= n:
        return [AxisSegment(0, n, np.ones(n * scale, dtype=np.float32))]
    k = math.ceil(n / tile)
    # Core boundaries spread evenly, snapped to the alignment; duplicates (tiny axes) collapse.
    bounds = sorted({0, n, *(min(n, max(0, round(j * n / k / align) * align)) for j in range(1, k))})
    half = overlap / 2.0
    # Neighbouring ramps must not overlap each other: every core needs at least `overlap` pixels.
    if any(b - a < overlap for a, b in zip(bounds[:-1], bounds[1:])) and len(bounds) > 2:
        raise ConfigError(f"tile size {tile} is too small for tile overlap {overlap} (use a tile of at least "
                          f"{2 * overlap + align} or a smaller --tile-overlap)")
    centres = (np.arange(n * scale, dtype=np.float64) + 0.5) / scale  # output pixel centres, input units
    segments = []
    for j in range(len(bounds) - 1):
        a, b = bounds[j], bounds[j + 1]
        w = np.ones(n * scale, dtype=np.float64)
        if j > 0:
            w *= _ramp((centres - (a - half)) / overlap) if overlap else (centres >= a)
        if j < len(bounds) - 2:
            w *= 1.0 - (_ramp((centres - (b - half)) / overlap) if overlap else (centres >= b))
        start = max(0, (a - overlap) // align * align)
        stop = min(n, -(-(b + overlap) // align) * align)
        segments.append(AxisSegment(start, stop, w[start * scale: stop * scale]))
    # Normalise (the ramps already sum to one; this removes rounding and guards degenerate cases).
    total = np.zeros(n * scale, dtype=np.float64)
    for s in segments:
        total[s.start * scale: s.stop * scale] += s.weight
    return [AxisSegment(s.start, s.stop, (s.weight / total[s.start * scale: s.stop * scale]).astype(np.float32))
            for s in segments]


def plan_tiles(height: int, width: int, tile: int | None, overlap: int, *, scale: int = 1,
               align: int = 1) -> TilePlan:
    """The tile grid of a ``height x width`` frame (one tile covering everything when ``tile`` is None)."""
    if tile is not None and tile <= 0:
        raise ConfigError(f"tile size must be positive, got {tile}")
    if tile is not None and tile < max(8, align):
        raise ConfigError(f"tile size {tile} is too small (minimum {max(8, align)})")
    if overlap < 0:
        raise ConfigError(f"tile overlap must be >= 0, got {overlap}")
    t = tile or max(height, width)
    ys = plan_axis(height, t, overlap, scale=scale, align=align)
    xs = plan_axis(width, t, overlap, scale=scale, align=align)
    return TilePlan(height, width, scale, tuple(Tile(y, x) for y in ys for x in xs))


class _PeakTensorMemory(TorchDispatchMode):
    """Tracks the bytes of live tensor storages created inside the mode and their peak.

    Works on every device (CPU has no allocator statistics). Storages are counted once however many
    views refer to them, and released when the last tensor referring to them is garbage collected.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage data_ptr -> [nbytes, live tensor count]
        self._seen: set[int] = set()  # id() of tensors already counted

    def _release(self, tid: int, key: int) -> None:
        self._seen.discard(tid)
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._refs[key]

    def _track(self, t: torch.Tensor) -> None:
        if id(t) in self._seen:
            return  # in-place ops return their input
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self._refs.get(key)
        if entry is None:
            entry = self._refs[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        self._seen.add(id(t))
        weakref.finalize(t, self._release, id(t), key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def measure_peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensors allocated while running ``fn`` (beyond what existed before)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    mode = _PeakTensorMemory()
    with mode:
        result = fn()
    del result
    return mode.peak


def tile_size_for_budget(budget: int, bytes_per_pixel: float, fixed_bytes: int, overlap: int, *,
                         align: int = 1) -> int:
    """Largest core size whose tile (core + 2 * overlap) fits ``budget - fixed_bytes``."""
    avail = budget - fixed_bytes
    if avail <= 0 or bytes_per_pixel <= 0:
        raise ConfigError(f"--max-memory {budget / 2**20:.0f}MB is too small: the frames and cached features "
                          f"alone need about {fixed_bytes / 2**20:.0f}MB")
    side = int(math.sqrt(avail / bytes_per_pixel)) - 2 * overlap
    side = side // align * align
    minimum = max(8, align, overlap + align)
    if side < minimum:
        raise ConfigError(f"--max-memory {budget / 2**20:.0f}MB is too small for this model: a {minimum}px tile "
                          f"with overlap {overlap} needs about "
                          f"{(fixed_bytes + bytes_per_pixel * (minimum + 2 * overlap) ** 2) / 2**20:.0f}MB")
    return side
